import numpy as np
import pytest

from edge.core.decision import Hysteresis, StreamDecider, decide_file
from edge.core.defaults import DecisionConfig
from edge.core.labels import AC_ON, BOTH_OFF, FRIDGE_ON, parse_sample_name, sample_file_name, state_of


def test_priority_rule():
    assert state_of(True, True) == AC_ON
    assert state_of(True, False) == AC_ON
    assert state_of(False, True) == FRIDGE_ON
    assert state_of(False, False) == BOTH_OFF


def test_sample_names_round_trip():
    for ac in (False, True):
        for fridge in (False, True):
            for tag in (None, "2", "kitchen_mic"):
                parsed = parse_sample_name(sample_file_name(ac, fridge, "night", tag, ".flac"))
                assert (parsed.ac, parsed.fridge, parsed.daypart, parsed.tag) == (ac, fridge, "night", tag)
    assert parse_sample_name("ac-on-fridge-on-evening.wav") is None
    assert parse_sample_name("AC-on-fridge-on-day.wav") is None


def test_file_decision_uses_the_median_and_thresholds():
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.8, 0.75], [0.85, 0.2], [0.1, 0.9]])
    result = decide_file(probs, DecisionConfig(t_ac=0.75, t_fridge=0.70))
    assert (result.p_ac, result.p_fridge, result.status) == (0.8, 0.75, AC_ON)
    assert decide_file(probs, DecisionConfig(t_ac=0.85, t_fridge=0.70)).status == FRIDGE_ON
    with pytest.raises(ValueError):
        decide_file(np.zeros((0, 2)), DecisionConfig())


def test_hysteresis_needs_on_to_start_and_off_to_stop():
    detector = Hysteresis(on=0.8, off=0.6)
    assert [detector.update(v) for v in (0.7, 0.8, 0.65, 0.6, 0.59, 0.79)] == [False, True, True, True, False, False]


def test_stream_decider_median_and_debounce():
    decider = StreamDecider(DecisionConfig(median_sec=3.0, debounce_sec=2.0, ac_on=0.8, ac_off=0.6), hop_sec=1.0)
    first = decider.update(0.1, 0.1)
    assert first.debounced_status == BOTH_OFF and first.changed
    # a single loud window does not move the median of 3
    assert decider.update(0.99, 0.1).status == BOTH_OFF
    assert decider.update(0.1, 0.1).status == BOTH_OFF
    assert decider.update(0.1, 0.1).status == BOTH_OFF  # the loud window leaves the median
    statuses = [decider.update(0.95, 0.1) for _ in range(4)]
    assert [u.status for u in statuses] == [BOTH_OFF, AC_ON, AC_ON, AC_ON]
    assert [u.debounced_status for u in statuses] == [BOTH_OFF, BOTH_OFF, AC_ON, AC_ON]
    assert [u.changed for u in statuses] == [False, False, True, False]


def test_debounce_resets_when_the_candidate_flickers():
    decider = StreamDecider(DecisionConfig(median_sec=1.0, debounce_sec=3.0), hop_sec=1.0)
    decider.update(0.0, 0.0)
    updates = [decider.update(p, 0.0) for p in (0.9, 0.9, 0.0, 0.9, 0.9, 0.9)]
    assert [u.debounced_status for u in updates] == [BOTH_OFF] * 5 + [AC_ON]


def test_decision_config_validation():
    with pytest.raises(ValueError, match=r"t_ac: 1.5 is outside \[0, 1\]"):
        DecisionConfig(t_ac=1.5)
    with pytest.raises(ValueError, match="must not exceed"):
        DecisionConfig(ac_on=0.5, ac_off=0.7)
    assert DecisionConfig().replace(t_ac=0.6, t_fridge=None).t_fridge == 0.70


def test_spans_in_seconds_follow_the_hop():
    config = DecisionConfig()
    assert (config.median_windows(1.5), config.debounce_updates(1.5)) == (7, 2)  # the original N and K
    assert (config.median_windows(3.0), config.debounce_updates(3.0)) == (4, 1)
    assert (config.median_windows(60.0), config.debounce_updates(60.0)) == (1, 1)
    with pytest.raises(ValueError, match=r"median_sec: 0 is outside \(0, 3600\]"):
        DecisionConfig(median_sec=0)


def test_the_running_flags_and_the_state_come_from_the_same_debounced_detectors():
    decider = StreamDecider(DecisionConfig(median_sec=1.0, debounce_sec=2.0), hop_sec=1.0)
    updates = [decider.update(p_ac, p_fridge) for p_ac, p_fridge in
               [(0.0, 0.0), (0.9, 0.0), (0.9, 0.9), (0.9, 0.9), (0.0, 0.9), (0.0, 0.9)]]
    assert [u.debounced_status for u in updates] == [BOTH_OFF, BOTH_OFF, AC_ON, AC_ON, AC_ON, FRIDGE_ON]
    assert [(u.ac_running, u.fridge_running) for u in updates] == [
        (False, False), (False, False), (True, False), (True, True), (True, True), (False, True)]
    for update in updates:  # what Home Assistant shows can never contradict itself
        assert update.debounced_status == state_of(update.ac_running, update.fridge_running)
    assert [u.changed for u in updates] == [True, False, True, False, False, True]


def test_the_hop_planner_fits_the_budget_and_follows_a_slowing_cpu():
    from edge.monitor.pacing import RECHECK_EVERY, HopPlanner

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
