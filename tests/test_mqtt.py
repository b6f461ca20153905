"""MQTT / Home Assistant against a real broker (mosquitto, or amqtt where mosquitto is absent)."""

import dataclasses
import json
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile
from broker import Broker, Subscriber, free_port
from conftest import FILE_SOURCE, REPO, pinned_decision
from test_history import Clock, hop_line
from test_live import FakeSource, Harness

from edge.core.decision import DecisionConfig, StreamDecider
from edge.core.labels import AC_ON, SEED, Appliances
from edge.engine.hop import HopLine
from edge.home.alarms import AlarmRule, Alarms
from edge.home.history import History
from edge.home.household import Household, check_watts, parse_watts
from edge.home.mqtt import (
    MqttPublisher,
    MqttSettings,
    attributes_payload,
    discovery_messages,
    input_payload,
    slug,
    stats_payload,
)

MONITOR_SCRIPT = FILE_SOURCE + """
from edge.core.bundle import load_bundle
from edge.core.decision import DecisionOverrides
from edge.engine.detector import Detector
from edge.monitor.live import LiveMonitor
from edge.home.mqtt import MqttPublisher, MqttSettings
from edge.engine.classifier import Classifier

bundle = load_bundle(sys.argv[2])
detector = Detector(Classifier(bundle, "fp32", threads=1),
                    overrides=DecisionOverrides(levels={"fridge": {"on": 1.0, "off": 1.0}}))
publisher = MqttPublisher(MqttSettings.from_url(f"mqtt://127.0.0.1:{sys.argv[3]}", name=sys.argv[4], heartbeat_sec=1),
                          appliances=detector.decision.appliances)
publisher.start()
monitor = LiveMonitor(detector, FileSource(), publisher, max_lag_sec=1000, stall_timeout_sec=1000)
monitor.run()
"""


@pytest.fixture
def ac_wav(off_then_ac, tmp_path):
    wav = tmp_path / "ac.wav"
    soundfile.write(wav, off_then_ac[1], 16_000)
    return wav


