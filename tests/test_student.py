"""The student (issue 13): distilled from the tiny BEATs teacher, exported beside it, audited live."""

import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import pinned_decision
from test_home import _get
from test_live import FakeSource, Harness

from edge.cli import main
from edge.core.bundle import load_bundle
from edge.engine.audit import Auditor
from edge.engine.classifier import Classifier
from edge.home.http_status import StatusServer
from export.flops import graph_flops


@pytest.fixture(scope="session")
def student_run(trained_runs, tmp_path_factory):
    """A copy of the night run (the shared one stays without a student) with a student distilled into it."""
    from train.student import Distiller

    run = tmp_path_factory.mktemp("student") / trained_runs["night"].name
    shutil.copytree(trained_runs["night"], run)
    Distiller(run, log=lambda *_: None).run_distillation()
    return run


@pytest.fixture(scope="session")
def student_bundle(student_run, tmp_path_factory):
    from export.exporter import export_run

    return export_run(student_run, tmp_path_factory.mktemp("bundles") / "with-student", parity_windows_per_file=4,
                      log=lambda *_: None)


def test_distill_writes_a_student_into_the_run_and_never_overwrites(student_run):
    from train.student import Distiller, StudentRun

    first = StudentRun.open(student_run / "student")
    assert {"student.pt", "config.yaml", "metrics.jsonl", "best_metrics.json", "val_predictions.parquet",
            "thresholds.yaml"} <= {p.name for p in first.path.iterdir()}
    agreement = first.config.teacher_agreement
    assert agreement.disagreeing_files == () and agreement.agreeing_files == agreement.files == 4
    assert 40 < agreement.streamed_hops and agreement.agreeing_hops >= 0.99 * agreement.streamed_hops
    assert list(agreement.max_abs_diff_by_appliance) == ["ac", "fridge"] == list(first.appliances.names)
    assert agreement.max_abs_diff == max(agreement.max_abs_diff_by_appliance.values()) < 1
    assert first.load_student().config["labels"] == 2 and list(first.decision.to_dict()["levels"]) == ["ac", "fridge"]
    before = (first.path / "student.pt").read_bytes()
    second = Distiller(student_run, log=lambda *_: None).run_distillation()
    assert second.name == "student-2" and (first.path / "student.pt").read_bytes() == before


def test_a_masked_label_leaves_the_teacher_as_the_target():
    from train.student import distillation_targets

    teacher = np.float32([[0.8, 0.3, 0.6], [0.2, 0.9, 0.4]])
    labels = np.float32([[1.0, 0.0, np.nan], [np.nan, 1.0, 0.0]])  # NaN: the recording does not name it
    targets = distillation_targets(teacher, labels, 0.25)
    assert not np.isnan(targets).any() and targets.dtype == np.float32
    assert targets[0, 2] == teacher[0, 2] and targets[1, 0] == teacher[1, 0]
    assert targets[0, :2] == pytest.approx([0.75 * 0.8 + 0.25, 0.75 * 0.3])
    assert targets[1, 1:] == pytest.approx([0.75 * 0.9 + 0.25, 0.75 * 0.4])


def test_student_agrees_with_its_teacher_at_under_one_percent_of_the_flops(student_bundle):
    bundle = load_bundle(student_bundle)
    manifest = bundle.manifest
    report = manifest.report("student")
    assert report.state_agreement == 1.0 and report.debounced_hop_agreement >= 0.99
    assert report.evidence["validation_files"] == 4 and report.evidence["streamed_hops"] > 40
    assert report.float_parity.passed and report.float_parity.max_abs_diff <= 1e-4
    assert manifest.gflop_per_window["student"] <= 0.01 * manifest.gflop_per_window["fp32"]
    assert report.flop_share == pytest.approx(manifest.gflop_per_window["student"] / manifest.gflop_per_window["fp32"])
    assert manifest.default_precision == "student" and report.meets_bar
    assert bundle.decision == bundle.decision_for("student") != bundle.decision_for("fp32")  # its own thresholds


