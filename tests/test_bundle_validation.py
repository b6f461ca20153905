"""A bundle is checked before it decides anything: every field of bundle.json, graph names that stay
inside the bundle, the bytes hashed being the bytes run, the graphs' shapes and one test window.
Bundles here are built from tiny ONNX graphs made with the onnx package (no training needed)."""

from __future__ import annotations

import copy
import json
import math
import os
import shutil
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
import soundfile
from click.testing import CliRunner
from onnx import TensorProto, helper

from edge.cli import main
from edge.core.bundle import (
    MANIFEST,
    BundleError,
    FloatParity,
    Manifest,
    PrecisionReport,
    load_bundle,
    verify_files,
    write_bundle_manifest,
)
from edge.core.decision import DecisionConfig
from edge.core.fields import FieldError
from edge.core.window import WindowConfig
from edge.engine.classifier import Classifier, ModelOutputError, open_classifier

WINDOW = WindowConfig(window_sec=0.5, hop_sec=0.25)  # 8000 samples: quick
SAMPLES = WINDOW.window_samples

# The parity entries as export writes them today (copied from a tiny exported bundle).
EDGE_CASES = {"silence": 2.98e-08, "white noise": 2.98e-08, "tone 1 kHz -6 dBFS": 1.67e-05}
FP32_PARITY = {"windows": 24, "max_abs_diff": 1.76e-05, "mean_abs_diff": 1.1e-06, "files": 4, "state_agreement": 1.0,
               "disagreeing_files": [], "edge_cases": EDGE_CASES, "tolerance": 0.0001, "passed": True}
INT8_REPORT = {
    "evidence": {"validation_files": 4, "windows": 52, "streamed_hops": 52, "edge_cases": 8, "batch": 1},
    "max_abs_diff": 0.0043, "mean_abs_diff": 0.0015, "files": 4, "state_agreement": 1.0, "disagreeing_files": [],
    "debounced_hop_agreement": 1.0, "edge_cases": EDGE_CASES, "flop_share": None,
    "default_bar": {"file_states": 1.0, "debounced_hops": 0.995, "min_validation_files": 6}, "meets_bar": False,
    "default_reason": "not the default: only 4 validation files (the bar is 6: record more, or validate on named recordings)",
    "model_bytes": 3276335, "fp32_model_bytes": 3487827, "fp32_ms_per_window": 7.1, "ms_per_window": 6.9,
    "speedup_vs_fp32": 1.02,
    "quantization": {"method": "dynamic", "activations": "uint8, per tensor, scaled at run time",
                     "weights": "int8, per output channel", "operators": "MatMul with a constant weight, outside the fbank",
                     "quantized_matmuls": 15},
}
STUDENT_REPORT = {**{k: v for k, v in INT8_REPORT.items() if k != "quantization"}, "flop_share": 0.004,
                  "meets_bar": True, "default_reason": "agrees with fp32 on every validation file's state",
                  "float_parity": FP32_PARITY, "distilled_from": "20261127-student"}


