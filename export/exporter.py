"""A training run -> a bundle directory, parity-checked, optionally with an int8 encoder.

The bundle is assembled in ``.partial-<name>-<pid>`` beside its destination and renamed into
place only after parity passed and bundle.json was written; a failed export leaves nothing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import json
import os
import shutil
import time
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
import onnxruntime
import pandas as pd
import torch

from edge.core.audio import load_windows
from edge.core.bundle import Bundle, BundleError, decision_to_manifest, load_bundle, verify_files, write_manifest
from edge.core.defaults import DecisionConfig, WindowConfig
from edge.core.files import read_yaml
from edge.monitor.runtime import Classifier
from export.graphs import OPSET, export_encoder, export_head
from export.parity import check_float_parity, compare, parity_inputs
from export.quantize import ms_per_window, quantize_encoder, weight_matmuls
from train.fbank import num_frames
from train.head import HumwatchModel
from train.manifests import load_manifests, resolve
from train.thresholds import load_decision
from train.trainer import load_run_model

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


def embedding_frames(window_samples: int) -> int:
    """Frame embeddings BEATs yields for one window: (fbank frames // 16) time x 8 frequency patches."""
    return (num_frames(window_samples) // 16) * (128 // 16)


def validation_windows(config: dict, window: WindowConfig, per_file: int) -> tuple[np.ndarray, pd.DataFrame]:
    """Up to `per_file` evenly spaced windows of each validation recording of the run."""
    manifests_dir = Path(config["options"]["manifests_dir"])
    files, _, _ = load_manifests(manifests_dir)
    arrays, rows = [], []
    for row in files[files.recording_id.isin(config["split"]["val_recordings"])].itertuples():
        windows, _ = load_windows(resolve(row.path), window)
        chosen = np.unique(np.linspace(0, len(windows) - 1, min(per_file, len(windows))).round().astype(int))
        arrays.append(windows[chosen])
        rows.append(pd.DataFrame({"recording_id": row.recording_id, "window_index": chosen}))
    if not arrays:
        raise ExportError(f"{manifests_dir}: none of the run's validation recordings are in files.csv")
    return np.concatenate(arrays), pd.concat(rows, ignore_index=True)


def _int8_report(fp32: Classifier, int8: Classifier, torch_probs: np.ndarray, inputs: np.ndarray,
                 windows: pd.DataFrame, decision: DecisionConfig, n_validation: int, quantized: list[str]) -> dict:
    report = compare(torch_probs, int8.predict(inputs), windows, decision, n_validation)
    speed_inputs = inputs[:SPEED_WINDOWS]
    fp32_ms, int8_ms = ms_per_window(fp32, speed_inputs), ms_per_window(int8, speed_inputs)
    report.update({
        "quantized_matmuls": len(quantized),
        "encoder_bytes": int8.bundle.graph_paths("int8")["encoder"].stat().st_size,
        "fp32_encoder_bytes": fp32.bundle.graph_paths("fp32")["encoder"].stat().st_size,
        "fp32_ms_per_window": fp32_ms,
        "int8_ms_per_window": int8_ms,
        "speedup_vs_fp32": fp32_ms / int8_ms,
    })
    return report


def encoder_fingerprint(encoder: torch.nn.Module) -> str:
    """sha256 over the encoder's weights: equal fingerprints export to interchangeable graphs."""
    digest = hashlib.sha256()
    for key, tensor in sorted(encoder.state_dict().items()):
        digest.update(key.encode())
        digest.update(tensor.detach().contiguous().numpy().tobytes())
    return digest.hexdigest()


def reusable_encoder(bundle_dir: Path, fingerprint: str, window: WindowConfig) -> Bundle:
    """A verified bundle whose encoder graphs the new bundle may copy; ExportError says why not."""
    try:
        bundle = load_bundle(bundle_dir)
        verify_files(bundle)
    except BundleError as error:
        raise ExportError(f"--reuse-encoder: {error}") from error
    if bundle.manifest["source"].get("encoder_sha256") != fingerprint:
        raise ExportError(f"--reuse-encoder {bundle_dir}: its encoder comes from other weights (another checkpoint, "
                          "or a run whose stage 2 fine-tuned the encoder); export without --reuse-encoder")
    if bundle.window != window:
        raise ExportError(f"--reuse-encoder {bundle_dir}: window {bundle.window} differs from the run's {window}")
    return bundle


@dataclasses.dataclass
class ExportJob:
    """Everything one export needs, read from the run."""

    name: str
    run_dir: Path
    model: HumwatchModel
    config: dict
    decision: DecisionConfig
    window: WindowConfig
    directory: Path
    validation: np.ndarray
    windows: pd.DataFrame
    fingerprint: str
    log: Callable[[str], None]


def export_run(run_dir: Path, out_dir: Path | None = None, int8: bool = False,
               parity_windows_per_file: int = PARITY_WINDOWS_PER_FILE, reuse_encoder: Path | None = None,
               log=print) -> Path:
    """Export a run to a bundle directory and return its path.

    With reuse_encoder, the encoder graphs (float32 and, if there, int8) are copied from that
    bundle instead of exported, when they come from the same weights: only the head is new.
    """
    run_dir = Path(run_dir)
    model, config = load_run_model(run_dir)
    window = WindowConfig.from_dict(config["window"])
    out_dir = Path(out_dir) if out_dir else Path("bundles") / run_dir.name
    if out_dir.exists():
        raise ExportError(f"{out_dir} already exists; pick another --out (bundles are never overwritten)")
    fingerprint = encoder_fingerprint(model.encoder)
    reused = reusable_encoder(Path(reuse_encoder), fingerprint, window) if reuse_encoder else None
    validation, windows = validation_windows(config, window, parity_windows_per_file)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    partial = out_dir.parent / f".partial-{out_dir.name}-{os.getpid()}"
    partial.mkdir()
    try:
        job = ExportJob(out_dir.name, run_dir, model, config, load_decision(run_dir), window, partial,
                        validation, windows, fingerprint, log)
        manifest = _build(job, int8, reused)
        write_manifest(partial, manifest)
        os.rename(partial, out_dir)
    finally:
        if partial.exists():
            shutil.rmtree(partial)
    return out_dir


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


def _build(job: ExportJob, int8: bool, reused: Bundle | None) -> dict:
    frames = embedding_frames(job.window.window_samples)
    encoders = _encoders(job, int8, reused)
    job.log("exporting head.onnx ...")
    export_head(job.model.head, frames, job.directory / "head.onnx")
    config = job.config
    manifest = {
        "name": job.name, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "window": job.window.to_dict(), **decision_to_manifest(job.decision),
        "graphs": {"fp32": {"encoder": encoders["fp32"], "head": "head.onnx"}}, "default_precision": "fp32",
        "embedding": {"frames": frames, "dim": job.model.encoder.embed_dim},
        "opset": OPSET, "versions": _versions(),
        "source": {"run_id": config["run_id"], "beats_checkpoint_sha256": config["beats_checkpoint"]["sha256"],
                   "beats_checkpoint_name": Path(config["beats_checkpoint"]["path"]).name,
                   "beats_cfg": config["beats_cfg"], "stage2": config.get("stage2"),
                   "encoder_sha256": job.fingerprint,
                   "encoder_reused_from": reused.manifest["name"] if reused else None},
        "training_metrics": _training_metrics(job.run_dir),
    }
    bundle = Bundle(job.directory, manifest, job.window, job.decision)
    fp32 = Classifier(bundle, "fp32")
    job.log(f"parity: torch vs onnxruntime on {len(job.validation)} validation windows + edge cases ...")
    parity, torch_probs, _ = check_float_parity(job.model, fp32, job.validation, job.windows, job.decision)
    manifest["parity"] = {"fp32": parity}
    if not parity["passed"]:
        raise ExportError(f"parity failed (tolerance {parity['tolerance']}): {json.dumps(parity)}")
    if "int8" in encoders:
        manifest["graphs"]["int8"] = {"encoder": encoders["int8"], "head": "head.onnx"}
        inputs, _ = parity_inputs(job.validation, job.window.window_samples)
        report = _int8_report(fp32, Classifier(bundle, "int8"), torch_probs, inputs, job.windows,
                              job.decision, len(job.validation), weight_matmuls(job.directory / encoders["fp32"]))
        if report["state_agreement"] == 1.0:
            manifest["default_precision"] = "int8"
            report["default_reason"] = "int8 agrees with float32 on every validation file's state"
        else:
            report["default_reason"] = (f"float32 stays the default: int8 disagrees on {report['disagreeing_files']}; "
                                        "int8 is an alternative (--precision int8)")
        manifest["parity"]["int8"] = report
    return manifest


def _training_metrics(run_dir: Path) -> dict:
    """The run's best epoch (best_metrics.json) and, when chosen, its thresholds' validation metrics."""
    metrics = {"best_epoch": json.loads((run_dir / "best_metrics.json").read_text())}
    thresholds = run_dir / "thresholds.yaml"
    if thresholds.is_file():
        metrics["at_thresholds"] = read_yaml(thresholds)["validation_metrics"]
    return metrics
