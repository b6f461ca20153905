"""A training run -> a bundle directory, parity-checked, optionally with an int8 encoder.

The bundle is built beside its destination and renamed into place only after parity passed and
bundle.json was written (edge.core.files.DirectoryBuild); a failed export leaves nothing.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import shutil
import time
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
import onnxruntime
import pandas as pd
import torch
from tqdm import tqdm

from edge.core.audio import load_windows
from edge.core.bundle import (
    Bundle,
    BundleError,
    FloatParity,
    Manifest,
    PrecisionReport,
    load_bundle,
    verify_files,
    write_bundle_manifest,
)
from edge.core.decision import DecisionConfig
from edge.core.files import DirectoryBuild
from edge.core.window import WindowConfig
from edge.engine import cpu
from edge.engine.classifier import Classifier
from export.flops import graph_gflop
from export.graphs import OPSET, export_encoder, export_head, export_student
from export.parity import DEFAULT_BAR, STUDENT_BAR, agreement, check_float_parity, edge_case_windows, parity_text
from export.quantize import QUANTIZATION, ms_per_window, quantize_encoder, weight_matmuls
from train.beats import embedding_frames, encoder_fingerprint
from train.device import resolve_device
from train.head import HumwatchModel
from train.run import Run
from train.student import StudentRun, latest_student

PARITY_WINDOWS_PER_FILE = 16
SPEED_WINDOWS = 4


class ExportError(RuntimeError):
    """Export refused or failed; the message says why and what to do."""


def _versions() -> dict:
    return {
        "humwatch": importlib.metadata.version("humwatch"),
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
    }


def validation_windows(run: Run, per_file: int) -> tuple[np.ndarray, pd.DataFrame]:
    """Up to `per_file` evenly spaced windows of each validation recording of the run."""
    arrays, rows = [], []
    for recording in run.recordings("validation"):
        if not recording.path.is_file():
            raise ExportError(f"{recording.path}: a validation recording of {run.path} is gone; parity needs it "
                              "(put it back, or export on the machine that trained)")
        windows, _ = load_windows(recording.path, run.window)
        chosen = np.unique(np.linspace(0, len(windows) - 1, min(per_file, len(windows))).round().astype(int))
        arrays.append(windows[chosen])
        rows.append(pd.DataFrame({"recording_id": recording.recording_id, "window_index": chosen}))
    return np.concatenate(arrays), pd.concat(rows, ignore_index=True)


def validation_probs(classifier: Classifier, run: Run) -> dict[str, np.ndarray]:
    """{recording id: probabilities of every window} of the run's validation recordings (batch 1)."""
    recordings = tqdm(run.recordings("validation"), desc=f"onnxruntime {classifier.precision}", unit="file", leave=False)
    return {recording.recording_id: classifier.predict(load_windows(recording.path, run.window)[0]) for recording in recordings}


def _graph_bytes(classifier: Classifier) -> int:
    return sum(path.stat().st_size for path in classifier.bundle.graph_paths(classifier.precision).values())


def _precision_report(job: ExportJob, fp32: Classifier, candidate: Classifier, reference: dict[str, np.ndarray],
                      bar: dict = DEFAULT_BAR, flop_share: float | None = None, **extras) -> PrecisionReport:
    """Agreement of a faster precision with fp32 (each with its own decision settings), its speed and its
    size; `extras` are the report's optional fields."""
    cases = edge_case_windows(job.window.window_samples)
    case_inputs = np.stack(list(cases.values()))
    measured = agreement(reference, validation_probs(candidate, job.run), fp32.predict(case_inputs),
                         candidate.predict(case_inputs), list(cases), job.decision, job.window.hop_sec,
                         bar=bar, candidate_decision=candidate.decision, flop_share=flop_share)
    speed_inputs = case_inputs[:SPEED_WINDOWS]
    fp32_ms, candidate_ms = ms_per_window(fp32, speed_inputs), ms_per_window(candidate, speed_inputs)
    return PrecisionReport.measured(
        measured, model_bytes=_graph_bytes(candidate), fp32_model_bytes=_graph_bytes(fp32),
        fp32_ms_per_window=fp32_ms, ms_per_window=candidate_ms, speedup_vs_fp32=fp32_ms / candidate_ms,
        measured_on=cpu.describe(),  # the machine and int8 kernel mode behind these figures
        **extras)


