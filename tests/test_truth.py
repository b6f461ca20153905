"""A monitor says only what it heard (issue 29): a silent input and a lost one are states of their
own in every output, a gap neither counts nor resets a run, and a twin never takes the device.

Everything here runs `humwatch live` as a real process fed raw PCM on stdin, with a real MQTT broker
(mosquitto, or amqtt where it is absent) and its HTTP server, as a user runs it.
"""

from __future__ import annotations

import json
import sqlite3
import time

import numpy as np
import pytest
from broker import Subscriber
from live_process import LiveProcess, retained_messages

from edge.core.bundle import load_bundle
from edge.core.hearing import SIGNAL_FLOOR_DBFS, window_level_dbfs
from edge.engine.classifier import Classifier
from edge.engine.detector import Detector
from edge.home.history import current

RATE = 16_000
PINNED = ["--fridge-on", "1", "--fridge-off", "1"]  # the random tiny encoder cannot hear the fridge


def _noise(seconds: float, dbfs: float, seed: int = 0) -> np.ndarray:
    noise = np.random.default_rng(seed).standard_normal(int(seconds * RATE))
    return (noise * 10 ** (dbfs / 20)).astype(np.float32)


@pytest.mark.parametrize("window, heard", [
    (np.zeros(96_000, np.float32), False),  # digital silence
    (np.full(96_000, 2.4e-4, np.float32), False),  # A-law's "zero": a constant offset, no sound
    (_noise(6, SIGNAL_FLOOR_DBFS - 5), False),  # below one step of 16-bit audio
    (_noise(6, SIGNAL_FLOOR_DBFS + 5) + 0.01, True),  # just above the floor, on a DC offset
    (_noise(6, -78), True),  # a quiet room with a quiet microphone: 20 dB under the original recordings
    (np.concatenate([_noise(0.4, -40), np.zeros(int(5.6 * RATE), np.float32)]), False),  # sound back after silence
    (np.concatenate([_noise(5, -40), np.zeros(RATE, np.float32)]), False),  # a second of a camera's zeros
    (_noise(6, -40) * np.tile(np.r_[np.ones(14), np.zeros(2)], 6 * RATE // 16), True),  # brief dropouts: heard
])
def test_the_floor_parts_silence_from_a_quiet_room(bundle_dir, window, heard):
    detector = Detector(Classifier(load_bundle(bundle_dir), "fp32", threads=1))
    line = detector.decide_window(6.0, window)
    assert line.decided is heard, (window_level_dbfs(window, RATE), line)
    if not heard:
        assert line.status == line.debounced_status == "no-signal" and not line.probabilities and not line.running
        assert line.to_json()["level_dbfs"] == round(window_level_dbfs(window, RATE), 1) and "below the -90 dBFS floor" in line.reason


def test_batch_says_no_signal_for_a_silent_file_and_skips_silent_windows(bundle_dir, off_then_ac, tmp_path):
    import soundfile

    detector = Detector.from_bundle(bundle_dir, hop=None)
    silent, half = tmp_path / "silent.wav", tmp_path / "half.wav"
    soundfile.write(silent, np.zeros(RATE * 12, np.float32), RATE)
    soundfile.write(half, np.concatenate([off_then_ac[0][: RATE * 12], np.zeros(RATE * 12, np.float32)]), RATE)
    line = detector.classify_file(silent).to_json()
    assert (line["status"], line["windows"], line["no_signal_windows"]) == ("no-signal", 0, 5)
    assert "p_ac" not in line and "digital silence" in line["reason"]
    half = detector.classify_file(half)
    # only the 5 windows that end within the sound are decided: a window with a silent second is not heard whole
    assert half.status != "no-signal" and (half.windows, half.no_signal_windows) == (5, 8)


@pytest.fixture
def kitchen(bundle_dir, broker, tmp_path):
    """A monitor named Kitchen with a history, MQTT and HTTP; (process, history path)."""
    history = tmp_path / "history.sqlite"
    live = LiveProcess(bundle_dir, tmp_path, ["--name", "Kitchen", "--mqtt", f"mqtt://127.0.0.1:{broker.port}",
                                              "--history", str(history), *PINNED])
    yield live, history
    live.stop()


def test_digital_silence_is_no_signal_in_every_output_and_a_quiet_room_is_still_off(kitchen, broker, off_then_ac):
    live, history = kitchen
    off = off_then_ac[0]
    live.feed(off[: RATE * 12], speed=4)
    assert live.wait_for(lambda lines: any(line.get("status") == "both-off" for line in lines))
    feeder = live.feed_in_background(np.zeros(RATE * 30, np.float32), speed=2)  # a muted microphone: 15 s
    assert live.wait_for(lambda lines: sum(line.get("status") == "no-signal" for line in lines) >= 4)

    lines = [line for line in live.lines() if "t" in line]
    first = next(index for index, line in enumerate(lines) if line["status"] == "no-signal")
    assert all(line["status"] == "no-signal" for line in lines[first:]), "nothing decided from silence"
    said = lines[first]
    assert said["changed"] is True and said["debounced_status"] == "no-signal" and said["level_dbfs"] == -150.0
    assert "digital silence" in said["reason"] and not any(key.startswith(("p_", "median_")) for key in said)
    code, health = live.get("/healthz")
    assert code == 503 and json.loads(health)["reason"].startswith(
        "Kitchen: standard input (f32le:16000:1): no signal: the input carries digital silence"), health
    page = json.loads(live.get("/api/page")[1])
    assert page["state"] == "no-signal" and "digital silence" in page["reason"]
    assert all(row["running"] is None and 'class="unheard"' in row["chart"] for row in page["appliances"])
    assert all('class="gap-no-signal"' in row["timeline"] for row in page["appliances"])
    assert json.loads(live.get("/state")[1])["status"] == "no-signal"
    assert 'humwatch_input{state="no-signal"} 1' in live.get("/metrics")[1]
    retained = retained_messages(broker.port)
    heard = json.loads(retained["humwatch/kitchen/input"])
    assert heard["state"] == "no-signal" and "digital silence" in heard["reason"] and heard["since"]
    assert retained["humwatch/kitchen/state"] == "no-signal" and retained["humwatch/kitchen/availability"] == "online"
    assert json.loads(retained["humwatch/kitchen/attributes"])["debounced_status"] == "both-off", "the last decision"
    with sqlite3.connect(history) as connection:
        gaps = connection.execute("SELECT reason, ended - started FROM gaps").fetchall()
        segment_end = connection.execute("SELECT MAX(ended) FROM segments").fetchone()[0]
        gap_start = connection.execute("SELECT MIN(started) FROM gaps").fetchone()[0]
    assert [reason for reason, _ in gaps] == ["no-signal"] and gaps[0][1] > 0 and segment_end < gap_start
    feeder.join(30)

    live.feed((off * 0.1)[: RATE * 12], speed=4)  # a quiet room through a quiet microphone: -78 dBFS
    assert live.wait_for(lambda lines: lines and lines[-1].get("status") == "both-off"), live.lines()[-3:]
    after = [line for line in live.lines() if "t" in line][len(lines):]
    back = next(line for line in after if line["status"] != "no-signal")
    assert back["changed"] is True and back["debounced_status"] == "both-off", "decided afresh, not a stale state"
    assert json.loads(live.get("/healthz")[1])["ok"] is True
    deadline = time.monotonic() + 10
    while json.loads(retained_messages(broker.port)["humwatch/kitchen/input"]) != {"state": "ok"}:
        assert time.monotonic() < deadline, "the input never said ok again"


def test_a_paused_pipe_is_waited_on_its_audio_decided_and_the_run_goes_on_across_the_gap(kitchen, broker, off_then_ac):
    live, history = kitchen
    ac = off_then_ac[1]
    subscriber = Subscriber(broker.port)
    live.feed(ac[: RATE * 12], speed=4)
    assert live.wait_for(lambda lines: any(line.get("ac_running") for line in lines))
    paused = time.monotonic()
    assert subscriber.wait(lambda t, p, r: t == "humwatch/kitchen/input" and json.loads(p)["state"] == "no-audio",
                           timeout=20), "Home Assistant is told the input is lost"
    unavailable_after = time.monotonic() - paused
    code, health = live.get("/healthz")
    assert code == 503 and "Kitchen: standard input (f32le:16000:1): no audio" in json.loads(health)["reason"]
    time.sleep(3)
    live.feed(ac[RATE * 12:], speed=4)  # the rest of the recording after a 16-s pause
    assert live.wait_for(lambda lines: lines[-1].get("t", 0) >= 24.0)
    assert subscriber.wait(lambda t, p, r: t == "humwatch/kitchen/input" and json.loads(p) == {"state": "ok"}, timeout=20)
    lines = [line for line in live.lines() if "t" in line]
    decided = [line["t"] for line in lines if line["status"] != "no-audio"]
    assert decided == [6.0 + 1.5 * index for index in range(13)], "every second that arrived is decided, none thrown away"
    assert any(line["status"] == "no-audio" for line in lines) and lines[-1]["dropped_sec"] == 0
    assert unavailable_after < 10 + 2 * 1.5 + 2, f"unavailable {unavailable_after:.1f} s after the feed stopped"
    assert "humwatch_dropped_audio_seconds_total 0" in live.get("/metrics")[1]
    with sqlite3.connect(history) as connection:
        kinds = [kind for (kind,) in connection.execute("SELECT kind FROM changes WHERE appliance = 'ac' ORDER BY id")]
        (began,), = connection.execute("SELECT wall FROM changes WHERE appliance = 'ac' AND kind != 'same' "
                                       "ORDER BY id DESC LIMIT 1")
        segments = connection.execute("SELECT started, ended FROM segments ORDER BY id").fetchall()
        running, heard = current(connection, "ac")
    assert kinds[-1] == "same" and len(segments) == 2, "after the gap the AC's run goes on"
    (_, before_end), (after_start, after_end) = segments
    assert running and heard == pytest.approx((before_end - began) + (after_end - after_start))
    assert heard > after_end - after_start, "the gap did not restart the run's clock"
    subscriber.close()


def _configs(port: int) -> dict[str, str]:
    """The retained discovery configs: what Home Assistant builds the device from."""
    return {topic: payload for topic, payload in retained_messages(port).items() if topic.startswith("homeassistant/")}


def test_a_twin_never_takes_the_running_monitors_device_and_home_assistant_gets_it_back(bundle_dir, broker, tmp_path):
    """`humwatch live --name Kitchen` tried in a terminal while the service (with its statistics) runs."""
    url, room = f"mqtt://127.0.0.1:{broker.port}", _noise(120, -58)
    service = LiveProcess(bundle_dir, tmp_path, ["--name", "Kitchen", "--mqtt", url, "--history", str(tmp_path / "h.sqlite"),
                                                 "--watts", "ac=1200,fridge=150", "--alarm", "fridge-run-max=90m", *PINNED],
                          name="service")
    twin = None
    try:
        service.feed_in_background(room, speed=1)
        deadline = time.monotonic() + 60
        while len(_configs(broker.port)) < 15:  # state, 2 running, input, 2 x 4 statistics, 2 energy, 1 alarm
            assert time.monotonic() < deadline, sorted(_configs(broker.port))
            time.sleep(0.5)
        before = _configs(broker.port)
        twin = LiveProcess(bundle_dir, tmp_path, ["--name", "Kitchen", "--mqtt", url, *PINNED], name="twin")
        twin.feed_in_background(room, speed=1)
        deadline = time.monotonic() + 60
        while "publishes nothing there" not in twin.stderr_path.read_text():
            assert time.monotonic() < deadline, twin.stderr_path.read_text()
            time.sleep(0.2)
        assert twin.wait_for(lambda lines: len(lines) >= 3), "the twin decides all the same"
        code, health = twin.get("/healthz")
        assert code == 503 and "holds humwatch/kitchen; this monitor publishes nothing there" in json.loads(health)["reason"]
        time.sleep(3)  # past the time the twin would have claimed the id
        assert _configs(broker.port) == before, "not one of the service's entities removed or overwritten"

        birth = Subscriber(broker.port)  # Home Assistant restarts: its birth message asks for everything again
        birth.client.publish("homeassistant/status", "online", qos=1).wait_for_publish(5)
        assert birth.wait(lambda t, p, r: t == "homeassistant/sensor/humwatch_kitchen/fridge_energy_today_kwh/config"
                          and not r and p), "the discovery is sent again"
        assert birth.wait(lambda t, p, r: t == "humwatch/kitchen/availability" and not r and p == "online")
        birth.close()

        assert service.stop()[0] == 0  # the service stops: now, and only now, the twin takes the id
        deadline = time.monotonic() + 30
        while len(_configs(broker.port)) != 4:  # state, 2 running, input: the statistics it lacks are removed
            assert time.monotonic() < deadline, sorted(_configs(broker.port))
            time.sleep(0.5)
        assert "asking for the id again" in twin.stderr_path.read_text()
        assert json.loads(twin.get("/healthz")[1])["ok"] is True
    finally:
        service.stop()
        if twin is not None:
            twin.stop()


@pytest.mark.rtsp
def test_a_lost_camera_goes_unavailable_in_home_assistant_and_comes_back(bundle_dir, broker, tmp_path):
    import soundfile
    from rtsp_server import RtspServer

    wav = tmp_path / "room.wav"
    soundfile.write(wav, _noise(600, -50), RATE)
    server = RtspServer(wav, "aac").start()
    subscriber = Subscriber(broker.port)
    live = LiveProcess(bundle_dir, tmp_path, ["--name", "Kitchen", "--mqtt", f"mqtt://127.0.0.1:{broker.port}", *PINNED],
                       source=("--source", server.url()))
    try:
        assert subscriber.wait(lambda t, p, r: t == "humwatch/kitchen/input" and json.loads(p) == {"state": "ok"}, 60)
        server.kill()
        lost = time.monotonic()
        assert subscriber.wait(lambda t, p, r: t == "humwatch/kitchen/input" and json.loads(p)["state"] == "no-audio", 30)
        unavailable_after = time.monotonic() - lost
        assert unavailable_after < 10, f"the camera's loss took {unavailable_after:.1f} s to reach Home Assistant"
        code, health = live.get("/healthz")
        assert code == 503 and json.loads(health)["reason"].startswith(f"Kitchen: {server.url()}: lost")
        assert subscriber.wait(lambda t, p, r: t == "humwatch/kitchen/state" and p == "no-audio", 5), "and says why"
        time.sleep(5)
        assert live.get("/healthz")[0] == 503 and server.url() in json.loads(live.get("/healthz")[1])["reason"]
        server.start()
        back = time.monotonic()
        count = len(subscriber.payloads("humwatch/kitchen/input"))
        assert subscriber.wait(lambda t, p, r: t == "humwatch/kitchen/input" and json.loads(p) == {"state": "ok"}
                               and len(subscriber.payloads("humwatch/kitchen/input")) > count, 60)
        assert time.monotonic() - back < 10 + 6 + 3, "available again once a window of the camera is decided"
    finally:
        live.stop()
        server.kill()
        subscriber.close()
