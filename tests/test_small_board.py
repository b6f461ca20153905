"""A monitor that fits the smallest board (issue 32): the audit's teacher in a process of its own,
off the hop path; only the libraries a configuration uses; /metrics' CPU share the process's own."""

import json
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from test_student import AlwaysAcStudent

from edge.core.bundle import load_bundle
from edge.engine.audit import Auditor, TeacherProcess
from edge.engine.classifier import Classifier
from edge.engine.detector import Detector
from edge.engine.pacing import HopPlanner
from edge.home.http_status import StatusServer
from edge.monitor.bench_monitors import free_port

FIXTURE = Path(__file__).parent / "fixtures" / "bundle-v2"  # the tiny committed bundle: fp32 and a student
RATE = 16_000


def _noise(seconds: float, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(int(seconds * RATE)) * 0.05).astype(np.float32)


def test_the_teacher_process_answers_as_the_teacher_in_this_process():
    bundle = load_bundle(FIXTURE)
    windows = np.stack([_noise(bundle.window.window_sec, seed) for seed in (1, 2)])
    teacher = TeacherProcess(bundle, "fp32")
    assert teacher.peak_mb is None
    np.testing.assert_allclose(teacher.predict(windows), Classifier(bundle, "fp32").predict(windows), atol=1e-6)
    assert teacher.peak_mb > 0 and teacher.decision == bundle.decision_for("fp32")


def test_a_failing_teacher_process_is_an_audit_failure_not_a_crash():
    bundle = load_bundle(FIXTURE)
    auditor = Auditor(lambda: TeacherProcess(bundle, "int8"), every_sec=6.0)  # the fixture has no int8 graphs
    detector = Detector(AlwaysAcStudent(bundle), HopPlanner(1.5, cpu_sec=0.0), auditor=auditor)
    lines = detector.feed(_noise(12.0), RATE)
    assert len(lines) == 5 and auditor.audits == 0
    assert "the teacher's process failed" in auditor.problem() and "int8" in auditor.problem()


def test_the_teacher_loads_off_the_hop_path():
    """A teacher that takes as long to load as the test wants: hops keep coming while it loads, and
    its verdicts arrive once it has."""
    bundle = load_bundle(FIXTURE)
    loading, loaded = threading.Event(), threading.Event()

    def slow_teacher():
        loading.set()
        assert loaded.wait(60), "the test never let the teacher finish loading"
        return Classifier(bundle, "fp32")

    auditor = Auditor(slow_teacher, every_sec=1.5, background=True)
    detector = Detector(AlwaysAcStudent(bundle), HopPlanner(1.5, cpu_sec=0.0), auditor=auditor)
    first = detector.feed(_noise(7.5), RATE)  # the first window's hop reaches the spacing: its audit starts
    assert loading.wait(10) and len(first) == 2
    during = detector.feed(_noise(15.0, seed=3), RATE)
    assert len(during) == 10 and not loaded.is_set(), "every hop is decided while the teacher still loads"
    assert auditor.audits == 0 and auditor.passed >= 9, "audits due meanwhile pass; none queues up behind the load"
    loaded.set()
    auditor.join()
    assert auditor.audits == 1 and auditor.teacher.precision == "fp32"
    detector.feed(_noise(1.5, seed=4), RATE)
    auditor.join()
    assert auditor.audits == 2


def test_a_stdin_monitor_imports_neither_pyav_nor_paho(tmp_path):
    """`humwatch live` on raw PCM with the page and a history: no PyAV (a network source's), no
    soundfile (files'), no PortAudio (a device's), no paho (--mqtt's) in its process."""
    probe = ("import atexit, sys\n"
             "atexit.register(lambda: print('MODULES', sorted(m for m in ('av', 'soundfile', 'sounddevice', 'paho') "
             "if m in sys.modules), file=sys.stderr))\n"
             "from edge.cli import main\n"
             "main()\n")
    audio = (_noise(9.0) * 32767).astype("<i2").tobytes()
    done = subprocess.run([sys.executable, "-c", probe, "live", "--bundle", str(FIXTURE), "--precision", "student",
                           "--source", "-", "--source-format", "s16le:16000:1", "--hop", "1.5",
                           "--http", str(free_port()), "--history", str(tmp_path / "history.db")],
                          input=audio, capture_output=True, timeout=120)
    lines = [json.loads(line) for line in done.stdout.decode().splitlines()]
    assert len(lines) >= 2 and lines[0]["precision"] == "student", done.stderr.decode()[-2000:]
    assert "MODULES []" in done.stderr.decode(), done.stderr.decode()[-2000:]


def test_metrics_cpu_share_is_the_whole_process(monkeypatch):
    """humwatch_cpu_share counts every CPU second of the process over wall time, not the planner's
    estimate of inference: 4 CPU seconds over 10 wall seconds are 0.4 cores' worth."""
    import edge.home.http_status as http_status

    server = StatusServer()
    try:
        monkeypatch.setattr(http_status, "own_cpu_sec", lambda: server.since[1] + 4.0)
        monkeypatch.setattr(http_status.time, "monotonic", lambda: server.since[0] + 10.0)
        cores = http_status.os.cpu_count()
        metrics = server.metrics()
        assert f"humwatch_cpu_share {0.4 / cores:.5f}" in metrics
        assert "# HELP humwatch_cpu_share" in metrics and "humwatch_peak_memory_mb" in metrics
    finally:
        server.close()


@pytest.mark.parametrize("value", ["fp32", "int8"])
def test_the_audit_teacher_setting_is_checked_against_the_bundle(value):
    from edge.engine.classifier import open_classifier
    from edge.monitor.assembly import open_auditor
    from edge.monitor.settings import AuditOptions, LiveSettings

    settings = LiveSettings(bundle=FIXTURE, precision="student", audit=AuditOptions(teacher=value))
    student = open_classifier(FIXTURE, "student")
    if value == "int8":
        with pytest.raises(ValueError, match="--audit-teacher int8: the bundle has no int8 graphs"):
            open_auditor(settings, student, lambda: None)
    else:
        assert open_auditor(settings, student, lambda: None).background