def reusable_encoder(bundle_dir: Path, fingerprint: str, window: WindowConfig) -> Bundle:
    """A verified bundle whose encoder graphs the new bundle may copy; ExportError says why not."""
    try:
        bundle = load_bundle(bundle_dir)
        verify_files(bundle)
    except BundleError as error:
        raise ExportError(f"--reuse-encoder: {error}") from error
    if bundle.manifest.source.get("encoder_sha256") != fingerprint:
        raise ExportError(f"--reuse-encoder {bundle_dir}: its encoder comes from other weights (another checkpoint, "
                          "or a run whose stage 2 fine-tuned the encoder); export without --reuse-encoder")
    if bundle.window != window:
        raise ExportError(f"--reuse-encoder {bundle_dir}: window {bundle.window} differs from the run's {window}")
    return bundle


@dataclasses.dataclass
class ExportJob:
    """Everything one export needs, read from the run."""

    name: str
    run: Run
    model: HumwatchModel
    decision: DecisionConfig
    window: WindowConfig
    directory: Path
    validation: np.ndarray
    windows: pd.DataFrame
    fingerprint: str
    log: Callable[[str], None]
    device: torch.device
    student: StudentRun | None
    parity_tolerance: float | None = None


def export_run(run_dir: Path, out_dir: Path | None = None, int8: bool = False,
               parity_windows_per_file: int = PARITY_WINDOWS_PER_FILE, reuse_encoder: Path | None = None,
               log=print, device: str = "auto", student: Path | None | bool = True,
               parity_tolerance: float | None = None) -> Path:
    """Export a run to a bundle directory and return its path.

    With reuse_encoder, the encoder graphs (float32 and, if there, int8) are copied from that
    bundle instead of exported, when they come from the same weights: only the head is new.
    `student`: True takes the run's newest student (if it has one), a path that student, False none.
    `parity_tolerance`: the float parity's bound on |Δlogit| (None: export.parity.LOGIT_TOLERANCE).
    """
    torch_device = resolve_device(device)
    run = Run.open(run_dir)
    chosen_student = _student(run, student)
    model = run.load_model()
    out_dir = Path(out_dir) if out_dir else Path("bundles") / run.path.name
    fingerprint = encoder_fingerprint(model.encoder)
    reused = reusable_encoder(Path(reuse_encoder), fingerprint, run.window) if reuse_encoder else None
    validation, windows = validation_windows(run, parity_windows_per_file)
    try:
        build = DirectoryBuild(out_dir)
    except FileExistsError as error:
        raise ExportError(f"{error}: pick another --out") from error
    with build:
        job = ExportJob(out_dir.name, run, model, run.decision, run.window, build.path, validation, windows,
                        fingerprint, log, torch_device, chosen_student, parity_tolerance)
        write_bundle_manifest(build.path, _build(job, int8, reused))
    return build.final


def _student(run: Run, student: Path | None | bool) -> StudentRun | None:
    if student is False:
        return None
    if student is True:
        return latest_student(run)
    opened = StudentRun.open(student)
    if opened.config.teacher_run_id != run.run_id:
        raise ExportError(f"--student {student}: distilled from run {opened.config.teacher_run_id}, "
                          f"not {run.run_id}; pick one of {[p.name for p in run.students()]}")
    return opened


def _encoders(job: ExportJob, int8: bool, reused: Bundle | None) -> dict[str, str]:
    """Write the encoder graph(s) into the bundle: {precision: file name}."""
    if reused is not None:
        names = {precision: reused.graph_paths(precision)["encoder"].name for precision in reused.precisions}
        for file_name in names.values():
            job.log(f"copying {file_name} from {reused.path} ...")
            shutil.copy2(reused.path / file_name, job.directory / file_name)
    else:
        job.log("exporting encoder.onnx ...")
        export_encoder(job.model.encoder, job.window.window_samples, job.directory / "encoder.onnx")
        names = {"fp32": "encoder.onnx"}
    if int8 and "int8" not in names:
        job.log("quantizing the encoder to int8 ...")
        quantize_encoder(job.directory / names["fp32"], job.directory / "encoder.int8.onnx")
        names["int8"] = "encoder.int8.onnx"
    return names