def _monitor(bundle_dir, broker, wav, name: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", MONITOR_SCRIPT, str(wav), str(bundle_dir), str(broker.port), name],
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _kill(process: subprocess.Popen) -> str:
    process.send_signal(signal.SIGKILL)  # killed, not stopped: the broker must send the last will
    return process.communicate(timeout=10)[1]


def _entity_ids(configs: dict[str, dict]) -> set[str]:
    """The entity ids Home Assistant derives: <domain>.<slug of device name + entity name>."""
    return {f"{topic.split('/')[1]}.{slug(config['device']['name'] + ' ' + config['name'])}" for topic, config in configs.items()}


def test_mqtt_discovery_state_attributes_and_last_will(bundle_dir, broker, ac_wav):
    subscriber = Subscriber(broker.port)
    monitor = _monitor(bundle_dir, broker, ac_wav, "Test")
    try:
        assert subscriber.wait(lambda t, p, r: t == "humwatch/test/state"), "no state published"
        assert subscriber.wait(lambda t, p, r: t == "humwatch/test/attributes")
    finally:
        _kill(monitor)
    assert subscriber.wait(lambda t, p, r: t == "humwatch/test/availability" and p == "offline"), "no last will"
    assert "online" in subscriber.payloads("humwatch/test/availability")
    attributes = json.loads(subscriber.payloads("humwatch/test/attributes")[-1])
    assert {"debounced_status", "ac_running", "fridge_running", "ac_on", "fridge_on", "status", "p_ac", "p_fridge",
            "median_ac", "median_fridge", "infer_ms", "dropped_sec", "overflows"} <= set(attributes)
    subscriber.close()

    late = Subscriber(broker.port)  # joins after the fact: sees only what the broker retained
    assert late.wait(lambda t, p, r: t == "humwatch/test/state" and r and p == AC_ON)
    configs = {t: json.loads(p) for t, p, r in late.messages if t.startswith("homeassistant/") and r}
    heard = {"homeassistant/sensor/humwatch_test/state/config", "homeassistant/binary_sensor/humwatch_test/ac/config",
             "homeassistant/binary_sensor/humwatch_test/fridge/config"}
    assert set(configs) == {*heard, "homeassistant/binary_sensor/humwatch_test/input-health/config"}
    enum = configs["homeassistant/sensor/humwatch_test/state/config"]
    assert enum["device_class"] == "enum" and enum["options"] == ["ac-on", "fridge-on", "both-off"]
    assert all(configs[topic]["state_topic"] == "humwatch/test/attributes" for topic in heard), "one message for all three"
    for topic in heard:  # available while the monitor runs and its input is heard
        assert [a["topic"] for a in configs[topic]["availability"]] == ["humwatch/test/availability", "humwatch/test/input"]
        assert configs[topic]["availability_mode"] == "all" and configs[topic]["expire_after"] == 3  # three heartbeats of 1 s
    problem = configs["homeassistant/binary_sensor/humwatch_test/input-health/config"]
    assert (problem["device_class"], problem["state_topic"]) == ("problem", "humwatch/test/input")
    assert [a["topic"] for a in problem["availability"]] == ["humwatch/test/availability"], "it tells even when nothing is heard"
    assert late.wait(lambda t, p, r: t == "humwatch/test/input" and r and json.loads(p) == {"state": "ok"})
    assert len({json.dumps(c["device"]) for c in configs.values()}) == 1, "all four entities share one device"
    assert late.payloads("humwatch/test/availability")[-1] == "offline"
    late.close()


def test_two_named_monitors_make_two_devices(bundle_dir, broker, ac_wav):
    subscriber = Subscriber(broker.port)
    monitors = [_monitor(bundle_dir, broker, ac_wav, name) for name in ("Kitchen", "Living room")]
    try:
        for topic_id in ("kitchen", "living_room"):
            assert subscriber.wait(lambda t, p, r, topic_id=topic_id: t == f"humwatch/{topic_id}/attributes")
    finally:
        stderr = [_kill(monitor) for monitor in monitors]
    assert not any("another monitor" in text for text in stderr)
    configs = {t: json.loads(p) for t, p, r in subscriber.messages if t.startswith("homeassistant/")}
    assert {c["device"]["name"] for c in configs.values()} == {"Kitchen", "Living room"}
    assert len({c["unique_id"] for c in configs.values()}) == 8
    assert _entity_ids(configs) == {
        "sensor.kitchen_state", "binary_sensor.kitchen_ac_running", "binary_sensor.kitchen_fridge_running",
        "binary_sensor.kitchen_input", "sensor.living_room_state", "binary_sensor.living_room_ac_running",
        "binary_sensor.living_room_fridge_running", "binary_sensor.living_room_input"}
    subscriber.close()


def test_of_two_monitors_under_one_id_the_later_one_publishes_nothing(broker, caplog):
    """The first to start holds the id; the second gives way at once, says so, and stays connected."""
    subscriber = Subscriber(broker.port)
    first, second = (MqttPublisher(MqttSettings.from_url(f"mqtt://127.0.0.1:{broker.port}", name="Kitchen", heartbeat_sec=0.5))
                     for _ in range(2))
    with caplog.at_level("WARNING", logger="humwatch.mqtt"):
        first.start()
        assert first.holding.wait(10)
        first(_line(t=6.0))
        second.start()
        assert second.connected.wait(10)
        deadline = time.monotonic() + 10
        while second.holder is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert second.holder is not None and second.holder["id"] == first.instance["id"]
        with pytest.raises(ValueError, match="holds humwatch/kitchen; this monitor publishes nothing there"):
            second(_line(t=99.0, ac=True))
        time.sleep(second.twin_wait_sec + 0.5)  # past the time it would have claimed the id
        assert not second.holding.is_set() and first.holding.is_set() and second.connected.is_set()
        assert first.rivals and second.rivals, "each knows the other"
        second.close()
        first.close()
    attributes = [json.loads(p)["t"] for p in subscriber.payloads("humwatch/kitchen/attributes")]
    assert attributes and set(attributes) == {6.0}, "only the first monitor's state"
    assert "publishes nothing there" in caplog.text and "own --name" in caplog.text
    subscriber.close()


def test_after_a_broker_restart_the_first_state_sent_is_the_current_one(broker):
    """States sent into a connection that died are never replayed after it: the current one goes first."""
    publisher = MqttPublisher(MqttSettings.from_url(f"mqtt://127.0.0.1:{broker.port}", name="Restart"))
    publisher.start()
    assert publisher.holding.wait(10)
    publisher(_line(t=6.0))
    broker.process.send_signal(signal.SIGSTOP)  # a broker that hangs: what is sent now is never acknowledged
    publisher(_line(t=7.5, ac=True))
    time.sleep(0.5)
    broker.process.kill()
    broker.process.wait(10)
    deadline = time.monotonic() + 10
    while publisher.connected.is_set() and time.monotonic() < deadline:
        time.sleep(0.05)
    publisher(_line(t=40.5))  # the current state when the broker comes back: both off
    broker.start()
    subscriber = Subscriber(broker.port)
    assert subscriber.wait(lambda t, p, r: t == "humwatch/restart/state", timeout=30)
    publisher.close()
    assert subscriber.payloads("humwatch/restart/state")[0] == "both-off", subscriber.payloads("humwatch/restart/state")
    assert [json.loads(p)["t"] for p in subscriber.payloads("humwatch/restart/attributes")][0] == 40.5
    subscriber.close()


def _line(t: float = 6.0, ac: bool = False, **live) -> HopLine:
    """A seed monitor's line at `t`: the AC as given, the fridge off."""
    return hop_line(t, {"ac": ac, "fridge": False}, **live)


def test_after_kill_9_and_restart_the_first_state_is_a_new_decision(bundle_dir, broker, ac_wav):
    first = _monitor(bundle_dir, broker, ac_wav, "Test")
    watcher = Subscriber(broker.port)
    try:
        assert watcher.wait(lambda t, p, r: t == "humwatch/test/availability" and p == "online")
    finally:
        _kill(first)
    assert watcher.wait(lambda t, p, r: t == "humwatch/test/availability" and p == "offline")
    watcher.close()
    subscriber = Subscriber(broker.port)  # the dead run's retained state and 'offline' arrive first (retained)
    assert subscriber.wait(lambda t, p, r: t == "humwatch/test/availability" and r and p == "offline")
    second = _monitor(bundle_dir, broker, ac_wav, "Test")
    try:
        assert subscriber.wait(lambda t, p, r: t == "humwatch/test/availability" and not r and p == "online")
    finally:
        _kill(second)
    live = [(t, p) for t, p, r in subscriber.messages if not r and t.startswith("humwatch/test/")]
    online = live.index(("humwatch/test/availability", "online"))
    before = [json.loads(p) for t, p in live[:online] if t == "humwatch/test/attributes"]
    assert before, "online comes only after the new run's first decision (the newest when it holds the id)"
    subscriber.close()


def test_the_three_entities_agree_on_every_message(bundle_dir, broker, off_then_ac):
    """Through a real change of state, every attributes message is consistent with itself."""
    off, on = off_then_ac
    publisher = MqttPublisher(MqttSettings.from_url(f"mqtt://127.0.0.1:{broker.port}", name="Agree"))
    publisher.start()
    subscriber = Subscriber(broker.port)
    source = FakeSource()
    assert publisher.holding.wait(10)
    with Harness(bundle_dir, source, sinks=[publisher], decision=pinned_decision(bundle_dir), max_lag_sec=100.0) as harness:
        source.feed(off)
        source.feed(on)
        lines = harness.wait_for(29)
        assert subscriber.wait(lambda t, p, r: t == "humwatch/agree/attributes" and json.loads(p)["debounced_status"] == AC_ON)
    publisher.close()
    messages = [json.loads(p) for p in subscriber.payloads("humwatch/agree/attributes")]
    assert len(lines) == 29 and {m["debounced_status"] for m in messages} >= {"both-off", AC_ON}
    for message in messages:
        assert message["debounced_status"] == SEED.status({"ac": message["ac_running"], "fridge": message["fridge_running"]}), message
    subscriber.close()


def test_broker_outage_keeps_deciding_and_sends_the_latest_state_on_return(bundle_dir, broker, off_then_ac, caplog):
    off, on = off_then_ac
    publisher = MqttPublisher(MqttSettings.from_url(f"mqtt://127.0.0.1:{broker.port}", name="outage"))
    publisher.start()
    assert publisher.holding.wait(10)
    source = FakeSource()
    with caplog.at_level("INFO", logger="humwatch.mqtt"), \
            Harness(bundle_dir, source, sinks=[publisher], decision=pinned_decision(bundle_dir), max_lag_sec=100.0) as harness:
        source.feed(off)
        lines = harness.wait_for(13)
        assert lines[-1].debounced_status != AC_ON
        broker.stop()
        deadline = time.monotonic() + 10
        while publisher.connected.is_set() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not publisher.connected.is_set()
        source.feed(on)  # the AC starts while the broker is down
        lines = harness.wait_for(29)
        assert len(lines) == 29 and lines[-1].debounced_status == AC_ON, "the monitor kept deciding"
        time.sleep(3.5)  # paho waits 1 s after the disconnect, then 2 s after the first failed try
        broker.start()
        subscriber = Subscriber(broker.port)
        assert subscriber.wait(lambda t, p, r: t == "humwatch/outage/state" and p == AC_ON, timeout=30)
        subscriber.close()
        publisher.close()
    assert "disconnected" in caplog.text and "keeping only the latest state" in caplog.text
    assert "reconnecting in 1 s" in caplog.text, "the first wait after a disconnect"
    assert "cannot reach the broker at 127.0.0.1" in caplog.text and "retrying in 2 s" in caplog.text
    assert caplog.text.rstrip().endswith("MQTT: disconnected: the monitor stopped")


def test_a_broker_that_is_down_at_start_is_logged_with_each_retry(caplog):
    publisher = MqttPublisher(MqttSettings.from_url(f"mqtt://127.0.0.1:{free_port()}"))
    with caplog.at_level("WARNING", logger="humwatch.mqtt"):
        publisher.start()
        deadline = time.monotonic() + 10
        while caplog.text.count("cannot reach the broker") < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        publisher.close()
    assert "retrying in 1 s" in caplog.text and "retrying in 2 s" in caplog.text


def test_mqtt_settings_from_url_never_show_the_password():
    settings = MqttSettings.from_url("mqtts://ha:s%40cret@broker.lan", name="Kitchen")
    assert (settings.host, settings.port, settings.tls) == ("broker.lan", 8883, True)
    assert (settings.username, settings.password) == ("ha", "s@cret")
    assert "s@cret" not in repr(settings) and settings.base_topic == "humwatch/kitchen"
    assert MqttSettings.from_url("mqtt://b", name="Kitchen", device_id="k2").base_topic == "humwatch/k2"
    assert MqttSettings.from_url("mqtt://ha:x@b", username="other", password="y").username == "other"
    assert MqttSettings.from_url("mqtt://broker").port == 1883
    with pytest.raises(ValueError, match="expected mqtt://HOST"):
        MqttSettings.from_url("http://broker")
    with pytest.raises(ValueError, match="needs at least one letter or digit"):
        MqttSettings.from_url("mqtt://b", name="!!").base_topic


@pytest.mark.parametrize("device_id", ["kitchen/1", "kitchen#", "+", "kit\nchen", "kit\x00", "two words", "", "k" * 65])
def test_a_device_id_a_broker_or_home_assistant_would_refuse_is_refused_at_start(device_id):
    with pytest.raises(ValueError) as error:
        MqttSettings.from_url("mqtt://b", name="Kitchen", device_id=device_id)
    assert str(error.value).startswith(f"--mqtt-device-id {device_id!r}: use 1 to 64 letters, digits, '_' or '-'")
    assert MqttSettings.from_url("mqtt://b", device_id="Kitchen-2_b").base_topic == "humwatch/Kitchen-2_b"


def test_a_name_with_control_characters_is_refused():
    with pytest.raises(ValueError, match=r"--name 'Kit\\nchen': control characters are not allowed"):
        MqttSettings.from_url("mqtt://b", name="Kit\nchen")


def test_the_live_command_refuses_a_bad_device_id_before_connecting(bundle_dir, monkeypatch):
    from click.testing import CliRunner
    from test_errors import fake_sounddevice

    import edge.monitor.sources
    from edge.cli import main

    monkeypatch.setattr(edge.monitor.sources, "import_sounddevice", fake_sounddevice)
    result = CliRunner().invoke(main, ["live", "--bundle", str(bundle_dir), "--hop", "1.5", "--mqtt",
                                       f"mqtt://127.0.0.1:{free_port()}", "--mqtt-device-id", "kitchen/#"])
    assert result.exit_code == 1 and "--mqtt-device-id 'kitchen/#': use 1 to 64 letters" in result.output


def test_long_names_make_bounded_distinct_ids_and_entity_ids():
    names = ["The fridge in the basement next to the washing machine, left",
             "The fridge in the basement next to the washing machine, right", "Kitchen"]
    settings = [MqttSettings.from_url("mqtt://b", name=name) for name in names]
    assert re.fullmatch(r"the_fridge_in_the_basement_next_[0-9a-f]{6}", settings[0].topic_id), "cut between words"
    assert re.fullmatch(r"The fridge in the basement next [0-9a-f]{6}", settings[0].device_name)
    assert settings[0].topic_id != settings[1].topic_id and settings[0].device_name != settings[1].device_name
    assert (settings[2].topic_id, settings[2].device_name) == ("kitchen", "Kitchen"), "short names are kept whole"
    assert MqttSettings.from_url("mqtt://b", name=names[0]).topic_id == settings[0].topic_id, "stable across restarts"
    assert re.fullmatch(r"x{33}_[0-9a-f]{6}", MqttSettings.from_url("mqtt://b", name="x" * 500).topic_id), "one word: cut hard"
    first, second = (_entity_ids(discovery_messages(s)) for s in settings[:2])
    prefix = slug(settings[0].device_name)
    assert first == {f"sensor.{prefix}_state", f"binary_sensor.{prefix}_ac_running", f"binary_sensor.{prefix}_fridge_running",
                     f"binary_sensor.{prefix}_input"}
    assert not first & second, "two long names that share a beginning stay apart"


# What Home Assistant's MQTT integration drops from json_attributes (MQTT_ATTRIBUTES_BLOCKED in its entity.py)
HOME_ASSISTANT_BLOCKED = {"assumed_state", "available", "context_recent_time", "device_class", "device_info",
                          "entity_category", "entity_picture", "entity_registry_enabled_default", "extra_state_attributes",
                          "force_update", "friendly_name", "icon", "name", "should_poll", "state", "supported_features",
                          "unique_id", "unit_of_measurement"}


def _template_paths(template: str) -> list[list[str]]:
    """'{{ value_json.fridge.cycles_today }}' -> [['fridge', 'cycles_today']]; ['x'] indexing too."""
    return [re.findall(r"\.(\w+)|\['([^']+)'\]", path) for path in re.findall(r"value_json((?:\.\w+|\['[^']+'\])+)", template)]


def _read(config: dict, payloads: dict):
    """The value a config's template reads from the message on its state topic (every key on the way must be there)."""
    (path,) = _template_paths(config["value_template"])
    value = payloads[config["state_topic"]]
    for key in ("".join(part) for part in path):
        assert key in value, (config["value_template"], key)
        value = value[key]
    return value


def test_home_assistant_keeps_every_attribute_and_every_template_reads_a_field_that_exists(tmp_path):
    line = _line(ac=True, lag_sec=0.1)
    attributes = attributes_payload(line)
    assert not ({field.name for field in dataclasses.fields(HopLine)} | set(attributes)) & HOME_ASSISTANT_BLOCKED
    assert attributes == {k: v for k, v in line.to_json().items() if k not in ("changed", "lag_sec")}, "the whole line"
    assert attributes["debounced_status"] == AC_ON and attributes["ac_running"] is True
    household = Household(History(tmp_path / "h.sqlite"), Alarms([AlarmRule.parse("fridge-run-max=90m")]),
                          {"fridge": 150.0}, lambda event: None)
    household(line)
    payloads = {"humwatch/kitchen/attributes": attributes, "humwatch/kitchen/stats": stats_payload(household.snapshot()),
                "humwatch/kitchen/input": input_payload(line, 0.0)}
    configs = discovery_messages(MqttSettings.from_url("mqtt://b", name="Kitchen"), household)
    household.close()
    assert len(configs) == 4 + 2 * 4 + 1 + 1, "state, 2 running, input, 4 statistics per appliance, fridge energy, 1 alarm"
    for config in configs.values():
        _read(config, payloads)
    unheard = input_payload(HopLine.undecided(9.0, "no-signal", "no signal: ...", changed=True), 0.0)
    for config in configs.values():  # the input's template and the state entities' availability read the same field
        for availability in config["availability"][1:]:
            assert _template_paths(availability["value_template"]) == _template_paths(
                configs["homeassistant/binary_sensor/humwatch_kitchen/input-health/config"]["value_template"])
    assert unheard["state"] == "no-signal" and unheard["reason"] == "no signal: ..." and "since" in unheard


def _stated_and_waited(records) -> tuple[list[int], list[float]]:
    """The delay each log record states, and the time from each record to the next."""
    stated = [int(re.search(r"in (\d+) s", record.getMessage()).group(1)) for record in records]
    return stated, [after.created - before.created for before, after in zip(records, records[1:])]


def _wait_for_records(caplog, predicate, count: int) -> list:
    deadline = time.monotonic() + 15
    while len([r for r in caplog.records if predicate(r.getMessage())]) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    return [r for r in caplog.records if predicate(r.getMessage())][:count]


def test_the_reconnect_log_states_the_delay_paho_waits(broker, caplog):
    """After a lost connection each logged delay is the time until the next try is logged (1 s, 2 s, ...)."""
    publisher = MqttPublisher(MqttSettings.from_url(f"mqtt://127.0.0.1:{broker.port}", name="delays"))
    publisher.start()
    assert publisher.holding.wait(10)
    with caplog.at_level("WARNING", logger="humwatch.mqtt"):
        broker.stop()
        records = _wait_for_records(caplog, lambda message: " in " in message, 3)
        publisher.close()
    assert "disconnected" in records[0].getMessage() and "cannot reach" in records[1].getMessage()
    stated, waited = _stated_and_waited(records)
    assert stated == [1, 2, 4] and waited == pytest.approx(stated[:2], abs=0.5), (stated, waited)


def test_a_refused_connection_is_logged_with_the_delay_paho_waits(tmp_path, caplog):
    refusing = Broker(tmp_path, allow_anonymous=False).start()
    publisher = MqttPublisher(MqttSettings.from_url(f"mqtt://127.0.0.1:{refusing.port}", name="refused"))
    try:
        with caplog.at_level("WARNING", logger="humwatch.mqtt"):
            publisher.start()
            records = _wait_for_records(caplog, lambda message: "reconnecting in" in message, 3)
            publisher.close()
    finally:
        refusing.stop()
    assert "refused the connection" in caplog.text and "check --mqtt-user / --mqtt-password" in caplog.text
    stated, waited = _stated_and_waited(records)
    assert stated == [1, 2, 4] and waited == pytest.approx(stated[:2], abs=0.5), (stated, waited)


THREE = Appliances(("ac", "fridge", "dehumidifier"))
HOP = 1.5


def _three_appliance_lines(minutes_on: float):
    """A bundle of three appliances deciding (its default levels, median and debounce): the AC and
    the fridge quiet, the dehumidifier off for 30 s, on for `minutes_on`, off for 30 s."""
    decider = StreamDecider(DecisionConfig(THREE), HOP)
    for step in range(int((60 + 60 * minutes_on) / HOP)):
        t = 6.0 + step * HOP
        on = 30 <= step * HOP < 30 + 60 * minutes_on
        probs = np.array([0.1, 0.2, 0.9 if on else 0.05])
        yield HopLine.build(t, probs, decider.update(probs), 1.0, hop_sec=HOP)


def _changes(values: list) -> list:
    """[False, False, True, True, False] -> [False, True, False]."""
    return [value for index, value in enumerate(values) if index == 0 or value != values[index - 1]]


def test_a_third_appliance_has_its_entities_and_its_state_follows_the_lines(broker, tmp_path):
    """--watts dehumidifier=300 and --alarm dehumidifier-run-max=2m on a bundle of three appliances."""
    start = 1_000_000.0
    clock, events = Clock(start), []
    watts = parse_watts("dehumidifier=300")
    check_watts(watts, THREE.names, "the bundle's")
    household = Household(History(tmp_path / "h.sqlite", clock=clock, appliances=THREE.names),
                          Alarms([AlarmRule.parse("dehumidifier-run-max=2m")], clock=clock), watts, events.append)
    settings = MqttSettings.from_url(f"mqtt://127.0.0.1:{broker.port}", name="Basement", heartbeat_sec=60)
    publisher = MqttPublisher(settings, clock=clock, household=household, appliances=THREE)  # heartbeats in simulated time
    subscriber = Subscriber(broker.port)
    publisher.start()
    assert publisher.holding.wait(10)
    lines = []
    for line in _three_appliance_lines(minutes_on=5):
        clock.now = start + line.t
        household(line)
        publisher(line)
        lines.append(line)
        time.sleep(0.002)  # a pace the broker keeps up with
    publisher.close()
    household.close()
    assert subscriber.wait(lambda t, p, r: t == "humwatch/basement/availability" and p == "offline" and not r)
    subscriber.close()

    configs = {t: json.loads(p) for t, p, r in subscriber.messages if t.startswith("homeassistant/")}
    node = "homeassistant/{}/humwatch_basement/{}/config"
    own = {topic: config for topic, config in configs.items() if "dehumidifier" in topic}
    assert set(own) == {node.format("binary_sensor", "dehumidifier"), node.format("binary_sensor", "dehumidifier-run-max"),
                        *(node.format("sensor", f"dehumidifier_{key}") for key in
                          ("duty_cycle_pct", "current_run_min", "runtime_today_h", "cycles_today", "energy_today_kwh"))}
    assert {topic for topic in configs if "energy" in topic} == {node.format("sensor", "dehumidifier_energy_today_kwh")}
    assert _entity_ids(own) == {
        "binary_sensor.basement_dehumidifier_running", "binary_sensor.basement_alarm_dehumidifier_run_max",
        "sensor.basement_dehumidifier_duty_cycle", "sensor.basement_dehumidifier_current_run",
        "sensor.basement_dehumidifier_run_time_today", "sensor.basement_dehumidifier_cycles_today",
        "sensor.basement_dehumidifier_energy_today"}
    running = configs[node.format("binary_sensor", "dehumidifier")]
    assert running["device_class"] == "running" and running["unique_id"] == "humwatch_basement_dehumidifier"
    energy = configs[node.format("sensor", "dehumidifier_energy_today_kwh")]
    assert (energy["unit_of_measurement"], energy["device_class"], energy["state_class"]) == ("kWh", "energy", "total_increasing")
    assert configs[node.format("sensor", "state")]["options"] == ["ac-on", "fridge-on", "dehumidifier-on", "all-off"]
    assert len({c["unique_id"] for c in configs.values()}) == len(configs) == 1 + 3 + 3 * 4 + 1 + 1 + 1  # + the input

    # the running entity reads each attributes message as the lines decided it, through the run and back
    attributes = [json.loads(p) for p in subscriber.payloads("humwatch/basement/attributes")]
    decided = {line.t: line.running["dehumidifier"] for line in lines}
    shown = [(message["t"], _read(running, {running["state_topic"]: message})) for message in attributes]
    assert all(value is decided[t] for t, value in shown), shown
    assert _changes([value for _, value in shown]) == [False, True, False], "off, the run, off again"
    assert sum(decided.values()) * HOP == pytest.approx(5 * 60, abs=6 * HOP), "the run the lines decided"
    assert {m["debounced_status"] for m in attributes} == {"all-off", "dehumidifier-on"}
    assert subscriber.payloads("humwatch/basement/state")[-1] == "all-off"

    # its statistics, energy and alarm
    stats = [json.loads(p) for p in subscriber.payloads("humwatch/basement/stats")]
    last = {config_topic: _read(config, {config["state_topic"]: stats[-1]})
            for config_topic, config in own.items() if config["state_topic"] == "humwatch/basement/stats"}
    ran_h = sum(decided.values()) * HOP / 3600
    assert last[node.format("sensor", "dehumidifier_cycles_today")] == 1
    assert last[node.format("sensor", "dehumidifier_runtime_today_h")] == pytest.approx(ran_h, abs=HOP / 3600)
    assert last[node.format("sensor", "dehumidifier_energy_today_kwh")] == pytest.approx(0.3 * ran_h, abs=0.3 * HOP / 3600)
    assert last[node.format("binary_sensor", "dehumidifier-run-max")] is False, "cleared when the run ended"
    assert any(s["alarms"]["dehumidifier-run-max"] for s in stats), "raised while it ran past 2 minutes"
    assert [(e["alarm"], e["state"], e["appliance"]) for e in events] == [
        ("dehumidifier-run-max", "raised", "dehumidifier"), ("dehumidifier-run-max", "cleared", "dehumidifier")]
    assert stats[-1]["ac"]["cycles_today"] == stats[-1]["fridge"]["cycles_today"] == 0


def test_entities_an_earlier_run_had_are_removed(broker):
    """A bundle of three appliances, then the seed's under the same name: the dehumidifier's entity goes."""
    subscriber = Subscriber(broker.port)
    url = f"mqtt://127.0.0.1:{broker.port}"
    earlier = MqttPublisher(MqttSettings.from_url(url, name="Kitchen"), appliances=THREE)
    earlier.start()
    assert earlier.holding.wait(10)
    earlier.close()
    gone = "homeassistant/binary_sensor/humwatch_kitchen/dehumidifier/config"
    assert subscriber.wait(lambda t, p, r: t == gone and p)
    now = MqttPublisher(MqttSettings.from_url(url, name="Kitchen"))
    now.start()
    assert now.holding.wait(10)
    assert subscriber.wait(lambda t, p, r: t == gone and not p), "emptied: Home Assistant removes the entity"
    now.close()
    subscriber.close()
    late = Subscriber(broker.port)
    assert late.wait(lambda t, p, r: t == "humwatch/kitchen/availability" and r)
    time.sleep(0.3)
    late.close()
    retained = {t: json.loads(p) for t, p, r in late.messages if t.startswith("homeassistant/") and r and p}
    assert set(retained) == {"homeassistant/sensor/humwatch_kitchen/state/config",
                             "homeassistant/binary_sensor/humwatch_kitchen/ac/config",
                             "homeassistant/binary_sensor/humwatch_kitchen/fridge/config",
                             "homeassistant/binary_sensor/humwatch_kitchen/input-health/config"}
    assert retained["homeassistant/sensor/humwatch_kitchen/state/config"]["options"] == ["ac-on", "fridge-on", "both-off"]