def write_graph(path: Path, outputs: int = 2, scale: float = 1.0, sqrt_of_max: bool = False,
                hide_width: bool = False) -> None:
    """waveform [batch, SAMPLES] -> sigmoid(mean * scale) repeated `outputs` times: [batch, outputs].

    scale NaN gives NaN for every window; `sqrt_of_max` gives NaN only for a window whose samples
    are all negative (sqrt of its maximum); `hide_width` reshapes through a shape computed from the
    data, so onnxruntime cannot know the output's width before it runs.
    """
    nodes = [helper.make_node("ReduceMax" if sqrt_of_max else "ReduceMean", ["waveform", "axes"], ["level"], keepdims=1)]
    if sqrt_of_max:
        nodes.append(helper.make_node("Sqrt", ["level"], ["root"]))
    nodes.append(helper.make_node("Mul", ["root" if sqrt_of_max else "level", "scale"], ["logits"]))
    if hide_width:
        nodes += [helper.make_node("ReduceMax", ["waveform"], ["peak"], keepdims=0),
                  helper.make_node("Mul", ["peak", "zero"], ["nought"]),
                  helper.make_node("Cast", ["nought"], ["nought64"], to=TensorProto.INT64),
                  helper.make_node("Add", ["nought64", "target"], ["shape"]),
                  helper.make_node("Reshape", ["logits", "shape"], ["reshaped"])]
    nodes.append(helper.make_node("Sigmoid", ["reshaped" if hide_width else "logits"], ["probs"]))
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info("waveform", TensorProto.FLOAT, ["batch", SAMPLES])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["batch", "width" if hide_width else outputs])],
        [helper.make_tensor("axes", TensorProto.INT64, [1], [1]),
         helper.make_tensor("scale", TensorProto.FLOAT, [1, outputs], [scale] * outputs),
         helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0]),
         helper.make_tensor("target", TensorProto.INT64, [2], [-1, outputs])],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), path)


def make_bundle(directory: Path, **graph_options) -> Path:
    """A bundle as export writes it: fp32 and int8 (the same tiny graph under two names), parity entries."""
    directory.mkdir()
    write_graph(directory / "model.onnx", **graph_options)
    write_graph(directory / "model.int8.onnx", **graph_options)
    manifest = Manifest(
        name=directory.name, created="2026-11-27T14:30:06+0000", window=WINDOW, decision=DecisionConfig(),
        graphs={"fp32": {"model": "model.onnx"}, "int8": {"model": "model.int8.onnx"}}, default_precision="fp32",
        embedding={"frames": 1, "dim": 1}, opset=18, versions={"humwatch": "0.1.0", "onnxruntime": "1.32.0"},
        source={"run_id": "tiny", "stage2": None}, training_metrics={"best_epoch": {"f1_ac": 1.0}},
        parity={"fp32": FP32_PARITY, "int8": INT8_REPORT}, gflop_per_window={"fp32": 1e-5, "int8": 1e-5},
    )
    write_bundle_manifest(directory, manifest)
    return directory


@pytest.fixture
def bundle(tmp_path) -> Path:
    return make_bundle(tmp_path / "bundle")


@pytest.fixture
def audio(tmp_path) -> Path:
    path = tmp_path / "take.wav"
    soundfile.write(path, (np.random.default_rng(1).standard_normal(16_000) * 0.05).astype(np.float32), 16_000)
    return path


def edit(bundle: Path, change) -> None:
    path = bundle / MANIFEST
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))  # NaN and Infinity as Python's json writes them


def check(bundle: Path):
    return CliRunner().invoke(main, ["bundle", "check", "--bundle", str(bundle)])


def batch(bundle: Path, audio: Path):
    return CliRunner().invoke(main, ["batch", "--bundle", str(bundle), str(audio)])


def test_the_tiny_bundle_passes_its_check_and_decides(bundle, audio):
    result = check(bundle)
    assert result.exit_code == 0, result.output
    assert "fp32: ok" in result.output and "int8: offered: not the default: only 4 validation files" in result.output
    result = batch(bundle, audio)
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["windows"] == 3


def test_bundle_json_as_exported_today_loads_and_writes_back_the_same(bundle):
    data = json.loads((bundle / MANIFEST).read_text())
    data["parity"]["student"] = STUDENT_REPORT  # a student entry as export writes it, too
    data["graphs"]["student"] = {"model": "model.onnx"}
    for absent in ("decisions", "gflop_per_window"):  # fields with a default may be absent
        data.pop(absent)
    manifest = Manifest.from_json(copy.deepcopy(data))
    assert manifest.to_json() == {**data, "decisions": {}, "gflop_per_window": {}}
    int8, student = manifest.report("int8"), manifest.report("student")
    assert int8.to_json() == INT8_REPORT and student.to_json() == STUDENT_REPORT
    assert isinstance(student.float_parity, FloatParity) and student.float_parity.passed and student.meets_bar
    assert int8.quantization["quantized_matmuls"] == 15 and int8.flop_share is None and int8.measured_on is None
    assert manifest.float_parity().to_json() == FP32_PARITY and manifest.report("fp32") is None


