"""A twin under the same --name never takes the running monitor's device from Home Assistant: it
publishes nothing under the id (no discovery, no removal, no state), cannot leave the running
monitor unavailable, and takes over only once that monitor has stopped (real broker: mosquitto,
or amqtt where mosquitto is absent; real `humwatch live` processes)."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from broker import Subscriber
from conftest import REPO
from test_mqtt import _line

from edge.home.mqtt import MqttPublisher, MqttSettings

AVAILABILITY = "humwatch/kitchen/availability"
BOUND_SEC = 3.0  # the running monitor answers at once; this leaves room for a loaded machine

TWIN_SCRIPT = """
import sys, time
from edge.home.mqtt import MqttPublisher, MqttSettings
from test_mqtt import _line

twin = MqttPublisher(MqttSettings.from_url(f"mqtt://127.0.0.1:{sys.argv[1]}", name="Kitchen"))
twin.start()
assert twin.connected.wait(10)
while twin.holder is None:
    time.sleep(0.05)
print("ready", flush=True)
time.sleep(60)
"""


@pytest.fixture
def monitor(broker):
    """The healthy monitor, online with its first decision (t=6)."""
    probe = Subscriber(broker.port)
    publisher = MqttPublisher(MqttSettings.from_url(f"mqtt://127.0.0.1:{broker.port}", name="Kitchen"))
    publisher.start()
    assert publisher.holding.wait(10)
    publisher(_line(t=6.0))
    # its 'online' follows its configs on one connection: once the broker has passed it on, every
    # config has too, and a test's later subscriber gets them only as retained copies, never live
    assert probe.wait(lambda t, p, r: t == AVAILABILITY and p == "online")
    probe.close()
    yield publisher
    publisher.close()


def _online_again(subscriber: Subscriber, caplog) -> float:
    """Seconds from the twin's live 'offline' to the running monitor's 'online' after it."""
    assert subscriber.wait(lambda t, p, r: t == AVAILABILITY and p == "offline" and not r), "the twin said offline"
    seen = time.monotonic()
    live = lambda: [p for t, p, r in list(subscriber.messages) if t == AVAILABILITY and not r]  # noqa: E731
    deadline = seen + BOUND_SEC
    while time.monotonic() < deadline and live()[-1] != "online":
        time.sleep(0.02)
    assert live()[-1] == "online", f"still offline {BOUND_SEC} s after the twin left: {live()}"
    assert "another client set humwatch/kitchen/availability offline" in caplog.text
    return time.monotonic() - seen


def _retained(port: int) -> dict[str, str]:
    """What Home Assistant reads when it (re)subscribes: the retained message of each topic."""
    late = Subscriber(port)
    assert late.wait(lambda t, p, r: t == AVAILABILITY and r)
    time.sleep(0.3)
    late.close()
    return {t: p for t, p, r in late.messages if r}


def test_a_twin_publishes_nothing_and_its_clean_stop_leaves_the_running_monitor_online(broker, monitor, caplog):
    subscriber = Subscriber(broker.port)
    with caplog.at_level("WARNING", logger="humwatch.mqtt"):
        twin = MqttPublisher(MqttSettings.from_url(f"mqtt://127.0.0.1:{broker.port}", name="Kitchen"))
        twin.start()
        assert twin.connected.wait(10)
        deadline = time.monotonic() + 10
        while twin.holder is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert twin.holder["id"] == monitor.instance["id"], "the running monitor answered the twin's hello"
        with pytest.raises(ValueError, match="publishes nothing there"):
            twin(_line(t=99.0))
        time.sleep(twin.twin_wait_sec + 0.5)  # past the time it would have claimed the id
        twin.close()  # it never held the id: no 'offline' either
        time.sleep(0.5)
    mine = [(t, p) for t, p, r in subscriber.messages if not r]
    assert not [t for t, _ in mine if t.startswith("homeassistant/")], "the twin sent no discovery and removed nothing"
    assert not [p for t, p in mine if t == "humwatch/kitchen/attributes" and json.loads(p)["t"] == 99.0], "nor any state"
    assert "offline" not in [p for t, p in mine if t == AVAILABILITY], "nor an availability"
    retained = _retained(broker.port)
    assert retained[AVAILABILITY] == "online"
    assert json.loads(retained["humwatch/kitchen/attributes"])["t"] == 6.0, "the running monitor's state, not the twin's"
    assert "holds humwatch/kitchen, started before this one: this monitor publishes nothing there" in caplog.text
    subscriber.close()


def test_a_twin_killed_with_its_last_will_leaves_the_running_monitor_online(broker, monitor, caplog):
    subscriber = Subscriber(broker.port)
    twin = subprocess.Popen([sys.executable, "-c", TWIN_SCRIPT, str(broker.port)], cwd=REPO / "tests",
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'tests'}"})
    try:
        assert twin.stdout.readline().strip() == "ready", twin.stderr.read()
        with caplog.at_level("WARNING", logger="humwatch.mqtt"):
            twin.send_signal(signal.SIGKILL)  # the broker publishes the twin's last will: a retained 'offline'
            twin.wait(10)
            _online_again(subscriber, caplog)
    finally:
        twin.kill()
        twin.communicate(timeout=10)
    assert _retained(broker.port)[AVAILABILITY] == "online"
    subscriber.close()


def test_the_monitor_does_not_fight_its_own_clean_stop(broker, monitor):
    subscriber = Subscriber(broker.port)
    assert subscriber.wait(lambda t, p, r: t == AVAILABILITY and p == "online")
    monitor.close()
    assert subscriber.wait(lambda t, p, r: t == AVAILABILITY and p == "offline" and not r)
    time.sleep(1.0)  # time for a wrong 'online' to arrive
    assert [p for t, p, r in subscriber.messages if t == AVAILABILITY and not r][-1] == "offline"
    assert _retained(broker.port)[AVAILABILITY] == "offline"
    subscriber.close()


def test_an_offline_left_by_a_dead_run_is_not_answered_before_the_first_decision(broker):
    """A retained 'offline' (a dead run's) stays until this run decides: never a stale state shown as current."""
    dead = MqttPublisher(MqttSettings.from_url(f"mqtt://127.0.0.1:{broker.port}", name="Kitchen"))
    dead.start()
    assert dead.holding.wait(10)
    dead(_line(t=1.0))
    dead.close()
    fresh = MqttPublisher(MqttSettings.from_url(f"mqtt://127.0.0.1:{broker.port}", name="Kitchen"))
    fresh.start()
    assert fresh.holding.wait(10)
    time.sleep(0.5)  # the broker delivers the retained 'offline' on subscribing
    assert _retained(broker.port)[AVAILABILITY] == "offline"
    fresh(_line(t=6.0))
    deadline = time.monotonic() + BOUND_SEC
    while _retained(broker.port)[AVAILABILITY] != "online" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _retained(broker.port)[AVAILABILITY] == "online"
    fresh.close()


def test_foreign_messages_on_the_monitors_topics_never_stop_it(broker, monitor, caplog):
    """Any client may write to these topics: junk is ignored, and an 'offline' from anyone is answered."""
    subscriber = Subscriber(broker.port)
    for payload in (b'{"host": "x"}', b"[1]", b"\xff", b'{"id": 5}'):
        subscriber.client.publish("humwatch/kitchen/instances", payload, qos=1).wait_for_publish(5)
    with caplog.at_level("WARNING", logger="humwatch.mqtt"):
        subscriber.client.publish(AVAILABILITY, "offline", qos=1, retain=True).wait_for_publish(5)
        _online_again(subscriber, caplog)
    assert monitor.connected.is_set() and not monitor.rivals
    subscriber.close()
