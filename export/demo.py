"""The demo (`humwatch demo`): the whole chain in a work directory, with no downloads.

synth (unless --samples) -> prepare -> train -> thresholds -> distill -> export -> batch, then a summary.
It synthesizes the seed's two appliances (AC, fridge) unless told others (--appliances ac,fridge,dehumidifier).
Without --beats-checkpoint it writes a small BEATs-architecture checkpoint with random weights
and says so: that shows the pipeline working, not what BEATs can hear.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import click
import torch

from edge.core.decision import DecisionConfig, level_name
from edge.core.labels import SEED_APPLIANCES, parse_sample_name
from edge.core.output import format_table
from edge.core.proc import timed
from edge.engine.batch import run_batch
from edge.engine.detector import Detector
from export.exporter import export_run
from train.beats import BeatsConfig, build_beats
from train.manifests import prepare
from train.metrics import probability_columns
from train.report import render_report
from train.run import Run
from train.student import Distiller, DistillOptions
from train.synth import write_recordings
from train.thresholds import choose_thresholds
from train.trainer import Trainer, TrainOptions

STAND_IN_CONFIG = BeatsConfig(embed_dim=32, encoder_layers=2, encoder_embed_dim=64, encoder_ffn_embed_dim=128,
                              encoder_attention_heads=4)
STAND_IN_CAVEAT = (
    "NOTE: no --beats-checkpoint given, so this demo uses a small BEATs-architecture stand-in with RANDOM\n"
    "weights. It shows the pipeline end to end; it says nothing about the accuracy of the real BEATs.\n"
    "A random encoder still hears the AC (+12 dB, broadband); the 1-2 dB fridge is beyond it.\n"
    "For real results: humwatch demo --beats-checkpoint BEATs_iter3_plus_AS2M.pt"
)


def write_stand_in_checkpoint(path: Path, seed: int = 0) -> Path:
    """A checkpoint in the official format, small and random (never used with a real checkpoint)."""
    torch.manual_seed(seed)
    cfg = dataclasses.asdict(STAND_IN_CONFIG)
    torch.save({"cfg": cfg, "model": build_beats(cfg).state_dict()}, path)
    return path


def _step(title: str) -> None:
    click.secho(f"\n== {title}", bold=True)


def run_demo(beats_checkpoint: Path | None, workdir: Path, samples_dir: Path | None, seconds: float, epochs: int,
             int8: bool, device: str = "auto", appliances: tuple[str, ...] = SEED_APPLIANCES) -> None:
    """synth (of `appliances`) -> prepare -> train -> thresholds -> export -> batch, printing each step and
    a summary."""
    started = time.perf_counter()
    workdir.mkdir(parents=True, exist_ok=True)
    stand_in = beats_checkpoint is None
    if stand_in:
        click.secho(STAND_IN_CAVEAT, fg="yellow")
        beats_checkpoint = write_stand_in_checkpoint(workdir / "stand_in_beats_random.pt")

    if samples_dir is None:
        _step(f"synth: {', '.join(appliances)}, {seconds:g} s a recording")
        samples_dir = workdir / "samples"
        click.echo(f"{len(write_recordings(samples_dir, seconds=seconds, seed=0, appliances=appliances))} recordings")
    _step(f"prepare: {samples_dir}")
    manifests = workdir / "data" / "manifests"
    files, windows = prepare(samples_dir, manifests)
    click.echo(f"{len(files)} recordings, {len(windows)} windows")

    _step("train: frozen encoder, cached embeddings, validation on the night recordings")
    options = TrainOptions(beats_checkpoint=beats_checkpoint, manifests_dir=manifests, models_dir=workdir / "models",
                           cache_dir=workdir / "data" / "cache", epochs=epochs, batch_size=16, warmup_steps=40,
                           device=device)
    run_dir = Trainer(options, log=click.echo).run()
    _step("thresholds")
    run = Run.open(run_dir)
    thresholds = choose_thresholds(run)
    click.echo(", ".join(f"{level_name(name, 'threshold')} {levels['threshold']:.2f}"
                         for name, levels in thresholds["levels"].items())
               + f"; report (open it in a browser): {render_report(run)}")
    for note in thresholds["unseparated"].values():
        click.secho(f"warning: {note}", fg="yellow")
    _step("distill: a small student taught by the run's model")
    Distiller(run_dir, DistillOptions(device=device), log=click.echo).run_distillation()
    _step("export: ONNX bundle, parity-checked, with the student" + (" and int8" if int8 else ""))
    bundle_dir = export_run(run_dir, workdir / "bundles" / run_dir.name, int8=int8, parity_windows_per_file=8,
                            log=click.echo, device=device)

    _step("batch: every recording through the bundle with onnxruntime")
    detector = Detector.from_bundle(bundle_dir, hop=None)
    results, batch_sec, _ = timed(lambda: list(run_batch(detector, sorted(samples_dir.iterdir()))))
    _summary([result.to_json() for result in results], thresholds, detector.decision, detector.classifier.bundle, detector.classifier.precision,
             batch_sec, stand_in, time.perf_counter() - started)
    example = next(path for path in sorted(samples_dir.iterdir()) if parse_sample_name(path))
    click.secho(f"\nnext: one recording hop by hop, as the live monitor hears a microphone:\n"
                f"  humwatch stream --bundle {bundle_dir} {example}\n"
                "then your own recordings (docs/workstation.md names them), the same chain on them:\n"
                "  humwatch demo --samples DIR_OF_YOUR_RECORDINGS", bold=True)


def _figure(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _summary(lines: list[dict], thresholds: dict, decision: DecisionConfig, bundle, precision: str, batch_sec: float,
             stand_in: bool, total_sec: float) -> None:
    """Each file's expected state (its name's labels under the bundle's appliances; none where an appliance the
    name leaves out could decide it) against the bundle's, then per appliance on how many of the files that
    name it the bundle heard it right (median p >= its threshold)."""
    appliances = decision.appliances
    probabilities = probability_columns(appliances.names)
    rows, right, named = [], dict.fromkeys(appliances.names, 0), dict.fromkeys(appliances.names, 0)
    for line in lines:
        sample = parse_sample_name(line["path"])
        labels = sample.labels if sample else {}
        expected = appliances.status(labels)
        rows.append({"file": Path(line["path"]).name, "expected": expected, "predicted": line.get("status"),
                     **{key: line.get(key) for key in probabilities},
                     "ok": None if expected is None else "yes" if expected == line.get("status") else "no",
                     "error": line.get("error")})
        for name in appliances.names:
            if name in labels and line.get(f"p_{name}") is not None:
                named[name] += 1
                right[name] += labels[name] == (line[f"p_{name}"] >= decision.levels[name].threshold)
    _step("summary")
    click.echo(format_table(rows, ["file", "expected", "predicted", *probabilities, "ok"]))
    click.echo("\n" + ", ".join(f"{name} right on {right[name]}/{named[name]} files" for name in appliances.names)
               + f"; states right on {sum(r['ok'] == 'yes' for r in rows)}/{sum(r['ok'] is not None for r in rows)}")
    metrics = thresholds["validation_metrics"]
    click.echo("validation (night): " + ", ".join(f"F1 {name} {_figure(metrics[f'f1_{name}'])}" for name in appliances.names)
               + f", {len(appliances.statuses)}-state accuracy {_figure(metrics['state_accuracy'])}")
    windows = sum(line.get("windows", 0) for line in lines)
    click.echo(f"bundle: {bundle.path} (default precision {bundle.default_precision})")
    student, gflop = bundle.manifest.report("student"), bundle.manifest.gflop_per_window
    teacher = "its stand-in teacher" if stand_in else "BEATs"
    click.echo(f"student: {gflop['student'] * 1000:.2f} MFLOP a window ({student.flop_share:.2%} of {teacher}); "
               f"file states equal {teacher}'s on {student.files - len(student.disagreeing_files)}/{student.files} "
               f"validation files, debounced states on {student.debounced_hop_agreement:.1%} of "
               f"{student.evidence['streamed_hops']} streamed hops")
    click.echo(f"onnxruntime {precision}: {1000 * batch_sec / max(windows, 1):.1f} ms per window "
               f"({windows} windows one at a time, decoding included)")
    click.echo(f"demo took {total_sec:.0f} s")
    if stand_in:
        click.secho("\n" + STAND_IN_CAVEAT, fg="yellow")