def _build(job: ExportJob, int8: bool, reused: Bundle | None) -> Manifest:
    frames = embedding_frames(job.window.window_samples)
    encoders = _encoders(job, int8, reused)
    job.log("exporting head.onnx ...")
    export_head(job.model.head, frames, job.directory / "head.onnx")
    config = job.run.config
    manifest = Manifest(
        name=job.name, created=time.strftime("%Y-%m-%dT%H:%M:%S%z"), window=job.window, decision=job.decision,
        graphs={"fp32": {"encoder": encoders["fp32"], "head": "head.onnx"}}, default_precision="fp32",
        embedding={"frames": frames, "dim": job.model.encoder.embed_dim}, opset=OPSET, versions=_versions(),
        source={"run_id": config.run_id, "beats_checkpoint_sha256": config.beats_checkpoint_sha256,
                "beats_checkpoint_name": config.beats_checkpoint.name,
                "beats_cfg": dataclasses.asdict(config.beats_cfg),
                "stage2": dataclasses.asdict(config.stage2) if config.stage2 else None,
                "encoder_sha256": job.fingerprint,
                "encoder_reused_from": reused.manifest.name if reused else None},
        training_metrics=_training_metrics(job.run),
    )
    bundle = Bundle(job.directory, manifest)
    fp32 = Classifier(bundle, "fp32")
    job.log(f"parity: torch ({job.device}) vs onnxruntime on {len(job.validation)} validation windows + edge cases ...")
    parity = _passed(job, "fp32", check_float_parity(job.model.to(job.device), fp32, job.validation, job.windows,
                                                      job.decision, job.parity_tolerance))
    job.model.cpu()
    manifest.parity["fp32"] = parity.to_json()
    manifest.gflop_per_window["fp32"] = graph_gflop([job.directory / name for name in manifest.graphs["fp32"].values()])
    reference = validation_probs(fp32, job.run) if "int8" in encoders or job.student else None
    if "int8" in encoders:
        manifest.graphs["int8"] = {"encoder": encoders["int8"], "head": "head.onnx"}
        job.log("int8 vs fp32: every validation window at batch 1, the recordings streamed, edge cases ...")
        quantization = {**QUANTIZATION, "quantized_matmuls": len(weight_matmuls(job.directory / encoders["fp32"]))}
        report = _precision_report(job, fp32, Classifier(bundle, "int8"), reference, quantization=quantization)
        manifest.parity["int8"] = report.to_json()
        manifest.gflop_per_window["int8"] = manifest.gflop_per_window["fp32"]  # the same operations, in int8
        if report.meets_bar:
            manifest.default_precision = "int8"
    if job.student:
        _add_student(job, bundle, fp32, reference)
    return manifest


def _add_student(job: ExportJob, bundle: Bundle, fp32: Classifier, reference: dict[str, np.ndarray]) -> None:
    """student.onnx: parity with its torch model, agreement with BEATs fp32; the default if it meets STUDENT_BAR."""
    manifest, student = bundle.manifest, job.student.load_student()
    job.log(f"exporting student.onnx from {job.student.path} ...")
    export_student(student, job.window.window_samples, job.directory / "student.onnx")
    manifest.graphs["student"] = {"model": "student.onnx"}
    manifest.decisions["student"] = job.student.decision.to_dict()
    manifest.gflop_per_window["student"] = graph_gflop([job.directory / "student.onnx"])
    classifier = Classifier(bundle, "student")
    parity = _passed(job, "student", check_float_parity(student, classifier, job.validation, job.windows,
                                                         classifier.decision, job.parity_tolerance))
    job.log("student vs BEATs fp32: every validation window, the recordings streamed, edge cases ...")
    share = manifest.gflop_per_window["student"] / manifest.gflop_per_window["fp32"]
    report = _precision_report(job, fp32, classifier, reference, STUDENT_BAR, share, float_parity=parity,
                               distilled_from=job.student.path.name)
    manifest.parity["student"] = report.to_json()
    if report.meets_bar:
        manifest.default_precision = "student"


def _passed(job: ExportJob, precision: str, parity: FloatParity) -> FloatParity:
    """`parity`, logged; an ExportError naming what failed and the way past it when it did not pass."""
    job.log(f"parity {precision}: {parity_text(parity)}")
    if parity.passed:
        return parity
    if parity.state_agreement < 1.0:
        raise ExportError(f"{precision} parity failed: torch and onnxruntime decide {list(parity.disagreeing_files)} "
                          "differently, which no tolerance accepts: the graphs are wrong, or a file's median sits on "
                          f"its threshold: {json.dumps(parity.to_json())}")
    raise ExportError(
        f"{precision} parity failed: |Δlogit| {parity.max_logit_diff:.2e} on {parity.worst} is beyond the tolerance "
        f"{parity.tolerance:g} (set by {parity.tolerance_set_by}). A wrong graph moves logits by 0.1 and more; if this "
        f"is float32 rounding on this CPU, export again with humwatch export --run {job.run.path} --parity-tolerance "
        f"{2 * parity.max_logit_diff:.0e} (bundle.json records it): {json.dumps(parity.to_json())}")


def _training_metrics(run: Run) -> dict:
    """The run's best epoch and, when chosen, its thresholds' validation metrics."""
    metrics = {"best_epoch": run.best_metrics()}
    if run.thresholds:
        metrics["at_thresholds"] = run.thresholds["validation_metrics"]
    return metrics
