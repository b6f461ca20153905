"""The workstation's commands above training: `humwatch export`, and those that drive the whole
chain: `humwatch demo`, `bench-training`, `retrain` and `bench-retrain`."""

from __future__ import annotations

from pathlib import Path

import click

from train.cli import DEVICE_OPTION, EXISTING_DIR, PATH


@click.command()
@click.option("--run", "run_dir", type=click.Path(path_type=Path, exists=True, file_okay=False), required=True,
              help="models/<run_id>")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=None,
              help="Bundle directory to create [default: bundles/<run_id>]")
@click.option("--int8", is_flag=True, help="Also write an int8 encoder, with its measured agreement and speed.")
@click.option("--reuse-encoder", type=click.Path(path_type=Path, exists=True, file_okay=False), default=None,
              help="Copy the encoder graphs from this bundle (same weights): only head.onnx is new.")
@click.option("--parity-windows", type=click.IntRange(min=1), default=16, show_default=True,
              help="Validation windows per file in the parity check.")
@click.option("--student", "student_dir", type=click.Path(path_type=Path, exists=True, file_okay=False), default=None,
              help="The student to include [default: the run's newest, if it has one (humwatch distill)].")
@click.option("--no-student", is_flag=True, help="Leave the run's student out.")
@click.option("--parity-tolerance", type=click.FloatRange(min=0, min_open=True), default=None, metavar="LOGIT",
              help="The largest |Δlogit| torch and onnxruntime may differ by [default: 0.02]; raise it only for "
                   "rounding you have judged (bundle.json records it).")
@DEVICE_OPTION
def export(run_dir: Path, out_dir: Path | None, int8: bool, reuse_encoder: Path | None, parity_windows: int,
           student_dir: Path | None, no_student: bool, parity_tolerance: float | None, device: str) -> None:
    """Export a run to an ONNX bundle, parity-checked against torch."""
    from edge.core.audio import AudioError
    from edge.core.bundle import load_bundle
    from export.exporter import ExportError, export_run
    from export.parity import parity_text
    from train.device import DeviceError
    from train.run import RunError

    try:
        bundle_dir = export_run(run_dir, out_dir, int8=int8, parity_windows_per_file=parity_windows,
                                reuse_encoder=reuse_encoder, log=click.echo, device=device,
                                student=False if no_student else student_dir or True,
                                parity_tolerance=parity_tolerance)
    except (ExportError, RunError, AudioError, DeviceError) as error:
        raise click.ClickException(str(error)) from error
    manifest = load_bundle(bundle_dir).manifest
    click.echo(f"parity fp32: {parity_text(manifest.float_parity())}")
    for precision in ("int8", "student"):
        q = manifest.report(precision)
        if q:
            click.echo(f"{precision}: max |dprob| {q.max_abs_diff:.3f} ({_by_appliance(q.max_abs_diff_by_appliance, '.3f')}) "
                       f"vs fp32, file states agree {q.state_agreement:.0%}, "
                       f"debounced hops agree {q.debounced_hop_agreement:.2%} over {q.evidence['streamed_hops']} hops, "
                       f"{manifest.gflop_per_window[precision]:.4g} GFLOP, {q.speedup_vs_fp32:.1f}x fp32 speed, "
                       f"{q.model_bytes / 1e6:.2f} MB vs {q.fp32_model_bytes / 1e6:.1f} MB; {q.default_reason}")
    click.echo(f"bundle written to {bundle_dir} (default precision {manifest.default_precision})")


def _by_appliance(figures: dict[str, float], style: str) -> str:
    """{"ac": 0.012, "fridge": 0.003} -> 'ac 0.012, fridge 0.003'."""
    return ", ".join(f"{name} {value:{style}}" for name, value in figures.items())


@click.command()
@click.option("--beats-checkpoint", type=click.Path(path_type=Path, exists=True, dir_okay=False), default=None,
              help="A real BEATs checkpoint; without one a random stand-in is used (and said so).")
