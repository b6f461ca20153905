"""The live monitor's outputs on a full disk: --output never holds half a line, clips are whole or
absent, nothing already written is lost, /healthz names what cannot be written; a refused monitor
creates no --output file."""

import dataclasses
import errno
import json
import os

import numpy as np
import pytest
import soundfile
from click.testing import CliRunner
from conftest import pinned_decision
from test_home import hop_line
from test_live import FakeSource, Harness, eventually

from edge.cli import main
from edge.core import output
from edge.core.output import JsonLinesFile, LinePrinter
from edge.home.clips import ClipWriter


def _full_disk(fd, data):
    raise OSError(errno.ENOSPC, "No space left on device")


def _records(path) -> list[dict]:
    text = path.read_text()
    assert text == "" or text.endswith("\n"), "the file ends with a complete line"
    return [json.loads(line) for line in text.splitlines()]


def test_a_failed_write_leaves_only_complete_lines_and_the_line_waits(tmp_path, monkeypatch):
    path = tmp_path / "states.jsonl"
    lines = JsonLinesFile(path)
    lines.write({"t": 1.0})
    real_write, room = os.write, [40]

    def filling_disk(fd, data):  # writes what fits, then the disk is full
        if room[0] <= 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        written = real_write(fd, data[: room[0]])
        room[0] -= written
        return written

    monkeypatch.setattr(output.os, "write", filling_disk)
    for t in (2.0, 3.0):
        with pytest.raises(OSError) as raised:
            lines.write({"t": t, "status": "ac-on", "debounced_status": "ac-on"})
        assert raised.value.errno == errno.ENOSPC
        assert _records(path) == [{"t": 1.0}], "half a line was truncated away; the line before it stays"
    assert str(path) in str(raised.value) and "disk full" in str(raised.value) and "2 lines wait" in str(raised.value)
    monkeypatch.setattr(output.os, "write", real_write)
    lines.write({"t": 4.0})
    assert [r["t"] for r in _records(path)] == [1.0, 2.0, 3.0, 4.0], "the waiting lines went first, in order"
    lines.close()


def test_lines_waiting_beyond_the_bound_are_given_up_and_counted(tmp_path, monkeypatch):
    monkeypatch.setattr(output, "MAX_WAITING_LINES", 3)
    lines = JsonLinesFile(tmp_path / "states.jsonl")
    monkeypatch.setattr(output.os, "write", _full_disk)
    for t in range(5):
        with pytest.raises(OSError) as raised:
            lines.write({"t": t})
    assert "3 lines wait to be written, 2 given up" in str(raised.value)
    monkeypatch.undo()
    lines.flush()
    assert [r["t"] for r in _records(tmp_path / "states.jsonl")] == [2, 3, 4]


def test_an_event_line_while_the_disk_is_full_waits_for_the_next_hop(tmp_path, monkeypatch, capsys):
    printer = LinePrinter(only_changes=True)
    printer.append_to(tmp_path / "states.jsonl")
    monkeypatch.setattr(output.os, "write", _full_disk)
    printer.event({"event": "alarm", "alarm": "ac-run-max", "state": "raised"})  # never raises into the history's sink
    with pytest.raises(OSError, match="1 lines wait"):
        printer(dataclasses.replace(hop_line(6.0), changed=False))  # not printed, but the waiting line is retried
    monkeypatch.undo()
    printer(dataclasses.replace(hop_line(7.5), changed=False))
    assert _records(tmp_path / "states.jsonl") == [{"event": "alarm", "alarm": "ac-run-max", "state": "raised"}]
    assert capsys.readouterr().out.count('"event": "alarm"') == 1
    printer.close()


def test_output_on_a_real_full_disk_keeps_every_line_whole_and_in_order(small_disk):
    path = small_disk.path / "states.jsonl"
    lines = JsonLinesFile(path)
    for t in range(50):
        lines.write({"t": float(t), "status": "both-off"})
    small_disk.fill()
    errors, t = [], 50
    while len(errors) < 5 and t < 500:  # the file's last page may hold a few more lines first
        try:
            lines.write({"t": float(t), "status": "both-off"})
        except OSError as error:
            errors.append(error)
        assert [r["t"] for r in _records(path)] == [float(t) for t in range(len(_records(path)))], "whole lines, in order"
        t += 1
    assert len(errors) == 5 and all(error.errno == errno.ENOSPC for error in errors)
    assert f"--output {path}: No space left on device (disk full); 5 lines wait to be written" in str(errors[-1])
    assert len(_records(path)) >= 50, "nothing written before is lost"
    small_disk.free()
    lines.write({"t": float(t)})
    assert [r["t"] for r in _records(path)] == [float(t) for t in range(t + 1)]
    lines.close()


