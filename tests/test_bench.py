"""bench-bundle's budget run (a recording streamed in a fresh process) and the /proc readings."""

import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile
from click.testing import CliRunner

from edge.cli import main
from edge.core.proc import cpu_ticks, median_sec, memory_mb, process_cpu_sec
from edge.engine.bench import BenchError, _stream, budget_run

DECIDED = ("t", "status", "debounced_status", "changed", "hop_sec")


@pytest.fixture
def short_recording(off_then_ac, tmp_path):
    """7 s: 3.5 s both-off, then 3.5 s of AC, at 16 kHz."""
    off, on = off_then_ac
    path = tmp_path / "short.wav"
    soundfile.write(path, np.concatenate([off[: 56_000], on[: 56_000]]), 16_000)
    return path


def test_the_child_streams_as_the_stream_command_does(bundle_dir, short_recording):
    lines, cpu_sec, wall_sec = _stream(bundle_dir, short_recording, "0.5", 0.5, "fp32")
    printed = CliRunner().invoke(main, ["stream", "--bundle", str(bundle_dir), "--precision", "fp32", "--hop", "0.5",
                                        str(short_recording)])
    assert printed.exit_code == 0, printed.output
    expected = [json.loads(text) for text in printed.output.splitlines() if text.startswith("{")]
    assert len(lines) == len(expected) == 3 and 0 < cpu_sec < wall_sec * 4
    for line, printed_line in zip(lines, expected):
        assert {k: line[k] for k in DECIDED} == {k: printed_line[k] for k in DECIDED}
        assert line["p_ac"] == pytest.approx(printed_line["p_ac"], abs=1e-4)  # printed lines are rounded


def test_budget_run_measures_the_streaming_process(bundle_dir, short_recording):
    report = budget_run(bundle_dir, short_recording, 0.5, "fp32")
    assert report["hop_sec"] and all(0.5 <= hop <= 1.5 for hop in report["hop_sec"])  # the tiny model is cheap
    assert 0 < report["cpu_over_wall"] <= report["limit"] and report["within_budget"]
    assert report["hops_compared"] >= 1 and report["hops_agreeing"] <= report["hops_compared"]


def test_a_recording_the_child_cannot_stream_is_a_clear_error(bundle_dir, tmp_path):
    short = tmp_path / "two-seconds.wav"
    soundfile.write(short, np.zeros(32_000, np.float32), 16_000)
    with pytest.raises(BenchError, match=r"--budget-run .*two-seconds.wav: .*2.0 s is shorter than one 6 s window"):
        _stream(bundle_dir, short, "1.5", 0.5, None)


def test_proc_reads_a_child_s_cpu_and_this_process_s_memory():
    burn = "import time\nend = time.process_time() + 0.5\nwhile time.process_time() < end: pass\nprint(flush=True)\ntime.sleep(30)"
    child = subprocess.Popen([sys.executable, "-c", burn], stdout=subprocess.PIPE, text=True)
    try:
        child.stdout.readline()  # it has burnt its 0.5 s and sleeps
        assert 0.4 <= process_cpu_sec(child.pid) < 5  # /proc counts whole clock ticks
        assert "python" in cpu_ticks()[child.pid][0]
    finally:
        child.kill()
        child.wait()
    assert memory_mb("VmHWM") >= memory_mb("VmRSS") > 10
    assert 0 < median_sec(lambda: sum(range(100_000)), 3, cpu=True) < 1