def test_a_precision_report_records_where_it_was_measured():
    measured_on = {"machine": "aarch64", "cpu": "Cortex-A76", "onnxruntime": "1.32.0", "kernels": "arm64 int8"}
    report = PrecisionReport.from_json({**INT8_REPORT, "measured_on": measured_on})
    assert report.measured_on == measured_on and report.to_json()["measured_on"] == measured_on
    assert "measured_on" not in PrecisionReport.from_json(INT8_REPORT).to_json()
    with pytest.raises(FieldError, match=r"^parity\.int8\.measured_on\.cpu: expected a string, number or boolean"):
        PrecisionReport.from_json({**INT8_REPORT, "measured_on": {"cpu": {"cores": 4}}}, "parity.int8")


def test_teacher_precision_reads_the_report(bundle):
    assert load_bundle(bundle).teacher_precision == "fp32"  # int8 did not meet its bar
    edit(bundle, lambda m: m["parity"]["int8"].update(meets_bar=True))
    assert load_bundle(bundle).teacher_precision == "int8"


def _set(*keys_and_value):
    *keys, value = keys_and_value

    def change(manifest):
        for key in keys[:-1]:
            manifest = manifest[key]
        manifest[keys[-1]] = value
    return change


BAD_FIELDS = [  # (change to bundle.json, the field the message must name)
    (_set("window", "hop_sec", 0), "window.hop_sec"),
    (_set("window", "hop_sec", math.nan), "window.hop_sec"),
    (_set("window", "window_sec", 1e9), "window.window_sec"),
    (_set("window", "window_sec", "6"), "window.window_sec"),
    (_set("window", "sample_rate", 0), "window.sample_rate"),
    (_set("window", "sample_rate", 44_100), "window.sample_rate"),
    (_set("window", "hop_samples", 7), "window.hop_samples"),
    (lambda m: m.pop("window"), "window: missing"),
    (_set("decision", "median_sec", math.nan), "decision.median_sec"),
    (_set("decision", "median_sec", math.inf), "decision.median_sec"),
    (_set("decision", "median_sec", 1e12), "decision.median_sec"),
    (_set("decision", "debounce_sec", 0), "decision.debounce_sec"),
    (_set("decision", "debounce_sec", -math.inf), "decision.debounce_sec"),
    (_set("decision", "levels", "ac", "threshold", 1.5), "decision.levels.ac.threshold"),
    (_set("decision", "levels", "fridge", "off", -0.1), "decision.levels.fridge.off"),
    (_set("decision", "levels", "ac", "off", 0.95), "decision.ac.off"),  # above ac.on 0.80
    (_set("decision", "levels", "fridge", "threshold", True), "decision.levels.fridge.threshold"),
    (_set("decision", "levels", "fridge", "threshold", None), "decision.levels.fridge.threshold"),
    (lambda m: m["decision"]["levels"]["ac"].pop("threshold"), "decision.levels.ac.threshold"),
    (lambda m: m["decision"]["levels"].pop("fridge"), "decision.levels.fridge"),
    (_set("decision", "levels", "washer", {"threshold": 0.5, "on": 0.6, "off": 0.4}), "decision.levels"),
    (_set("decisions", {"int8": {**DecisionConfig().to_dict(), "levels": {"ac": {"threshold": 0.75, "on": math.nan,
                                                                                  "off": 0.6}}}}),
     "decisions.int8.levels.ac.on"),
    (_set("decisions", {"student": DecisionConfig().to_dict()}), "decisions.student"),
    (_set("graphs", [["fp32", "model.onnx"]]), "graphs"),
    (_set("graphs", "fp32", "model.onnx"), "graphs.fp32"),
    (_set("graphs", "fp32", "model", 42), "graphs.fp32.model"),
    (_set("graphs", "fp16", {"model": "model.onnx"}), "graphs.fp16"),
    (lambda m: m["graphs"].pop("fp32"), "graphs.fp32"),
    (_set("default_precision", "fp16"), "default_precision"),
    (_set("default_precision", "student"), "default_precision"),
    (_set("schema_version", 5), "schema_version"),  # from a newer humwatch
    (_set("schema_version", "2"), "schema_version"),
    (_set("labels", ["ac"]), "priority"),  # one label fewer: the priority names an appliance the model lacks
    (_set("labels", ["ac", "Fridge"]), "labels"),
    (_set("labels", ["ac", "ac"]), "labels"),
    (_set("priority", ["washer"]), "priority"),
    (lambda m: m.update(schema_version=2, labels=["ac", "dehumidifier"]), "labels"),
    (_set("surprise", 1), "surprise"),
    (_set("opset", "18"), "opset"),
    (_set("versions", "onnxruntime", ["1.32"]), "versions.onnxruntime"),
    (_set("embedding", "frames", -1), "embedding.frames"),
    (_set("source", None), "source"),
    (_set("files", "model.onnx", "bytes", "12"), "files.model.onnx.bytes"),
    (_set("files", "model.onnx", "sha256", "x" * 64), "files.model.onnx.sha256"),
    (lambda m: m["files"].pop("model.int8.onnx"), "graphs.int8.model"),
    (_set("gflop_per_window", "fp32", -1), "gflop_per_window.fp32"),
    (_set("parity", "int8", "meets_bar", "yes"), "parity.int8.meets_bar"),
    (_set("parity", "int8", "debounced_hop_agreement", 1.5), "parity.int8.debounced_hop_agreement"),
    (lambda m: m["parity"]["int8"].pop("default_reason"), "parity.int8.default_reason"),
    (_set("parity", "fp32", "max_abs_diff", math.nan), "parity.fp32.max_abs_diff"),
    (_set("parity", "student", FP32_PARITY), "parity.student"),
]