def test_clips_on_a_full_disk_leave_no_partial_file_and_are_written_once_there_is_room(small_disk):
    audio = (np.random.default_rng(0).standard_normal(16_000 * 2) * 0.1).astype(np.float32)  # noise: FLAC cannot shrink it
    clips = small_disk.path / "clips"
    writer = ClipWriter(clips, lambda: audio, 16_000, seconds=2.0)
    writer(hop_line(6.0, "both-off"))
    small_disk.fill()
    with pytest.raises(OSError) as raised:
        writer(hop_line(7.5, "ac-on"))
    assert f"--clips {clips}:" in str(raised.value) and "disk full" in str(raised.value)
    assert "1 clips wait to be written" in str(raised.value)
    assert sorted(p.name for p in clips.iterdir()) == [], "no partial FLAC, sidecar or temporary file"
    with pytest.raises(OSError):
        writer(hop_line(9.0, "ac-on"))  # retried on the next hop, still no room
    small_disk.free()
    writer(hop_line(10.5, "ac-on"))
    flacs = sorted(clips.glob("*.flac"))
    assert len(flacs) == 1 and "-t0000007.5-both-off-to-ac-on" in flacs[0].name
    assert json.loads(flacs[0].with_suffix(".json").read_text())["t"] == 7.5
    assert np.allclose(soundfile.read(flacs[0], dtype="float32")[0], audio, atol=1e-6)
    assert len(list(clips.iterdir())) == 2


def _quiet_room(seconds: float) -> np.ndarray:
    """A quiet room at -60 dBFS (digital silence would be no-signal, not a decision)."""
    return (np.random.default_rng(3).standard_normal(int(16_000 * seconds)) * 1e-3).astype(np.float32)


def test_a_monitor_with_a_full_output_says_so_and_loses_no_line(bundle_dir, small_disk):
    small_disk.fill()  # before the file has a page of its own to fill
    printer = LinePrinter(only_changes=False)
    printer.append_to(small_disk.path / "states.jsonl")
    source = FakeSource()
    with Harness(bundle_dir, source, decision=pinned_decision(bundle_dir), max_lag_sec=100.0) as harness:
        harness.monitor.outputs.add(printer, "--output")
        source.feed(_quiet_room(9))
        assert eventually(lambda: "cannot write --output" in harness.monitor.health().reason)
        reason = harness.monitor.health().reason
        small_disk.free()
        source.feed(_quiet_room(3))
        lines = harness.wait_for(5)
        assert eventually(lambda: harness.monitor.health().ok)
    printer.close()
    assert f"cannot write --output {small_disk.path / 'states.jsonl'}: No space left on device (disk full)" in reason
    assert [r["t"] for r in _records(small_disk.path / "states.jsonl")] == [line.t for line in lines] == [6.0, 7.5, 9.0, 10.5, 12.0]


def test_a_refused_second_monitor_creates_no_output_file(bundle_dir, tmp_path, monkeypatch):
    from edge.home.history import History
    from edge.monitor import sources

    monkeypatch.setattr(sources, "SoundDeviceSource", lambda device=None: FakeSource())
    history = History(tmp_path / "history.sqlite")  # the first monitor holds it
    try:
        result = CliRunner().invoke(main, ["live", "--bundle", str(bundle_dir), "--hop", "1.5", "--history",
                                           str(tmp_path / "history.sqlite"), "--output", str(tmp_path / "states.jsonl"),
                                           "--clips", str(tmp_path / "clips")])
    finally:
        history.close()
    assert result.exit_code == 1 and "already in use by a running monitor" in result.output
    assert not (tmp_path / "states.jsonl").exists() and not (tmp_path / "clips").exists()
