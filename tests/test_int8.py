"""int8 evidence: export measures it with the kernels every machine runs (exact int8 products), and
bundle.json says where. An x86 CPU without VNNI is emulated (qemu-user) to show both the fault it
would have (saturating uint8 x int8 pairs) and that the edge's sessions avoid it."""

from __future__ import annotations

import json
import platform

import numpy as np
import pytest
from emulated_cpu import HASWELL_FLAGS, run_on_haswell

from edge.core.bundle import load_bundle
from edge.engine import cpu
from edge.engine.classifier import Classifier, session_options
from export.parity import edge_case_windows

CASES_ON_HASWELL = """
import json, sys
from pathlib import Path
import numpy as np
from edge.core.bundle import load_bundle
from edge.engine import cpu
from edge.engine.classifier import Classifier
bundle, windows = load_bundle(sys.argv[1]), np.load(sys.argv[2])
cpu.CPUINFO = Path(sys.argv[3])
fp32 = Classifier(bundle, "fp32", threads=1).predict(windows)
exact, measured_on = Classifier(bundle, "int8", threads=1), cpu.describe()
cpu.precise_int8 = lambda: False  # onnxruntime's default kernels
saturating = Classifier(bundle, "int8", threads=1)
figures = {name: np.abs(fp32 - int8.predict(windows)).max(axis=1).tolist()
           for name, int8 in (("exact", exact), ("saturating", saturating))}
print(json.dumps({**figures, "measured_on": measured_on}))
"""


def int8_cases_on_haswell(bundle_dir, tmp_path) -> dict:
    """int8 vs fp32 per edge case, by the edge's Classifier on an emulated Haswell: with the
    sessions' own options ("exact") and with onnxruntime's default kernels ("saturating")."""
    cases = edge_case_windows(load_bundle(bundle_dir).window.window_samples)
    np.save(tmp_path / "windows.npy", np.stack(list(cases.values())))  # made here: the child imports no torch
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nmodel name\t: emulated Haswell\nflags\t\t: {HASWELL_FLAGS}\n")
    stdout = run_on_haswell(CASES_ON_HASWELL, str(bundle_dir), str(tmp_path / "windows.npy"), str(cpuinfo))
    figures = json.loads(stdout.splitlines()[-1])
    return {**{name: dict(zip(cases, figures[name])) for name in ("exact", "saturating")}, "measured_on": figures["measured_on"]}


def test_export_records_where_and_how_int8_was_measured(bundle_dir):
    report = load_bundle(bundle_dir).manifest.parity["int8"]
    assert report["measured_on"] == cpu.describe()
    assert report["measured_on"]["machine"] == platform.machine() and report["measured_on"]["onnxruntime"]
    assert report["measured_on"]["int8_kernels"].startswith("exact")


def test_int8_per_window_agreement_is_within_the_bound_in_bundle_json(bundle_dir, trained_runs):
    from edge.core.audio import load_windows
    from train.run import Run

    bundle = load_bundle(bundle_dir)
    report = bundle.manifest.parity["int8"]
    run = Run.open(trained_runs["night"])
    windows = np.concatenate([load_windows(recording.path, bundle.window)[0] for recording in run.recordings("validation")]
                             + [np.stack(list(edge_case_windows(bundle.window.window_samples).values()))])
    difference = np.abs(Classifier(bundle, "fp32").predict(windows) - Classifier(bundle, "int8").predict(windows))
    assert len(windows) == report["evidence"]["windows"] + report["evidence"]["edge_cases"]
    assert 0 < difference.max() <= report["max_abs_diff"] + 1e-6


def test_sessions_ask_for_exact_int8_products_only_where_the_cpu_lacks_vnni(tmp_path, monkeypatch):
    for flags, expected in ((HASWELL_FLAGS, "1"), (HASWELL_FLAGS + " avx512f avx512_vnni", "0"),
                            (HASWELL_FLAGS + " avx_vnni", "0"), ("fp asimd asimddp", "1")):
        (tmp_path / "cpuinfo").write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
        monkeypatch.setattr(cpu, "CPUINFO", tmp_path / "cpuinfo")
        assert session_options().get_session_config_entry(cpu.PRECISE_INT8) == expected, flags
        assert cpu.describe()[cpu.PRECISE_INT8] == expected
    monkeypatch.setattr(cpu, "CPUINFO", tmp_path / "missing")
    assert session_options().get_session_config_entry(cpu.PRECISE_INT8) == "1"  # unknown CPU: the exact side


def test_an_avx2_cpu_without_vnni_computes_what_bundle_json_says(bundle_dir, tmp_path):
    recorded = load_bundle(bundle_dir).manifest.parity["int8"]["edge_cases"]
    haswell = int8_cases_on_haswell(bundle_dir, tmp_path)
    assert haswell["measured_on"][cpu.PRECISE_INT8] == "1" and "avx2" in haswell["measured_on"]["int8_flags"]
    assert haswell["exact"].keys() == recorded.keys()
    for case, difference in haswell["exact"].items():
        assert difference == pytest.approx(recorded[case], abs=1e-4), case
    # onnxruntime's default there: 16-bit saturating pairs, several times the recorded error
    assert max(haswell["saturating"].values()) > 4 * max(recorded.values())
