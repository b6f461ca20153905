"""bench-monitors: the sources it plays and one process of two monitors measured end to end."""

from __future__ import annotations

import time

import numpy as np
from click.testing import CliRunner

from edge.cli import main
from edge.monitor.bench_monitors import CHUNK_SEC, PlayerSource, monitor_settings, run_processes, summary
from edge.monitor.settings import LiveSettings


def test_the_player_delivers_a_recording_in_real_time_and_loops():
    audio = np.arange(8_000, dtype=np.float32)  # 1 s at 8 kHz
    chunks, started = [], time.monotonic()
    source = PlayerSource(audio, 8_000)
    assert source.start(lambda chunk, overflowed: chunks.append((time.monotonic() - started, chunk.copy()))) == 8_000
    time.sleep(1.52)
    source.stop()
    assert 15 <= len(chunks) <= 17, "a 0.1 s chunk every 0.1 s"
    assert all(len(chunk) == int(CHUNK_SEC * 8_000) for _, chunk in chunks)
    assert chunks[10][1][0] == 0 and chunks[11][1][0] == 800, "the recording starts again after 1 s"
    assert all(at >= index * CHUNK_SEC - 0.02 for index, (at, _) in enumerate(chunks)), "never ahead of real time"


def test_two_monitors_in_one_process_report_memory_cpu_and_lines(bundle_dir):
    base = LiveSettings(bundle=bundle_dir, hop="1.5", threads=1)
    (result,) = run_processes([monitor_settings(base, 2)], None, 8.5)
    assert result["lines"] == [2, 2], "each source decided its windows at 6 and 7.5 s"
    assert 50 < result["rss_end_mb"] <= result["peak_rss_mb"] < 1000
    assert 0 < result["cpu_sec"] < result["wall_sec"] and result["hop_sec"] == [1.5] and result["dropped_sec"] == 0


def test_the_summary_compares_with_one_source_and_with_separate_processes():
    rows = [{"precision": "fp32", "sources": 1, "layout": "one process", "peak_rss_mb": 100.0, "x_one_source": 1.0},
            {"precision": "fp32", "sources": 4, "layout": "one process", "peak_rss_mb": 110.0, "x_one_source": 1.1},
            {"precision": "fp32", "sources": 4, "layout": "4 processes", "peak_rss_mb": 400.0, "x_one_source": 4.0}]
    assert summary(rows) == ["fp32: 4 sources in one process peak at 110 MB, 1.10x one source (goal: under 1.3x); "
                             "4 processes 400 MB (4.00x)"]


def test_bad_counts_and_standard_input_are_refused(bundle_dir):
    for args, message in ((["--sources", "0,4"], "expected numbers of sources"),
                          (["--source", "-"], "standard input cannot feed several sources")):
        result = CliRunner().invoke(main, ["bench-monitors", "--bundle", str(bundle_dir), *args])
        assert result.exit_code == 2 and message in result.output


def test_bench_live_measures_an_audited_student_beside_one_alone(tmp_path):
    """The student alone and audited every 1.5 s (the teacher in its child process), page and history
    on: each row has its memory, CPU, lag and drops; the audited one its audits and the child's peak."""
    from pathlib import Path

    from edge.monitor.bench_monitors import bench_live, free_port, live_configurations
    from edge.monitor.settings import HttpOptions

    fixture = Path(__file__).parent / "fixtures" / "bundle-v2"
    base = LiveSettings(bundle=fixture, hop="1.5", threads=1, history=tmp_path / "history.db",
                        http=HttpOptions(listen=str(free_port())))
    configurations = live_configurations(base, ("fp32", "student"), 1.5, [None])
    assert [name for name, _ in configurations] == ["student", "student, audit by the default teacher", "fp32"]
    alone, audited = bench_live(configurations[:2], 9.0, None)
    assert alone["audits"] == 0 and alone["teacher_process_peak_mb"] is None and alone["x_steady_rss"] == 1.0
    assert audited["audits"] >= 1 and 50 < audited["teacher_process_peak_mb"] < 1000
    for row in (alone, audited):
        assert 50 < row["steady_rss_mb"] <= row["peak_rss_mb"] + 1 < 1000 and row["dropped_sec"] == 0
        assert row["hops"] >= 2 and row["max_lag_sec"] is not None and row["cpu_pct_of_a_core"] > 0
        assert row["metrics_cpu_pct_of_a_core"] > 0