@pytest.mark.parametrize("change, field", BAD_FIELDS, ids=[f"{field}-{i}" for i, (_, field) in enumerate(BAD_FIELDS)])
def test_a_bad_field_is_refused_naming_it_and_the_file(bundle, change, field):
    edit(bundle, change)
    with pytest.raises(BundleError) as raised:
        load_bundle(bundle)
    message = str(raised.value)
    assert message.startswith(f"{bundle / MANIFEST}: {field}") and "re-export the bundle" in message


def test_bundle_check_names_the_bad_field(bundle):
    edit(bundle, _set("decision", "median_sec", math.nan))
    result = check(bundle)
    assert result.exit_code == 1 and f"{bundle / MANIFEST}: decision.median_sec: nan is not a finite number" in result.output


def test_a_zero_hop_stops_batch_at_once_with_the_field(bundle, audio):
    edit(bundle, _set("window", "hop_sec", 0))
    started = time.monotonic()
    result = batch(bundle, audio)
    assert time.monotonic() - started < 10
    assert result.exit_code == 1 and "window.hop_sec: 0 is outside (0, 60]" in result.output
    assert "Traceback" not in result.output


def test_a_huge_or_deep_bundle_json_is_refused(bundle):
    edit(bundle, _set("training_metrics", "notes", "x" * 1_100_000))
    with pytest.raises(BundleError, match="over 1 MB"):
        load_bundle(bundle)
    deep: dict = {}
    for _ in range(40):
        deep = {"d": deep}
    edit(bundle, _set("training_metrics", "notes", deep))
    with pytest.raises(BundleError, match="nested deeper than 16 levels"):
        load_bundle(bundle)
    (bundle / MANIFEST).write_text("[" * 200_000 + "]" * 200_000)  # deeper than Python's JSON parser goes
    with pytest.raises(BundleError, match="nested deeper than 16 levels"):
        load_bundle(bundle)


