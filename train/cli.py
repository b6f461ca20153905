"""Workstation commands (need the train extra; heavy imports happen inside each command)."""

from __future__ import annotations

from pathlib import Path

import click

from edge.core.options import build, click_option, click_options
from edge.core.output import format_table
from edge.core.window import WindowConfig
from train.options import PATH, DistillOptions, TrainOptions

EXISTING_DIR = click.Path(path_type=Path, exists=True, file_okay=False)
DEVICE_OPTION = click_option(DistillOptions, "device")  # evaluate's and export's: the same as train's and distill's


def print_metrics(metrics: dict) -> None:
    from train.metrics import metric_columns, metric_rows

    click.echo(format_table(metric_rows(metrics), metric_columns(metrics)))
    click.echo("window AUC: " + ", ".join(f"{name} {metrics[f'window_auc_{name}'] or float('nan'):.3f}"
                                          for name in metrics["labels"]))


@click.command()
@click.argument("outdir", type=PATH)
@click.option("--seconds", type=click.FloatRange(min=WindowConfig.window_sec), default=180.0, show_default=True, help="Length of each recording.")
@click.option("--seed", type=int, default=0, show_default=True, help="The same seed writes the same recordings.")
@click.option("--copies", type=click.IntRange(min=1), default=1, show_default=True, help="Takes per condition (tagged -1, -2, ...).")
@click.option("--appliances", default="ac,fridge", show_default=True,
              help="Comma-separated appliances, e.g. ac,fridge,dehumidifier: one file per on/off combination and daypart.")
def synth(outdir: Path, seconds: float, seed: int, copies: int, appliances: str) -> None:
    """Write synthetic recordings to try the chain on.

    Deterministic 44.1 kHz stereo AAC .m4a files into OUTDIR, named as recordings must be."""
    from train.synth import write_recordings

    try:
        paths = write_recordings(outdir, seconds=seconds, seed=seed, copies=copies, appliances=appliances)
    except ValueError as error:
        raise click.ClickException(str(error)) from error
    for path in paths:
        click.echo(path)


@click.command()
@click.option("--samples", "samples_dir", type=PATH, default=Path("samples"), show_default=True,
              help="The recordings, named like ac-on-fridge-off-day.m4a; folders are searched recursively.")
@click.option("--manifests", "manifests_dir", type=PATH, default=Path("data/manifests"), show_default=True,
              help="Where files.csv and windows.parquet go (train reads them from here).")
@click.option("--window-sec", type=click.FloatRange(min=1.0), default=WindowConfig.window_sec, show_default=True,
              help="Seconds of audio in one window, the model's input.")
@click.option("--hop-sec", type=click.FloatRange(min=0.1), default=WindowConfig.hop_sec, show_default=True,
              help="Seconds between the starts of two training windows (how much they overlap).")
def prepare(samples_dir: Path, manifests_dir: Path, window_sec: float, hop_sec: float) -> None:
    """Scan the samples and write files.csv and windows.parquet."""
    from edge.core.audio import AudioError
    from train.manifests import ManifestError, load_manifests
    from train.manifests import prepare as run_prepare

    try:
        files, windows = run_prepare(samples_dir, manifests_dir, WindowConfig(window_sec, hop_sec))
    except (ManifestError, AudioError) as error:
        raise click.ClickException(str(error)) from error
    click.echo(f"{len(files)} recordings, {len(windows)} windows ({int(windows.outlier.sum())} flagged as outliers) "
               f"-> {manifests_dir}")
    counts = [f"{name} {files[name].notna().sum()} ({int((files[name] == 1).sum())} on)"
              for name in load_manifests(manifests_dir).appliances.names]
    click.echo(f"appliances (in the default priority; train --priority changes it), with the recordings that "
               f"name each (the others say nothing of it): {', '.join(counts)}")


@click.command()
@click_options(TrainOptions)
def train(**given) -> None:
    """Train the classifier on frozen BEATs embeddings.

    Stage 1, then an optional stage 2 that fine-tunes the last blocks. With --cluster, the embedding cache is filled by the workers of a Ray cluster (the rest runs here)."""
    from edge.cluster.connect import ClusterError
    from edge.core.audio import AudioError
    from edge.core.labels import LabelError
    from train.beats import CheckpointError
    from train.device import DeviceError
    from train.manifests import ManifestError
    from train.trainer import SplitError, Trainer

    try:
        run_dir = Trainer(build(TrainOptions, given), log=click.echo).run()
    except (SplitError, ManifestError, CheckpointError, AudioError, DeviceError, LabelError, ClusterError) as error:
        raise click.ClickException(str(error)) from error
    click.echo(f"next: humwatch thresholds --run {run_dir}")


