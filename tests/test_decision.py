import numpy as np
import pytest

from edge.core.decision import DecisionConfig, Hysteresis, Levels, StreamDecider, decide_file
from edge.core.labels import (
    AC_ON,
    BOTH_OFF,
    FRIDGE_ON,
    SEED,
    Appliances,
    LabelError,
    parse_sample_name,
    project_appliances,
    read_sample_name,
    sample_file_name,
)

THREE = Appliances.parse("ac,fridge,dehumidifier")


def seed_state(ac: bool, fridge: bool) -> str:
    return SEED.status({"ac": ac, "fridge": fridge})


def test_priority_rule():
    assert seed_state(True, True) == AC_ON
    assert seed_state(True, False) == AC_ON
    assert seed_state(False, True) == FRIDGE_ON
    assert seed_state(False, False) == BOTH_OFF
    assert SEED.statuses == (AC_ON, FRIDGE_ON, BOTH_OFF)


def test_a_priority_list_orders_any_appliances():
    assert THREE.statuses == ("ac-on", "fridge-on", "dehumidifier-on", "all-off")
    first = Appliances.parse("ac,fridge,dehumidifier", "dehumidifier")  # named ones first, then the others
    assert first.priority == ("dehumidifier", "ac", "fridge")
    assert first.status({"ac": True, "fridge": True, "dehumidifier": True}) == "dehumidifier-on"
    assert first.status({"ac": True, "fridge": False, "dehumidifier": False}) == "ac-on"
    assert Appliances(("heat_pump",)).statuses == ("heat_pump-on", "heat_pump-off")
    # an unknown flag decides nothing unless a running appliance comes before it
    assert THREE.status({"ac": False, "fridge": True}) == "fridge-on"
    assert THREE.status({"ac": False, "fridge": False}) is None
    with pytest.raises(LabelError, match="washer is not one"):
        Appliances.parse("ac,fridge", "washer")
    for reserved in ("day", "off", "all", "daypart", "clip", "alarms", "Fridge", "heat-pump"):
        with pytest.raises(LabelError, match="not an appliance name"):
            Appliances.parse(f"ac,{reserved}")


def test_sample_names_round_trip():
    for ac in (False, True):
        for fridge in (False, True):
            for tag in (None, "2", "kitchen_mic", "take-2"):
                parsed = parse_sample_name(sample_file_name({"ac": ac, "fridge": fridge}, "night", tag, ".flac"))
                assert (parsed.labels, parsed.daypart, parsed.tag) == ({"ac": ac, "fridge": fridge}, "night", tag)
    assert sample_file_name({"ac": True, "fridge": False}, "day") == "ac-on-fridge-off-day.m4a"
    three = read_sample_name("ac-off-fridge-on-dehumidifier-on-night-take-2.flac")
    assert (three.labels, three.daypart, three.tag) == ({"ac": False, "fridge": True, "dehumidifier": True}, "night", "take-2")
    assert read_sample_name("dehumidifier-on-day.wav").labels == {"dehumidifier": True}
    assert parse_sample_name("ac-on-fridge-on-evening.wav") is None
    assert parse_sample_name("AC-on-fridge-on-day.wav") is None


@pytest.mark.parametrize("name, reason", [
    ("ac-on-ac-off-day.wav", "names ac twice"),
    ("on-on-day.wav", "not an appliance name"),
    ("Fridge-on-day.wav", "not an appliance name"),
    ("ac-on-fridge-off.wav", "'day' or 'night' must follow"),
    ("day-night.wav", "does not start with"),
    ("ac-on-day-.wav", "the tag"),
])
def test_a_bad_name_says_what_breaks_the_rule(name, reason):
    with pytest.raises(LabelError, match=reason):
        read_sample_name(name)


def test_the_appliances_of_a_project_come_in_order_of_first_appearance():
    names = sorted(["ac-on-fridge-off-day.m4a", "ac-off-fridge-off-dehumidifier-on-night.m4a", "fridge-on-night.m4a"])
    found = project_appliances(read_sample_name(name) for name in names)
    assert found.names == ("ac", "fridge", "dehumidifier") and found.priority == found.names
    assert project_appliances([read_sample_name(n) for n in names], "fridge").priority == ("fridge", "ac", "dehumidifier")


def test_file_decision_uses_the_median_and_thresholds():
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.8, 0.75], [0.85, 0.2], [0.1, 0.9]])
    result = decide_file(probs, DecisionConfig().replace(levels={"ac": {"threshold": 0.75}, "fridge": {"threshold": 0.70}}))
    assert (result.probabilities, result.status) == ({"ac": 0.8, "fridge": 0.75}, AC_ON)
    assert result.fields() == {"status": AC_ON, "p_ac": 0.8, "p_fridge": 0.75}
    assert decide_file(probs, DecisionConfig().replace(levels={"ac": {"threshold": 0.85}})).status == FRIDGE_ON
    with pytest.raises(ValueError):
        decide_file(np.zeros((0, 2)), DecisionConfig())