@pytest.mark.parametrize("name", ["../evil/student.onnx", "/etc/passwd", "sub/model.onnx", "..\\model.onnx", "..",
                                  ".hidden.onnx", "model.onnx\n"])
def test_a_graph_name_that_is_not_a_plain_file_name_is_refused(bundle, name):
    edit(bundle, _set("graphs", "fp32", "model", name))
    with pytest.raises(BundleError, match=r"graphs\.fp32\.model: .* is not a plain file name inside the bundle"):
        load_bundle(bundle)


def test_a_graph_outside_the_bundle_fails_check_and_batch(tmp_path, audio):
    """The attack of issue 20: a checksum entry for the base name while the path leads out of the bundle."""
    bundle = make_bundle(tmp_path / "bundle")
    (tmp_path / "evil").mkdir()
    write_graph(tmp_path / "evil" / "student.onnx")
    evil = tmp_path / "evil" / "student.onnx"

    def point_outside(manifest):
        manifest["graphs"]["fp32"]["model"] = "../evil/student.onnx"
        manifest["files"]["student.onnx"] = {"sha256": _sha256(evil), "bytes": evil.stat().st_size}
    edit(bundle, point_outside)
    for result in (check(bundle), batch(bundle, audio)):
        assert result.exit_code == 1
        assert "graphs.fp32.model: '../evil/student.onnx' is not a plain file name inside the bundle" in result.output
        assert "bundle ok" not in result.output and '"status"' not in result.output


def _sha256(path: Path) -> str:
    import hashlib
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_link_out_of_the_bundle_is_refused_even_with_its_checksum(tmp_path, audio):
    bundle = make_bundle(tmp_path / "bundle")
    outside = tmp_path / "outside.onnx"
    os.replace(bundle / "model.onnx", outside)  # same bytes, so the recorded checksum matches
    (bundle / "model.onnx").symlink_to(outside)
    for result in (check(bundle), batch(bundle, audio)):
        assert result.exit_code == 1 and f"{bundle / 'model.onnx'}: a link to {outside}, outside the bundle" in result.output


def test_a_link_inside_the_bundle_is_followed(bundle):
    os.replace(bundle / "model.onnx", bundle / "real.onnx")
    (bundle / "model.onnx").symlink_to("real.onnx")
    loaded = load_bundle(bundle)
    verify_files(loaded)  # the link's target is what is checked: no BundleError
    assert Classifier(loaded, "fp32").check().shape == (2,), "and what is loaded"


def test_the_bytes_loaded_are_the_bytes_checked(bundle):
    """A graph changed after bundle.json was read and the files verified is refused when loaded."""
    loaded = load_bundle(bundle)
    verify_files(loaded)
    write_graph(bundle / "model.onnx", scale=2.0)  # another graph of the same size
    assert (bundle / "model.onnx").stat().st_size == loaded.manifest.files["model.onnx"]["bytes"]
    with pytest.raises(BundleError, match="model.onnx: checksum mismatch"):
        Classifier(loaded, "fp32")


def test_a_graph_with_three_outputs_fails_check_and_batch(tmp_path, audio):
    bundle = make_bundle(tmp_path / "bundle", outputs=3)
    for result in (check(bundle), batch(bundle, audio)):
        assert result.exit_code == 1
        assert "model.onnx: output shape ['batch', 3], expected [batch, 2] (one probability per label: ac, fridge)" \
            in result.output


def test_a_graph_whose_output_size_is_unknown_fails_its_test_window(tmp_path):
    bundle = make_bundle(tmp_path / "bundle", outputs=3, hide_width=True)
    with pytest.raises(ModelOutputError, match=r"the fp32 graphs gave \[\[.*\]\] for a window of finite audio, "
                                               r"not 2 probabilities in \[0, 1\]"):
        open_classifier(bundle, "fp32")