@click.option("--workdir", type=click.Path(path_type=Path, file_okay=False), default=Path("demo"), show_default=True,
              help="Everything the demo writes goes here.")
@click.option("--samples", "samples_dir", type=EXISTING_DIR, default=None,
              help="Use these recordings (read only) instead of synthesizing.")
@click.option("--seconds", type=click.FloatRange(min=12), default=60.0, show_default=True, help="Length of synthetic recordings.")
@click.option("--epochs", type=click.IntRange(min=1), default=30, show_default=True,
              help="Training epochs of the classifier (fewer: a quicker, rougher demo).")
@click.option("--int8/--no-int8", default=True, show_default=True, help="Also export and measure an int8 encoder.")
@click.option("--appliances", default="ac,fridge", show_default=True, metavar="NAME[,NAME...]",
              help="The appliances to synthesize, e.g. ac,fridge,dehumidifier (with --samples their names say).")
@DEVICE_OPTION
def demo(beats_checkpoint, workdir, samples_dir, seconds, epochs, int8, appliances, device) -> None:
    """The whole chain on synthetic recordings, no downloads."""
    from click.core import ParameterSource

    from export.demo import run_demo
    from train.synth import check_appliances

    given = click.get_current_context().get_parameter_source("appliances") is ParameterSource.COMMANDLINE
    if samples_dir is not None and given:
        raise click.UsageError("--appliances chooses what to synthesize; with --samples the recordings' names say it")
    try:
        names = check_appliances(appliances)
    except ValueError as error:
        raise click.ClickException(str(error)) from error
    run_demo(beats_checkpoint, workdir, samples_dir, seconds, epochs, int8, device, names)


@click.command("bench-training")
@click.option("--workdir", type=PATH, default=Path("bench-work"), show_default=True,
              help="Where the recordings, the full-size checkpoint, the runs and the bundle go.")
@click.option("--seconds", type=click.FloatRange(min=12), default=30.0, show_default=True,
              help="Length of each synthetic recording.")
@DEVICE_OPTION
def bench_training(workdir: Path, seconds: float, device: str) -> None:
    """Time the workstation steps with the full-size BEATs.

    With random weights: no checkpoint needed."""
    from export.benchmark import run_benchmark

    run_benchmark(workdir, seconds, device)


@click.command("bench-cluster")
@click.option("--beats-checkpoint", type=click.Path(path_type=Path, exists=True, dir_okay=False), required=True,
              help="The encoder of the cache fill (bench-training leaves a full-size one: bench-work/random_full_beats.pt).")
@click.option("--bundle", "bundle_dir", type=click.Path(path_type=Path, exists=True, file_okay=False), required=True,
              help="The bundle of the batch runs (bench-training leaves bench-work/bundles/full-random).")
@click.option("--workdir", type=PATH, default=Path("bench-cluster"), show_default=True, help="Emptied, then filled.")
@click.option("--recordings", type=click.IntRange(1, 8), default=2, show_default=True,
              help="Synthetic recordings in the large folder.")
@click.option("--seconds", type=click.FloatRange(min=12), default=30.0, show_default=True, help="Length of each recording.")
@click.option("--small-seconds", type=click.FloatRange(min=6), default=12.0, show_default=True,
              help="Length of the one recording of the small folder.")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True, help="Worker nodes beside the head.")
def bench_cluster(beats_checkpoint, bundle_dir, workdir, recordings, seconds, small_seconds, workers) -> None:
    """Time the cache fill and batch here and on a Ray cluster.

    The cluster is started on this machine (needs humwatch[cluster])."""
    from edge.cluster.connect import check_address
    from export.bench_cluster import print_report, run_bench_cluster

    try:
        check_address("auto")  # Ray is installed
    except ValueError as error:
        raise click.ClickException(str(error).removeprefix("auto: ")) from error
    workdir.mkdir(parents=True, exist_ok=True)
    print_report(run_bench_cluster(beats_checkpoint, bundle_dir, workdir, recordings, seconds, small_seconds, workers))
    click.echo(f"-> {workdir / 'bench-cluster.json'}")


