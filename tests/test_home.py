"""Home integration: the HTTP endpoint, clips of every change, the live command end to end."""

import json
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
import soundfile
from broker import free_port
from conftest import FILE_SOURCE, REPO, pinned_decision
from test_live import FakeSource, Harness

from edge.core.labels import AC_ON
from edge.engine.hop import HopLine
from edge.home.clips import ClipWriter
from edge.home.http_status import StatusServer, parse_listen


def hop_line(t: float, state: str = "both-off", probabilities: dict | None = None, running: dict | None = None,
             **fields) -> HopLine:
    """A hop's line for these appliances (default: the seed's, both at 0.5 and off): probabilities,
    medians and detectors per appliance; `running` defaults to every appliance off."""
    probabilities = probabilities or {"ac": 0.5, "fridge": 0.5}
    running = running or dict.fromkeys(probabilities, False)
    return HopLine(t=t, status=state, debounced_status=state, changed=True, medians=dict(probabilities), on=dict(running),
                   running=running, probabilities=probabilities, infer_ms=1.0, **fields)


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
        assert code == 503 and json.loads(body)["reason"] == "the audio source: no audio received yet"
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
            series = [row.split(" ")[0] for row in metrics.splitlines() if row.startswith(("humwatch_state", "humwatch_prob"))]
            assert series == ['humwatch_state{state="ac-on"}', 'humwatch_state{state="fridge-on"}', 'humwatch_state{state="both-off"}',
                              'humwatch_probability{label="ac"}', 'humwatch_probability{label="fridge"}'], "the seed's series"
            assert "humwatch_input_overflows_total 0" in metrics and "humwatch_uptime_seconds" in metrics
            time.sleep(1.3)  # the audio stops: unhealthy
            code, body = _get(base + "/healthz")
            assert code == 503 and json.loads(body)["reason"].startswith("the audio source: lost (no audio for 1 s)")
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
    with Harness(bundle_dir, source, sinks=[writer], decision=pinned_decision(bundle_dir), max_lag_sec=100.0) as harness:
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
    assert sidecar["t"] == changes[0].t and list(sidecar) == ["time", "t", "old_state", "new_state", "duration_sec",
                                                              "sample_rate", "p_ac", "p_fridge", "median_ac", "median_fridge"]
    assert (sidecar["p_ac"], sidecar["median_fridge"]) == (changes[0].probabilities["ac"], changes[0].medians["fridge"])
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
        writer(hop_line(6.0 + index, state))
        written.extend(sorted(tmp_path.glob("*.flac"))[-1:])
    remaining = sorted(tmp_path.glob("*.flac"))
    assert len(written) == 5 and 0 < len(remaining) < 5
    assert remaining == written[-len(remaining):], "the oldest went first"
    assert sum(p.stat().st_size for p in tmp_path.iterdir()) <= 2.5e6
    assert all(p.with_suffix(".json").is_file() for p in remaining)
    assert len(list(tmp_path.glob("*.json"))) == len(remaining)


LIVE_COMMAND_SCRIPT = FILE_SOURCE + """
import edge.monitor.sources
edge.monitor.sources.SoundDeviceSource = FileSource
from edge.cli import main
main(sys.argv[2:])
"""


def test_live_command_serves_writes_and_stops_cleanly_on_sigterm(bundle_dir, off_then_ac, tmp_path):
    wav = tmp_path / "room.wav"
    soundfile.write(wav, np.concatenate(off_then_ac), 16_000)
    output, clips, port = tmp_path / "states.jsonl", tmp_path / "clips", free_port()
    process = subprocess.Popen(
        [sys.executable, "-c", LIVE_COMMAND_SCRIPT, str(wav), "live", "--bundle", str(bundle_dir), "--hop", "1.5", "--output", str(output),
         "--history", str(tmp_path / "history.sqlite"), "--alarm", "ac-run-max=0.5s",
         "--http", str(port), "--clips", str(clips), "--fridge-on", "1.0", "--fridge-off", "1.0"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while (not output.exists() or output.read_text().count('"t": ') < 29) and time.monotonic() < deadline:
            time.sleep(0.1)
        code, body = _get(f"http://127.0.0.1:{port}/state")
        assert code == 200 and json.loads(body)["t"] >= 48.0
    finally:
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=20)
    assert process.returncode == 0, stderr
    assert "stopped" in stderr
    written = [json.loads(line) for line in output.read_text().splitlines()]
    assert written == [json.loads(line) for line in stdout.splitlines()]
    alarms = [line for line in written if line.get("event") == "alarm"]
    hops = [line for line in written if "event" not in line]
    assert len(hops) == 29 and hops[-1]["debounced_status"] == AC_ON
    assert [(a["alarm"], a["state"]) for a in alarms] == [("ac-run-max", "raised")], "the AC ran longer than 0.5 s (wall clock; the audio plays at 10x)"
    history = sqlite3.connect(tmp_path / "history.sqlite")
    assert history.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert history.execute("SELECT appliance, running FROM changes ORDER BY id").fetchall() == [
        ("ac", 0), ("fridge", 0), ("ac", 1)]
    assert len(list(clips.glob("*.flac"))) == 1
