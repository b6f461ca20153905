"""Workstation benchmark at full BEATs size (random weights): the figures quoted in docs/performance.md.

    uv run humwatch bench-training [--workdir bench-work] [--seconds 30]

Measures, in one run on this machine: extract_features at batch 1 and 8; seconds per window to
build the embedding cache; seconds per head epoch over 1,000 cached windows; export of a
full-size run with parity and int8; onnxruntime vs torch for one 6-s window (fp32 and int8).
Writes <workdir>/benchmark.json. Edge figures come from `humwatch bench-bundle` on the bundle it leaves.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path

import click
import numpy as np
import torch

from edge.core.bundle import load_bundle
from edge.core.files import sha256_file
from edge.core.labels import SEED
from edge.core.proc import median_sec, timed
from edge.core.window import WindowConfig
from edge.engine.classifier import Classifier
from export.exporter import export_run
from train.beats import BeatsConfig, build_beats, embedding_frames
from train.cache import EmbeddingCache, Recording
from train.device import resolve_device
from train.head import AttentionPoolHead
from train.manifests import prepare
from train.run import Run
from train.synth import write_recordings
from train.trainer import MaskedBCE, Trainer, TrainOptions, cosine_with_warmup, train_head_epoch


def measure_extract_features(model, window_samples: int) -> dict:
    results = {}
    for batch, repeats in ((1, 3), (8, 2)):
        waveform = torch.randn(batch, window_samples) * 0.05
        with torch.inference_mode():
            seconds = median_sec(lambda: model.extract_features(waveform), repeats)
        results[f"batch{batch}_sec"] = seconds
        results[f"batch{batch}_sec_per_window"] = seconds / batch
    return results


def measure_head_epoch(dim: int, frames: int, windows: int = 1000, batch_size: int = 32) -> float:
    """Seconds per epoch of the head over `windows` random cached windows with random labels of the seed's appliances."""
    rng = np.random.default_rng(0)
    inputs = torch.from_numpy(rng.standard_normal((windows, frames, dim), dtype=np.float32).astype(np.float16))
    labels = rng.integers(0, 2, (windows, len(SEED.names))).astype(np.float32)
    head = AttentionPoolHead(dim, labels=labels.shape[1])
    optimizer = torch.optim.AdamW(head.parameters(), lr=1e-3, weight_decay=1e-2)
    steps = math.ceil(windows / batch_size)
    scheduler = cosine_with_warmup(optimizer, 10 * steps, 200)
    loss_fn = MaskedBCE(labels)
    return median_sec(lambda: train_head_epoch(head, optimizer, scheduler, loss_fn, inputs, torch.from_numpy(labels), rng, steps), 2)


def measure_cache_build(model, checkpoint: Path, window: WindowConfig, recordings: list, device_name: str) -> dict:
    """Seconds per window building the embedding cache on the CPU and, when it is another, on `device`;
    with two devices also the largest |difference| of their embeddings."""
    devices = sorted({torch.device("cpu"), resolve_device(device_name)}, key=str)
    report, caches = {}, {}
    for device in devices:
        cache = EmbeddingCache(Path(f"data/cache-{device.type}"), sha256_file(checkpoint), window, 0, [], device=device)
        stats, elapsed, _ = timed(cache.build, model.to(device), recordings, 1)
        report[device.type] = {"windows": stats.encoded_windows, "sec": elapsed, "windows_per_sec": stats.encoded_windows / elapsed,
                               "sec_per_window": elapsed / stats.encoded_windows}
        caches[device.type] = cache
    model.cpu()
    if len(caches) == 2:
        first, second = caches.values()
        report["max_abs_embedding_diff"] = max(
            float(np.max(np.abs(first.load(r, v).astype(np.float32) - second.load(r, v).astype(np.float32))))
            for r in recordings for v in (0, 1))
    return report


def run_benchmark(workdir: Path, seconds: float, device: str = "auto") -> None:
    """Measure everything listed in the module docstring; print it and write <workdir>/benchmark.json."""
    workdir.mkdir(parents=True, exist_ok=True)
    os.chdir(workdir)
    report: dict = {"threads": torch.get_num_threads(), "cpu_count": os.cpu_count()}
    window = WindowConfig()
    cfg = dataclasses.asdict(BeatsConfig())
    model = build_beats(cfg)
    checkpoint = Path("random_full_beats.pt")
    torch.save({"cfg": cfg, "model": model.state_dict()}, checkpoint)
    click.echo("extract_features ...")
    report["extract_features"] = measure_extract_features(model, window.window_samples)
    click.echo(json.dumps(report["extract_features"]))

    write_recordings(Path("samples"), seconds=seconds, seed=0)
    files, _ = prepare(Path("samples"), Path("data/manifests"), window)
    options = TrainOptions(beats_checkpoint=checkpoint, epochs=3, views=2, device=device)
    recordings = [Recording(r.recording_id, Path(r.path), r.sha256) for r in files.itertuples()]
    click.echo("embedding cache ...")
    report["cache_build"] = measure_cache_build(model, checkpoint, window, recordings[:2], device)
    click.echo(json.dumps(report["cache_build"]))

    frames = embedding_frames(window.window_samples)
    report["head_epoch_1000_windows_sec"] = measure_head_epoch(model.embed_dim, frames)
    click.echo(f"head epoch over 1000 cached windows: {report['head_epoch_1000_windows_sec']:.2f} s")

    click.echo("training a full-size run (cache, 3 epochs) ...")
    run_dir = Trainer(options, log=lambda *_: None).run()
    click.echo("exporting with --int8 ...")
    bundle_dir, report["export_sec"], _ = timed(lambda: export_run(run_dir, Path("bundles/full-random"), int8=True,
                                                                   parity_windows_per_file=4, log=click.echo, device=device))
    manifest = load_bundle(bundle_dir).manifest
    report["parity"] = manifest.parity
    report["graph_mb"] = {name: entry["bytes"] / 1e6 for name, entry in manifest.files.items()}

    waveform = (np.random.default_rng(1).standard_normal((1, window.window_samples)) * 0.05).astype(np.float32)
    bundle = load_bundle(bundle_dir)
    full_model = Run.open(run_dir).load_model()
    with torch.inference_mode():
        torch_sec = median_sec(lambda: full_model.probabilities(torch.from_numpy(waveform)), 3)
    report["one_window_sec"] = {"torch": torch_sec}
    for precision in bundle.precisions:
        classifier = Classifier(bundle, precision)
        report["one_window_sec"][f"onnxruntime_{precision}"] = median_sec(lambda: classifier.predict(waveform), 3)
    report["one_window_sec"]["ratio_torch_over_ort_fp32"] = torch_sec / report["one_window_sec"]["onnxruntime_fp32"]
    Path("benchmark.json").write_text(json.dumps(report, indent=2))
    click.echo(json.dumps(report, indent=2))
    click.echo(f"bundle for 'humwatch bench-bundle': {workdir / bundle_dir}")
