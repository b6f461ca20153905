"""Home integration: MQTT against a real broker (mosquitto or amqtt), the HTTP endpoint, clips of every change."""

import json
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt
import pytest
import soundfile

from broker import Broker, free_port
from conftest import read_16k, REPO
from edge.core.bundle import load_bundle
from edge.home.clips import ClipWriter
from edge.home.http_status import StatusServer, parse_listen
from edge.core.labels import AC_ON
from edge.home.mqtt import MqttPublisher, MqttSettings
from edge.monitor.hop import HopLine
from test_live import FakeSource, Harness

@pytest.fixture
def broker(tmp_path):
    running = Broker(tmp_path).start()
    yield running
    running.stop()


class Subscriber:
    """A paho client that records every message on humwatch/# and homeassistant/#."""

    def __init__(self, port: int) -> None:
        self.messages: list[tuple[str, str, bool]] = []
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        self.client.on_message = lambda c, u, m: self.messages.append((m.topic, m.payload.decode(), bool(m.retain)))
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe([("humwatch/#", 1), ("homeassistant/#", 1)])
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def wait(self, predicate, timeout: float = 20.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(predicate(*message) for message in list(self.messages)):
                return True
            time.sleep(0.05)
        return False

    def payloads(self, topic: str) -> list[str]:
        return [payload for t, payload, _ in list(self.messages) if t == topic]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture(scope="module")
def off_then_ac(project):
    """24 s of both-off, then 24 s of AC, at 16 kHz."""
    off = read_16k(project / "samples" / "ac-off-fridge-off-night.m4a")
    on = read_16k(project / "samples" / "ac-on-fridge-off-night.m4a")
    return off[: 16_000 * 24], on[: 16_000 * 24]


def _pinned(bundle_dir):
    """The bundle's decision with the fridge detector off: the random tiny encoder cannot hear it."""
    return load_bundle(bundle_dir).decision.replace(fridge_on=1.0, fridge_off=1.0)


FILE_SOURCE = """
import sys, threading, time
import soundfile

class FileSource:  # stands in for the microphone: plays the WAV in argv[1] at 10x real time
    def __init__(self, device=None):
        pass
    def start(self, callback):
        audio, rate = soundfile.read(sys.argv[1], dtype="float32")
        def feed():
            for i in range(0, len(audio), 1600):
                callback(audio[i : i + 1600], False)
                time.sleep(0.01)
        threading.Thread(target=feed, daemon=True).start()
        return rate
    def stop(self):
        pass
"""

MONITOR_SCRIPT = FILE_SOURCE + """
from edge.core.bundle import load_bundle
from edge.monitor.live import LiveMonitor
from edge.home.mqtt import MqttPublisher, MqttSettings
from edge.monitor.runtime import Classifier

bundle = load_bundle(sys.argv[2])
publisher = MqttPublisher(MqttSettings.from_url(f"mqtt://127.0.0.1:{sys.argv[3]}", device_id="test", heartbeat_sec=1))
publisher.start()
monitor = LiveMonitor(Classifier(bundle, "fp32", threads=1), bundle.decision, FileSource(), publisher,
                      max_lag_sec=1000, stall_timeout_sec=1000)
monitor.run()
"""


def test_mqtt_discovery_state_attributes_and_last_will(bundle_dir, broker, off_then_ac, tmp_path):
    wav = tmp_path / "ac.wav"
    soundfile.write(wav, off_then_ac[1], 16_000)
    subscriber = Subscriber(broker.port)
    monitor = subprocess.Popen([sys.executable, "-c", MONITOR_SCRIPT, str(wav), str(bundle_dir), str(broker.port)],
                               cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert subscriber.wait(lambda t, p, r: t == "humwatch/test/state"), "no state published"
        assert subscriber.wait(lambda t, p, r: t == "humwatch/test/attributes")
    finally:
        monitor.send_signal(signal.SIGKILL)  # killed, not stopped: the broker must send the last will
        monitor.wait(10)
    assert subscriber.wait(lambda t, p, r: t == "humwatch/test/availability" and p == "offline"), "no last will"
    assert "online" in subscriber.payloads("humwatch/test/availability")
    attributes = json.loads(subscriber.payloads("humwatch/test/attributes")[-1])
    assert {"p_ac", "p_fridge", "median_ac", "median_fridge", "infer_ms", "dropped_sec", "overflows", "ac_on"} <= set(attributes)
    subscriber.close()

    late = Subscriber(broker.port)  # joins after the fact: sees only what the broker retained
    assert late.wait(lambda t, p, r: t == "humwatch/test/state" and r and p == AC_ON)
    configs = {t: json.loads(p) for t, p, r in late.messages if t.startswith("homeassistant/") and r}
    assert set(configs) == {"homeassistant/sensor/humwatch_test/state/config",
                            "homeassistant/binary_sensor/humwatch_test/ac/config",
                            "homeassistant/binary_sensor/humwatch_test/fridge/config"}
    enum = configs["homeassistant/sensor/humwatch_test/state/config"]
    assert enum["device_class"] == "enum" and enum["options"] == ["ac-on", "fridge-on", "both-off"]
    assert enum["state_topic"] == "humwatch/test/state" and enum["availability_topic"] == "humwatch/test/availability"
    assert len({json.dumps(c["device"]) for c in configs.values()}) == 1, "all three entities share one device"
    assert late.payloads("humwatch/test/availability")[-1] == "offline"
    late.close()


def test_broker_outage_keeps_deciding_and_sends_the_latest_state_on_return(bundle_dir, broker, off_then_ac, caplog):
    off, on = off_then_ac
    publisher = MqttPublisher(MqttSettings.from_url(f"mqtt://127.0.0.1:{broker.port}", device_id="outage"))
    publisher.start()
    assert publisher.connected.wait(10)
    source = FakeSource()
    with caplog.at_level("WARNING", logger="humwatch.mqtt"), \
            Harness(bundle_dir, source, sinks=[publisher], decision=_pinned(bundle_dir), max_lag_sec=100.0) as harness:
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
        broker.start()
        subscriber = Subscriber(broker.port)
        assert subscriber.wait(lambda t, p, r: t == "humwatch/outage/state" and p == AC_ON, timeout=30)
        subscriber.close()
    publisher.close()
    assert "disconnected" in caplog.text and "keeping only the latest state" in caplog.text


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def test_http_state_healthz_and_metrics(bundle_dir, off_then_ac):
    source = FakeSource()
    harness = Harness(bundle_dir, source, max_lag_sec=100.0, stall_timeout_sec=1.0)
    server = StatusServer(harness.monitor, "127.0.0.1", 0)
    harness.sinks.append(server)
    server.start()
    base = "http://%s:%d" % server.address
    try:
        assert _get(base + "/state")[0] == 503
        code, body = _get(base + "/healthz")
        assert code == 503 and json.loads(body)["reason"] == "no audio received yet"
        with harness:
            source.feed(off_then_ac[1][: 16_000 * 9])
            lines = harness.wait_for(3)
            code, body = _get(base + "/state")
            assert code == 200 and json.loads(body) == harness.monitor.last_line.to_json()
            code, body = _get(base + "/healthz")
            assert code == 200 and json.loads(body)["ok"] is True
            code, metrics = _get(base + "/metrics")
            assert code == 200
            assert "humwatch_inference_seconds_count 3" in metrics
            assert 'humwatch_inference_seconds_bucket{le="+Inf"} 3' in metrics
            assert f'humwatch_state{{state="{lines[-1].debounced_status}"}} 1' in metrics
            assert "humwatch_input_overflows_total 0" in metrics and "humwatch_uptime_seconds" in metrics
            time.sleep(1.3)  # the audio stops: unhealthy
            code, body = _get(base + "/healthz")
            assert code == 503 and json.loads(body)["reason"].startswith("no audio for")
        assert _get(base + "/nope")[0] == 404
    finally:
        server.close()


def test_http_listen_address_parsing():
    assert parse_listen("8321") == ("127.0.0.1", 8321)
    assert parse_listen("0.0.0.0:8080") == ("0.0.0.0", 8080)
    with pytest.raises(ValueError, match="expected PORT or HOST:PORT"):
        parse_listen("localhost")


def test_a_state_change_writes_one_clip_matching_the_source(bundle_dir, off_then_ac, tmp_path):
    off, on = off_then_ac
    source = FakeSource()
    clips_dir = tmp_path / "clips"
    holder = {}
    writer = ClipWriter(clips_dir, lambda: holder["monitor"].recent_audio(), 16_000, seconds=20.0, max_mb=100)
    with Harness(bundle_dir, source, sinks=[writer], decision=_pinned(bundle_dir), max_lag_sec=100.0) as harness:
        holder["monitor"] = harness.monitor
        source.feed(off)
        source.feed(on)
        lines = harness.wait_for(29)
    changes = [line for previous, line in zip(lines, lines[1:]) if line.debounced_status != previous.debounced_status]
    assert len(changes) == 1 and changes[0].debounced_status == AC_ON
    flacs, sidecars = sorted(clips_dir.glob("*.flac")), sorted(clips_dir.glob("*.json"))
    assert len(flacs) == 1 and len(sidecars) == 1 and flacs[0].stem == sidecars[0].stem
    sidecar = json.loads(sidecars[0].read_text())
    assert sidecar["new_state"] == AC_ON and sidecar["old_state"] == lines[0].debounced_status
    assert sidecar["t"] == changes[0].t and {"p_ac", "p_fridge", "time"} <= set(sidecar)
    clip, rate = soundfile.read(flacs[0], dtype="float32")
    source_audio = np.concatenate([off, on])
    end = int(round(changes[0].t * 16_000))
    assert rate == 16_000 and len(clip) == 20 * 16_000
    assert np.max(np.abs(clip - source_audio[end - len(clip) : end])) < 1e-6


def test_clip_directory_stays_under_its_bound(tmp_path):
    audio = (np.random.default_rng(0).standard_normal(16_000 * 20) * 0.1).astype(np.float32)
    writer = ClipWriter(tmp_path, lambda: audio, 16_000, seconds=20.0, max_mb=2.5)
    written = []
    for index, state in enumerate(["both-off", "ac-on", "both-off", "ac-on", "fridge-on", "both-off"]):
        writer(HopLine(t=6.0 + index, status=state, debounced_status=state, changed=True, p_ac=0.5, p_fridge=0.5,
                       median_ac=0.5, median_fridge=0.5, ac_on=False, fridge_on=False, infer_ms=1.0))
        written.extend(sorted(tmp_path.glob("*.flac"))[-1:])
    remaining = sorted(tmp_path.glob("*.flac"))
    assert len(written) == 5 and 0 < len(remaining) < 5
    assert remaining == written[-len(remaining):], "the oldest went first"
    assert sum(p.stat().st_size for p in tmp_path.iterdir()) <= 2.5e6
    assert all(p.with_suffix(".json").is_file() for p in remaining)
    assert len(list(tmp_path.glob("*.json"))) == len(remaining)


LIVE_COMMAND_SCRIPT = FILE_SOURCE + """
import edge.monitor.live
edge.monitor.live.SoundDeviceSource = FileSource
from edge.cli import main
main(sys.argv[2:])
"""


def test_live_command_serves_writes_and_stops_cleanly_on_sigterm(bundle_dir, off_then_ac, tmp_path):
    wav = tmp_path / "room.wav"
    soundfile.write(wav, np.concatenate(off_then_ac), 16_000)
    output, clips, port = tmp_path / "states.jsonl", tmp_path / "clips", free_port()
    process = subprocess.Popen(
        [sys.executable, "-c", LIVE_COMMAND_SCRIPT, str(wav), "live", "--bundle", str(bundle_dir), "--output", str(output),
         "--http", str(port), "--clips", str(clips), "--fridge-on", "1.0", "--fridge-off", "1.0"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while (not output.exists() or len(output.read_text().splitlines()) < 29) and time.monotonic() < deadline:
            time.sleep(0.1)
        code, body = _get(f"http://127.0.0.1:{port}/state")
        assert code == 200 and json.loads(body)["t"] >= 48.0
    finally:
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=20)
    assert process.returncode == 0, stderr
    assert "stopped" in stderr
    written = [json.loads(line) for line in output.read_text().splitlines()]
    assert len(written) == 29 and written == [json.loads(line) for line in stdout.splitlines()]
    assert written[-1]["debounced_status"] == AC_ON
    assert len(list(clips.glob("*.flac"))) == 1


def test_mqtt_settings_from_url_never_show_the_password():
    settings = MqttSettings.from_url("mqtts://ha:s%40cret@broker.lan", device_id="kitchen")
    assert (settings.host, settings.port, settings.tls) == ("broker.lan", 8883, True)
    assert (settings.username, settings.password) == ("ha", "s@cret")
    assert "s@cret" not in repr(settings) and settings.base_topic == "humwatch/kitchen"
    assert MqttSettings.from_url("mqtt://ha:x@b", username="other", password="y").username == "other"
    assert MqttSettings.from_url("mqtt://broker").port == 1883
    with pytest.raises(ValueError, match="expected mqtt://HOST"):
        MqttSettings.from_url("http://broker")