def test_a_graph_giving_nan_is_an_error_naming_the_precision(tmp_path, audio):
    bundle = make_bundle(tmp_path / "bundle", scale=math.nan)
    result = check(bundle)
    assert result.exit_code == 1 and "the fp32 graphs gave [[nan, nan]] for a window of finite audio" in result.output
    result = CliRunner().invoke(main, ["batch", "--bundle", str(bundle), "--precision", "int8", str(audio)])
    assert result.exit_code == 1 and "the int8 graphs gave [[nan, nan]]" in result.output
    assert "NaN" not in result.output and "Traceback" not in result.output


def test_nan_mid_run_is_an_error_not_a_line(tmp_path):
    """The test window passes; a window that drives the graph to NaN later raises ModelOutputError."""
    bundle = make_bundle(tmp_path / "bundle", sqrt_of_max=True)
    quiet_then_negative = tmp_path / "negative.wav"
    hiss = np.random.default_rng(0).standard_normal(32_000) * 1e-3  # a signal: a constant is no sound (no-signal)
    samples = (np.concatenate([np.full(16_000, 0.1), np.full(16_000, -0.5)]) + hiss).astype(np.float32)
    soundfile.write(quiet_then_negative, samples, 16_000)
    classifier = open_classifier(bundle)
    with pytest.raises(ModelOutputError, match="the fp32 graphs gave"):
        classifier.predict(np.full((1, SAMPLES), -0.5, np.float32))
    result = CliRunner().invoke(main, ["stream", "--bundle", str(bundle), "--hop", "0.5", str(quiet_then_negative)])
    assert result.exit_code == 1 and "the fp32 graphs gave [[nan, nan]]" in result.output
    lines = [line for line in result.output.splitlines() if line.startswith("{")]
    assert lines and all(math.isfinite(json.loads(line)["p_ac"]) for line in lines)  # decided until then, no NaN


def test_decision_overrides_are_checked_like_the_file(bundle, audio):
    with pytest.raises(FieldError, match=r"^median_sec: 1e\+06 is outside \(0, 3600\]"):
        DecisionConfig().replace(median_sec=1e6)
    result = CliRunner().invoke(main, ["stream", "--bundle", str(bundle), "--median-sec", "1e6", str(audio)])
    assert result.exit_code == 2 and "'--median-sec': 1000000.0 is not in the range 0<x<=3600" in result.output  # the same bound


def _flat(decision: dict) -> dict:
    """A decision as files held it before levels were keyed by appliance (schema 2 and 3): t_NAME, NAME_on, NAME_off."""
    flat = {f"t_{name}": sides["threshold"] for name, sides in decision["levels"].items()}
    for name, sides in decision["levels"].items():
        flat.update({f"{name}_on": sides["on"], f"{name}_off": sides["off"]})
    return {**flat, "median_sec": decision["median_sec"], "debounce_sec": decision["debounce_sec"]}


def test_a_schema_3_bundle_with_flat_levels_still_loads(bundle_dir, tmp_path):
    """A bundle exported by the release before (schema 3: any appliances, flat levels) decides as it did."""
    old = tmp_path / "schema-3"
    shutil.copytree(bundle_dir, old)
    new = load_bundle(bundle_dir)

    def as_before(data):
        data.update(schema_version=3, decision=_flat(data["decision"]),
                    decisions={precision: _flat(decision) for precision, decision in data["decisions"].items()})

    edit(old, as_before)
    assert "t_ac" in json.loads((old / MANIFEST).read_text())["decision"]
    loaded = load_bundle(old)
    assert loaded.manifest.schema_version == 3
    assert all(loaded.decision_for(precision) == new.decision_for(precision) for precision in new.precisions)
    result = check(old)
    assert result.exit_code == 0 and "bundle ok (schema 3" in result.output, result.output