def test_three_appliances_decide_by_their_own_levels_and_the_priority():
    config = DecisionConfig(THREE).replace(levels={"dehumidifier": {"threshold": 0.5, "on": 0.6, "off": 0.3}})
    assert list(config.to_dict()["levels"]) == ["ac", "fridge", "dehumidifier"]
    assert config.to_dict()["levels"]["dehumidifier"] == {"threshold": 0.5, "on": 0.6, "off": 0.3}
    assert decide_file(np.array([[0.1, 0.1, 0.55]]), config).fields() == {
        "status": "dehumidifier-on", "p_ac": 0.1, "p_fridge": 0.1, "p_dehumidifier": 0.55}
    assert decide_file(np.array([[0.1, 0.1, 0.45]]), config).status == "all-off"
    decider = StreamDecider(config.replace(median_sec=1.0, debounce_sec=1.0), hop_sec=1.0)
    updates = [decider.update(p) for p in ([0.1, 0.1, 0.7], [0.1, 0.9, 0.4], [0.1, 0.1, 0.2])]
    assert [u.debounced_status for u in updates] == ["dehumidifier-on", "fridge-on", "all-off"]
    assert list(updates[0].fields()) == ["status", "debounced_status", "changed", "median_ac", "median_fridge",
                                         "median_dehumidifier", "ac_on", "fridge_on", "dehumidifier_on",
                                         "ac_running", "fridge_running", "dehumidifier_running"]
    assert updates[1].running == {"ac": False, "fridge": True, "dehumidifier": True}  # 0.4 is above its off level


def test_decision_config_round_trips_keyed_by_appliance_and_names_a_bad_one():
    config = DecisionConfig(THREE).replace(levels={"dehumidifier": {"threshold": 0.4}})
    assert DecisionConfig.from_dict(config.to_dict(), "decision", THREE) == config
    with pytest.raises(ValueError, match="decision.levels.dehumidifier: missing"):
        DecisionConfig.from_dict(DecisionConfig().to_dict(), "decision", THREE)
    with pytest.raises(ValueError, match=r"washer: not an appliance of these levels \(ac, fridge\)"):
        DecisionConfig().replace(levels={"washer": {"threshold": 0.5}})
    with pytest.raises(ValueError, match=r"ac.edge: not a level; an appliance has ac.threshold, ac.on, ac.off"):
        DecisionConfig().replace(levels={"ac": {"edge": 0.5}})


def test_the_flat_keys_of_earlier_files_still_read_and_a_clash_is_refused():
    """Bundles and runs written before levels were keyed by appliance (schema 2 and 3): t_NAME, NAME_on, NAME_off."""
    flat = {"t_ac": 0.6, "t_fridge": 0.7, "t_dehumidifier": 0.4, "ac_on": 0.8, "ac_off": 0.5, "fridge_on": 0.75,
            "fridge_off": 0.55, "dehumidifier_on": 0.45, "dehumidifier_off": 0.3, "median_sec": 9.0, "debounce_sec": 3.0}
    config = DecisionConfig.from_dict(flat, "decision", THREE)
    assert config.levels["dehumidifier"] == Levels(0.4, 0.45, 0.3) and config.levels["ac"] == Levels(0.6, 0.8, 0.5)
    assert config.median_sec == 9.0 and DecisionConfig.from_dict(config.to_dict(), "decision", THREE) == config
    with pytest.raises(ValueError, match="decision.dehumidifier_off: missing"):
        DecisionConfig.from_dict({key: value for key, value in flat.items() if key != "dehumidifier_off"}, "decision",
                                 THREE)
    # appliances named ac_on and t_ac: once both wrote t_ac_on, and one threshold was lost; keyed, both are kept
    clashing = Appliances(("ac_on", "t_ac"))
    config = DecisionConfig(clashing).replace(levels={"ac_on": {"threshold": 0.4}, "t_ac": {"on": 0.9}})
    assert DecisionConfig.from_dict(config.to_dict(), "decision", clashing) == config
    assert (config.levels["ac_on"].threshold, config.levels["t_ac"].on) == (0.4, 0.9)
    with pytest.raises(ValueError, match=r"decision.t_ac_on: the flat key of both ac_on.threshold and t_ac.on"):
        DecisionConfig.from_dict({"t_ac_on": 0.5, "median_sec": 9.0, "debounce_sec": 3.0}, "decision", clashing)


def test_hysteresis_needs_on_to_start_and_off_to_stop():
    detector = Hysteresis(on=0.8, off=0.6)
    assert [detector.update(v) for v in (0.7, 0.8, 0.65, 0.6, 0.59, 0.79)] == [False, True, True, True, False, False]