@click.command()
@click.option("--run", "run_dir", type=EXISTING_DIR, required=True, help="models/<run_id>")
def thresholds(run_dir: Path) -> None:
    """Choose each appliance's threshold on the validation files.

    ac.threshold, fridge.threshold, ... on the run's validation files; writes thresholds.yaml and report.html."""
    from edge.core.decision import level_name
    from train.report import render_report
    from train.run import Run, RunError
    from train.thresholds import choose_thresholds

    try:
        run = Run.open(run_dir)
        result = choose_thresholds(run)
    except RunError as error:
        raise click.ClickException(str(error)) from error
    chosen = ", ".join(f"{level_name(name, 'threshold')} {levels['threshold']:.2f}"
                       for name, levels in result["levels"].items())
    click.echo(f"{chosen} -> {run_dir / 'thresholds.yaml'}")
    for note in result["unseparated"].values():
        click.secho(f"warning: {note}", fg="yellow")
    print_metrics(result["validation_metrics"])
    click.echo(f"report: {render_report(run)}")


@click.command()
@click.option("--run", "run_dir", type=EXISTING_DIR, required=True, help="models/<run_id> (its BEATs model is the teacher)")
@click_options(DistillOptions)
def distill(run_dir: Path, **given) -> None:
    """Distill the run's BEATs model into a small, fast student.

    About 1 MFLOP a window, trained on what the run's BEATs model says: models/<run_id>/student[-N]."""
    from edge.core.audio import AudioError
    from train.device import DeviceError
    from train.run import RunError
    from train.student import Distiller

    options = build(DistillOptions, given)
    try:
        student_dir = Distiller(run_dir, options, log=click.echo).run_distillation()
    except (RunError, AudioError, DeviceError) as error:
        raise click.ClickException(str(error)) from error
    click.echo(f"next: humwatch export --run {run_dir}  (the newest student goes into the bundle as precision 'student')")
    click.echo(f"student: {student_dir}")


@click.command()
@click.option("--run", "run_dir", type=EXISTING_DIR, required=True, help="models/<run_id>")
@click.argument("files", nargs=-1, type=click.Path(path_type=Path, exists=True, dir_okay=False))
@DEVICE_OPTION
def evaluate(run_dir: Path, files: tuple[Path, ...], device: str) -> None:
    """Score a run file by file, with its metrics.

    The run's validation files, or FILES, through the torch model."""
    from edge.core.audio import AudioError
    from train.device import DeviceError
    from train.evaluate import (
        cross_split,
        cross_split_columns,
        cross_split_rows,
        evaluate_files,
        evaluate_validation,
        table_columns,
    )
    from train.run import Run, RunError

    try:
        run = Run.open(run_dir)
        table, metrics = evaluate_files(run, list(files), device) if files else evaluate_validation(run)
    except (RunError, AudioError, DeviceError) as error:
        raise click.ClickException(str(error)) from error
    shown = table.astype(object).where(table.notna(), None)  # an unknown state or label: "-"
    click.echo(format_table(shown.to_dict("records"), table_columns(run.appliances)))
    if metrics:
        click.echo("")
        print_metrics(metrics)
    splits = cross_split(run.path.parent)
    if {"day", "night"} <= set(splits):
        click.echo("\ncross-split (newest run validated on each daypart):")
        click.echo(format_table(cross_split_rows(splits), cross_split_columns(splits)))


@click.command()
@click.option("--run", "run_dir", type=EXISTING_DIR, required=True, help="models/<run_id>")
def report(run_dir: Path) -> None:
    """Write the run's report.html, which opens from disk.

    Probabilities, thresholds, F1, curves."""
    from train.report import render_report
    from train.run import Run, RunError

    try:
        click.echo(render_report(Run.open(run_dir)))
    except RunError as error:
        raise click.ClickException(str(error)) from error


COMMANDS = (synth, prepare, train, thresholds, distill, evaluate, report)