def test_student_flops_are_counted_from_its_graph_dft_included(student_bundle):
    frames, fft, mels, hidden = 46, 1024, 40, 32
    dft = frames * 2.5 * fft * np.log2(fft)  # real-input FFTs
    products = 2 * 2 * (fft // 2) * mels + 2 * (2 * mels) * hidden + 2 * hidden * 2
    assert graph_flops(student_bundle / "student.onnx") == int(dft) + products


def test_bundle_check_and_batch_run_the_student(student_bundle, project):
    runner = CliRunner()
    result = runner.invoke(main, ["bundle", "check", "--bundle", str(student_bundle)])
    assert result.exit_code == 0, result.output
    assert "student: the default: agrees with fp32" in result.output
    result = runner.invoke(main, ["batch", "--bundle", str(student_bundle), "--precision", "student",
                                  str(project / "samples" / "ac-on-fridge-off-night.m4a")])
    assert result.exit_code == 0 and json.loads(result.output)["status"] == "ac-on"


class AlwaysAcStudent:
    """A student that hears the AC in everything: it disagrees with the teacher on quiet audio."""

    precision = "student"

    def __init__(self, bundle):
        self.bundle = bundle
        self.window_samples = bundle.window.window_samples
        self.decision = pinned_decision(bundle.path)

    def predict(self, windows):
        return np.tile(np.float32([0.99, 0.01]), (len(windows), 1))


def _quiet(seconds: float) -> np.ndarray:
    return (np.random.default_rng(1).standard_normal(int(seconds * 16_000)) * 1e-3).astype(np.float32)


def _teacher(bundle):
    teacher = Classifier(bundle, "fp32", threads=1)
    teacher.bundle.manifest.decision = pinned_decision(bundle.path)  # the tiny teacher cannot hear the fridge
    return teacher


def test_a_disagreeing_student_is_counted_and_trips_healthz(bundle_dir):
    bundle = load_bundle(bundle_dir)
    auditor = Auditor(lambda: _teacher(bundle), every_sec=3.0, degraded_rate=0.1)
    source = FakeSource()
    harness = Harness(bundle_dir, source, classifier=AlwaysAcStudent(bundle), auditor=auditor, max_lag_sec=100.0)
    server = StatusServer(harness.monitor, "127.0.0.1", 0)
    server.start()
    base = "http://%s:%d" % server.address
    try:
        with harness:
            source.feed(_quiet(6 + 1.5 * 13))
            lines = harness.wait_for(14)
            assert auditor.teacher is not None and auditor.teacher_mb is not None
            assert auditor.audits == 7 and auditor.disagreements == 7
            assert lines[-1].audits == 7 and lines[-1].audit_disagreements == 7 and lines[-1].precision == "student"
            assert lines[-1].debounced_status == "ac-on"
            code, body = _get(base + "/healthz")
            assert code == 503 and "student disagrees with the teacher on 100% of 7 audits" in json.loads(body)["reason"]
            metrics = _get(base + "/metrics")[1]
            assert "humwatch_audit_disagreements_total 7" in metrics and "humwatch_audit_fallback 0" in metrics
    finally:
        server.close()


def test_audit_fallback_switches_to_the_teacher(bundle_dir):
    bundle = load_bundle(bundle_dir)
    auditor = Auditor(lambda: _teacher(bundle), every_sec=1.5, degraded_rate=0.1, fallback_rate=0.5)
    source = FakeSource()
    harness = Harness(bundle_dir, source, classifier=AlwaysAcStudent(bundle), auditor=auditor, max_lag_sec=100.0)
    with harness:
        source.feed(_quiet(6 + 1.5 * 19))
        lines = harness.wait_for(20)
    switched = next(i for i, line in enumerate(lines) if line.precision == "fp32")
    assert switched == 5  # the fifth audit gives the first verdict on the rate: 100 % > 50 %
    assert all(line.precision == "student" for line in lines[:switched])
    assert lines[-1].debounced_status == "both-off" and auditor.fell_back
    assert harness.monitor.health().ok and "the teacher decides" in harness.monitor.health().reason


class TeacherAsStudent:
    """A student that hears exactly what its teacher hears: it may never be found to disagree."""

    precision = "student"

    def __init__(self, bundle):
        self.inner = Classifier(bundle, "fp32", threads=1)
        self.bundle, self.window_samples = bundle, bundle.window.window_samples
        self.decision = pinned_decision(bundle.path)

    def predict(self, windows):
        return self.inner.predict(windows)


def test_a_change_landing_before_an_audit_is_no_disagreement(bundle_dir, off_then_ac):
    """The AC starts at 24 s; the audit at 28.5 s hears it at once while the student's debounced state
    still follows its running median: compared on the same window by the same rule, they agree."""
    bundle = load_bundle(bundle_dir)
    auditor = Auditor(lambda: _teacher(bundle), every_sec=12.0, degraded_rate=0.1)
    source = FakeSource()
    harness = Harness(bundle_dir, source, classifier=TeacherAsStudent(bundle), auditor=auditor, max_lag_sec=100.0)
    with harness:
        source.feed(np.concatenate(off_then_ac))
        lines = harness.wait_for(29)
    audited = {line.t: line.debounced_status for line in lines if line.audits != lines[lines.index(line) - 1].audits}
    assert audited[28.5] == "both-off" and any(line.debounced_status == "ac-on" for line in lines[20:]), \
        "an audit lands while the student's state has not followed the change yet"
    assert auditor.audits == 3 and auditor.disagreements == 0 and auditor.max_abs_diff == 0.0
    assert harness.monitor.health().ok
