"""Record on the Pi (issue 31): the page's own call records a labelled sample from a real `humwatch
live`'s input while it keeps deciding; the sample is listed with its checksum, served (resumably),
deleted; the writes are guarded as relabelling is; a full disk leaves no file and says why."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
import soundfile
from live_process import LiveProcess
from loopback_http import post
from toy_bundle import copy_of_base

from edge.core.files import sha256_file
from edge.core.labels import read_sample_name
from edge.home.page import Refused
from edge.home.samples import Recorder, SampleFolder


def _post(port: int, path: str, body, **headers) -> tuple[int, dict]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return post(port, path, data, {"Content-Type": "application/json", **headers}, timeout=10)


def _get(port: int, path: str, **headers) -> tuple[int, bytes]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers)
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status, response.read()


def _wait(predicate, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (value := predicate()):
            return value
        time.sleep(0.1)
    return predicate()


def test_the_page_records_a_labelled_sample_while_the_monitor_decides(tmp_path):
    relabel = tmp_path / "relabel"
    live = LiveProcess(copy_of_base(tmp_path), tmp_path, ["--clips", str(tmp_path / "clips"), "--relabel-dir",
                                                          str(relabel), "--clips-record-max-sec", "30",
                                                          "--clips-recordings-max", "2"])
    tone = (0.1 * np.sin(2 * np.pi * 440 * np.arange(16_000 * 400) / 16_000)).astype(np.float32)
    feeder = live.feed_in_background(tone, speed=5)
    try:
        assert live.wait_for(lambda lines: len(lines) >= 2), live.stderr_path.read_text()
        good = {"ac": False, "fridge": True, "daypart": "night", "seconds": 9}
        refusals = {
            "unknown field": _post(live.port, "/api/record", {**good, "oven": True}),
            "seconds as text": _post(live.port, "/api/record", {**good, "seconds": "3"}),
            "too long": _post(live.port, "/api/record", {**good, "seconds": 31}),
            "daypart": _post(live.port, "/api/record", {**good, "daypart": "noon"}),
            "not JSON": _post(live.port, "/api/record", b"ac=1"),
            "cross-site": _post(live.port, "/api/record", good, **{"Sec-Fetch-Site": "cross-site"}),
            "form": _post(live.port, "/api/record", good, **{"Content-Type": "text/plain"}),
        }
        assert {what: code for what, (code, _) in refusals.items()} == {
            "unknown field": 400, "seconds as text": 400, "too long": 400, "daypart": 400, "not JSON": 400,
            "cross-site": 403, "form": 415}, refusals
        assert "'oven'" in refusals["unknown field"][1]["error"] and "30" in refusals["too long"][1]["error"]

        before = len(live.lines())
        code, answer = _post(live.port, "/api/record", good)
        assert code == 200, answer
        name = answer["recording"]
        assert _post(live.port, "/api/record", good)[0] == 409  # one at a time
        sample = relabel / name
        assert _wait(sample.exists), live.stderr_path.read_text()
        named = read_sample_name(sample)
        assert named.labels == {"ac": False, "fridge": True} and named.daypart == "night" and named.tag.startswith("rec-")
        audio, rate = soundfile.read(sample, dtype="float32")
        assert rate == 16_000 and len(audio) == 9 * 16_000
        assert np.abs(audio).max() == pytest.approx(0.1, abs=1e-3)  # the input itself
        assert live.wait_for(lambda lines: len(lines) >= before + 6)  # 9 s of audio: 6 hops decided meanwhile
        lines = live.lines()
        assert np.allclose(np.diff([line["t"] for line in lines]), 1.5)  # it kept deciding

        code, second = _post(live.port, "/api/record", {**good, "fridge": False, "seconds": 1})
        assert code == 200 and second["recording"] != name
        assert _wait(lambda: (relabel / second["recording"]).exists())
        full = _post(live.port, "/api/record", good)
        assert full[0] == 507 and "recordings_max" in full[1]["error"]

        listing = json.loads(_get(live.port, "/api/samples")[1])["samples"]
        assert {row["name"]: (row["kind"], row["sha256"], row["pulled"]) for row in listing} == {
            name: ("recording", sha256_file(sample), False),
            second["recording"]: ("recording", sha256_file(relabel / second["recording"]), False)}
        status, whole = _get(live.port, f"/samples/{name}")
        assert status == 200 and whole == sample.read_bytes()
        status, rest = _get(live.port, f"/samples/{name}", Range="bytes=100-")
        assert status == 206 and rest == whole[100:]
        page = json.loads(live.get("/api/page")[1])
        assert page["not_pulled"] == 2 and {row["name"] for row in page["samples"]} == {name, second["recording"]}

        assert _post(live.port, "/api/samples/pulled", {"pulled": {name: sha256_file(sample)}}) == (200, {"marked": 1})
        assert json.loads(live.get("/api/page")[1])["not_pulled"] == 1
        assert _post(live.port, "/api/recordings/delete", {"name": "../lines.jsonl"})[0] == 400
        assert _post(live.port, "/api/recordings/delete", {"name": second["recording"]})[0] == 200
        assert not (relabel / second["recording"]).exists()
    finally:
        returncode, stderr = live.stop()
        feeder.join(5)
    assert returncode == 0, stderr


def test_recording_on_a_full_disk_is_refused_or_leaves_no_file(small_disk):
    folder = SampleFolder(small_disk.path)
    recorder = Recorder(folder, max_sec=60)
    recorder(np.zeros(1600, dtype=np.float32), 16_000)  # the input's rate: 16 kHz
    with pytest.raises(Refused) as refused:
        recorder.start({"ac": True}, "day", seconds=30)  # 1.4 MB at 16 kHz: more than the 256 KB disk
    assert refused.value.status == 507 and "no room" in str(refused.value)

    recorder.start({"ac": True}, "day", seconds=2)  # fits, until the disk fills meanwhile
    small_disk.fill()
    noise = np.random.default_rng(0).standard_normal(16_000 * 2).astype(np.float32) * 0.3
    recorder(noise, 16_000)
    assert _wait(lambda: recorder.last_error is not None)
    assert "the disk is full" in recorder.last_error
    assert not list(small_disk.path.glob("*.flac")) and not list(small_disk.path.glob(".*.tmp"))
    small_disk.free()
    recorder.start({"ac": True}, "day", seconds=2)
    recorder(noise, 16_000)
    assert _wait(lambda: len(list(small_disk.path.glob("*.flac"))) == 1)