RETRAIN_RUN = click.option("--run", "run_dir", type=EXISTING_DIR, required=True,
                           help="The previous run (models/<run_id>): its settings are used again.")
RETRAIN_SAMPLES = click.option("--samples", "samples_dir", type=EXISTING_DIR, default=Path("samples"), show_default=True,
                               help="The grown samples folder (humwatch pull adds to it).")


@click.command()
@RETRAIN_RUN
@RETRAIN_SAMPLES
@click.option("--out", "out_dir", type=PATH, default=None, help="Bundle directory to create [default: bundles/<run_id>]")
@click.option("--int8", is_flag=True, help="Also write an int8 encoder, as export --int8.")
def retrain(run_dir: Path, samples_dir: Path, out_dir: Path | None, int8: bool) -> None:
    """Train again on the grown samples, from prepare to export.

    prepare, train, thresholds, distill and export in one go, with a previous run's settings."""
    from export.retrain import retrain as run_retrain

    result = _retrain(lambda: run_retrain(run_dir, samples_dir, out_dir, int8, log=click.echo))
    click.echo(f"embedding cache: encoded {result.encoded_windows} windows, reused {result.reused_windows}")
    click.echo(f"steps: {', '.join(f'{name} {sec:.1f} s' for name, sec in result.seconds.items())}")
    click.echo(f"run: {result.run} (report: {result.run / 'report.html'})")
    click.echo(f"bundle: {result.bundle}")
    click.echo(f"next: humwatch judge {result.bundle} --against URL|BUNDLE --samples {samples_dir}")


@click.command("bench-retrain")
@RETRAIN_RUN
@RETRAIN_SAMPLES
@click.option("--out", "out_dir", type=PATH, default=Path("bench-retrain"), show_default=True,
              help="Where the two bundles and the empty cache go.")
def bench_retrain(run_dir: Path, samples_dir: Path, out_dir: Path) -> None:
    """Time retrain without and with the embedding cache.

    On one grown folder twice, side by side: with an empty embedding cache and with the run's own."""
    import json

    from edge.engine import cpu
    from export.retrain import retrain as run_retrain

    cold = _retrain(lambda: run_retrain(run_dir, samples_dir, out_dir / "without-cache", cache_dir=out_dir / "empty-cache",
                                        log=lambda *_: None))
    warm = _retrain(lambda: run_retrain(run_dir, samples_dir, out_dir / "with-cache", log=lambda *_: None))
    rows = {"without the cache": cold, "with the cache": warm}
    for what, result in rows.items():
        click.echo(f"{what}: {sum(result.seconds.values()):.1f} s ({', '.join(f'{n} {s:.1f}' for n, s in result.seconds.items())}); "
                   f"encoded {result.encoded_windows} windows, reused {result.reused_windows}")
    click.echo(f"ratio: {sum(cold.seconds.values()) / sum(warm.seconds.values()):.2f}x; train step "
               f"{cold.seconds['train'] / warm.seconds['train']:.2f}x")
    click.echo(json.dumps({"cpu": cpu.describe(), **{what: {"seconds": r.seconds, "encoded": r.encoded_windows,
                                                             "reused": r.reused_windows} for what, r in rows.items()}}))


def _retrain(work):
    from edge.core.audio import AudioError
    from export.exporter import ExportError
    from train.device import DeviceError
    from train.manifests import ManifestError
    from train.run import RunError
    from train.trainer import SplitError

    try:
        return work()
    except (ExportError, RunError, AudioError, DeviceError, ManifestError, SplitError) as error:
        raise click.ClickException(str(error)) from error


COMMANDS = (export, demo, bench_training, bench_cluster, retrain, bench_retrain)