def test_stream_decider_median_and_debounce():
    decider = StreamDecider(DecisionConfig(median_sec=3.0, debounce_sec=2.0).replace(levels={"ac": {"on": 0.8, "off": 0.6}}),
                            hop_sec=1.0)
    first = decider.update([0.1, 0.1])
    assert first.debounced_status == BOTH_OFF and first.changed
    # a single loud window does not move the median of 3
    assert decider.update([0.99, 0.1]).status == BOTH_OFF
    assert decider.update([0.1, 0.1]).status == BOTH_OFF
    assert decider.update([0.1, 0.1]).status == BOTH_OFF  # the loud window leaves the median
    statuses = [decider.update([0.95, 0.1]) for _ in range(4)]
    assert [u.status for u in statuses] == [BOTH_OFF, AC_ON, AC_ON, AC_ON]
    assert [u.debounced_status for u in statuses] == [BOTH_OFF, BOTH_OFF, AC_ON, AC_ON]
    assert [u.changed for u in statuses] == [False, False, True, False]


def test_debounce_resets_when_the_candidate_flickers():
    decider = StreamDecider(DecisionConfig(median_sec=1.0, debounce_sec=3.0), hop_sec=1.0)
    decider.update([0.0, 0.0])
    updates = [decider.update([p, 0.0]) for p in (0.9, 0.9, 0.0, 0.9, 0.9, 0.9)]
    assert [u.debounced_status for u in updates] == [BOTH_OFF] * 5 + [AC_ON]


def test_decision_config_validation():
    with pytest.raises(ValueError, match=r"ac.threshold: 1.5 is outside \[0, 1\]"):
        DecisionConfig().replace(levels={"ac": {"threshold": 1.5}})
    with pytest.raises(ValueError, match="ac.off: 0.7 is above ac.on 0.5; .* must not exceed"):
        DecisionConfig().replace(levels={"ac": {"on": 0.5, "off": 0.7}})
    assert DecisionConfig().replace(levels={"ac": {"threshold": 0.6}, "fridge": {"threshold": None}}).levels["fridge"].threshold == 0.70


def test_spans_in_seconds_follow_the_hop():
    config = DecisionConfig()
    assert (config.median_windows(1.5), config.debounce_updates(1.5)) == (7, 2)  # the original N and K
    assert (config.median_windows(3.0), config.debounce_updates(3.0)) == (4, 1)
    assert (config.median_windows(60.0), config.debounce_updates(60.0)) == (1, 1)
    with pytest.raises(ValueError, match=r"median_sec: 0 is outside \(0, 3600\]"):
        DecisionConfig(median_sec=0)


def test_the_running_flags_and_the_state_come_from_the_same_debounced_detectors():
    decider = StreamDecider(DecisionConfig(median_sec=1.0, debounce_sec=2.0), hop_sec=1.0)
    updates = [decider.update(probs) for probs in
               [(0.0, 0.0), (0.9, 0.0), (0.9, 0.9), (0.9, 0.9), (0.0, 0.9), (0.0, 0.9)]]
    assert [u.debounced_status for u in updates] == [BOTH_OFF, BOTH_OFF, AC_ON, AC_ON, AC_ON, FRIDGE_ON]
    assert [(u.running["ac"], u.running["fridge"]) for u in updates] == [
        (False, False), (False, False), (True, False), (True, True), (True, True), (False, True)]
    for update in updates:  # what Home Assistant shows can never contradict itself
        assert update.debounced_status == SEED.status(update.running)
    assert [u.changed for u in updates] == [True, False, True, False, False, True]


def test_the_hop_planner_fits_the_budget_and_follows_a_slowing_cpu():
    from edge.engine.pacing import RECHECK_EVERY, HopPlanner

    planner = HopPlanner(None, cpu_sec=1.1, budget=0.5, cores=4)  # 1.1 CPU-s per window, 2 cores' worth allowed
    assert planner.hop_sec == 1.0 and planner.cpu_share <= 0.5  # 0.55 s needed -> the 0.5 s grid gives 1.0 s
    for _ in range(5 * RECHECK_EVERY):  # throttled: 3 CPU-s per window
        changed = planner.observe(3.0)
    assert planner.hop_sec == 1.5 and not changed  # grew as soon as it was needed, then stayed
    for _ in range(5 * RECHECK_EVERY):  # back to 1.9 CPU-s: 1.0 s would use 95 % of the budget, above the margin
        planner.observe(1.9)
    assert planner.hop_sec == 1.5
    for _ in range(5 * RECHECK_EVERY):
        planner.observe(1.0)
    assert planner.hop_sec == 1.0  # 0.5 s would use the whole budget: 1.0 s keeps the margin
    fixed = HopPlanner(1.5, cpu_sec=3.0)
    assert not any(fixed.observe(10.0) for _ in range(3 * RECHECK_EVERY)) and fixed.hop_sec == 1.5
