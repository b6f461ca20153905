"""Edge commands: batch, stream, live, devices, bench-bundle, bench-monitors, bundle check, history, push,
rollback, pull, judge. No torch anywhere here."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import click

from edge.cluster.connect import LOCAL, ClusterError, cluster_options
from edge.core.audio import AudioError
from edge.core.bundle import PRECISIONS, BundleError, load_bundle, verify_files
from edge.core.options import click_option, click_options, merge
from edge.core.output import error_text, format_table, json_line
from edge.core.redact import log_to_stderr, redact
from edge.engine.settings import HOP, HOP_ONLY, DetectorSettings
from edge.monitor.settings import HttpOptions, LiveSettings, live_settings, monitors_toml

BUNDLE_DIR = click.Path(path_type=Path, exists=True, file_okay=False)
BUNDLE = click.option("--bundle", "bundle_dir", type=BUNDLE_DIR, required=True, metavar="DIR",
                      help="The bundle directory (from humwatch export).")
THREADS = click_option(DetectorSettings, "threads")
START_ERRORS = (ValueError, OSError, RuntimeError, LookupError)  # bundle, source, history, port: one clear line


def open_detector(settings, plan: bool = True):
    """The detector for batch and stream, or the start-up error as one clear line."""
    from edge.monitor.assembly import open_detector as assemble

    try:
        return assemble(settings, plan=plan)
    except START_ERRORS as error:
        raise click.ClickException(str(error)) from error


def hop_only(what: str) -> str:
    """Why batch refuses `what`, a setting that changes only decisions hop by hop, and what to do instead."""
    return (f"{what} changes only decisions hop by hop (humwatch stream, live); batch decides each file whole, by the "
            "median of all its windows against each appliance's threshold. Set a threshold with --level "
            "NAME.threshold=P, or see the hops with humwatch stream --bundle DIR FILE")


class FileCommand(click.Command):
    """batch: an option of stream and live that has no effect on a whole file is refused by name, with the fix."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except click.NoSuchOption as error:
            if error.option_name.removeprefix("--").replace("-", "_") in HOP_ONLY:
                raise click.UsageError(hop_only(error.option_name), ctx) from None
            raise


@click.command(cls=FileCommand)
@click_options(DetectorSettings, exclude=("hop", "cpu_budget", *HOP_ONLY), required=("bundle",))
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@click.option("--files-from", type=click.File("r", encoding="utf-8"), default=None, metavar="FILE",
              help="Also the paths listed in FILE, one per line ('-': standard input).")
@click.option("--format", "output_format", type=click.Choice(["jsonl", "table"]), default="jsonl", show_default=True,
              help="jsonl: one JSON object per file, for programs; table: aligned columns, for people.")
@cluster_options
@click.pass_context
def batch(ctx, paths, files_from, output_format, cluster, worker_cpus, **options) -> None:
    """Decide each audio file whole: one line per file.

    PATHS are files, or directories searched recursively. A file's state is the median of all its windows
    against each appliance's threshold, so the running median, the debounce and the hysteresis of stream and
    live do not apply. Exit code 1 if any file failed or no audio file was found.
    """
    from edge.engine.batch import NoAudioError, expand_paths, run_batch
    from edge.engine.results import FileFailure

    settings = merge(DetectorSettings, ctx, options)
    hysteresis = [f"{name}.{side}" for name, sides in settings.levels.items() for side in sides if side != "threshold"]
    if hysteresis:
        raise click.UsageError(hop_only(f"--level {hysteresis[0]}"))
    paths = [*paths, *(Path(line.rstrip("\r\n")) for line in files_from or () if line.strip())]
    if not paths:
        raise click.UsageError("give audio files or directories, or --files-from FILE")
    try:
        expand_paths(paths)
    except NoAudioError as error:
        raise click.ClickException(f"{error}; pass audio files or directories that hold some") from error
    detector = open_detector(settings, plan=False)  # every check of the bundle and the options, here first
    bundle = detector.classifier.bundle
    if cluster == LOCAL:
        results = run_batch(detector, paths)
    else:
        from edge.cluster.batch import cluster_batch

        del detector  # the workers load their own
        results = cluster_batch(cluster, worker_cpus, settings, bundle, paths)
    rows, failed = [], 0
    try:
        for result in results:
            failed += isinstance(result, FileFailure)
            if output_format == "jsonl":
                json_line(result.to_json())
            else:
                rows.append(result.to_json())
    except (BundleError, ClusterError) as error:  # BundleError: the graphs gave no probabilities (ModelOutputError)
        raise click.ClickException(str(error)) from error
    if output_format == "table":
        probabilities = [f"p_{name}" for name in bundle.manifest.labels]
        click.echo(format_table(rows, ["path", "status", *probabilities, "windows", "duration_sec", "error"]))
    sys.exit(1 if failed else 0)


@click.command()
@click_options(DetectorSettings, required=("bundle",))
@click.argument("file", type=click.Path(path_type=Path, exists=True, dir_okay=False))
@click.option("--realtime", is_flag=True, help="Pace the output at wall-clock speed.")
@click.option("--only-changes", is_flag=True, help="Print only lines where the debounced status changes.")
@click.pass_context
def stream(ctx, file, realtime, only_changes, **options) -> None:
    """Simulate live processing over FILE: one JSON line per hop."""
    from edge.engine.stream import stream_file

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    detector = open_detector(merge(DetectorSettings, ctx, options))
    try:
        for line in stream_file(detector, file, realtime=realtime):
            if line.changed or not only_changes:
                json_line(line.to_json())
    except (AudioError, BundleError) as error:  # BundleError: the graphs gave no probabilities (ModelOutputError)
        raise click.ClickException(str(error)) from error


@click.command()
@click_options(LiveSettings)
@click.option("--config", type=click.Path(path_type=Path, dir_okay=False), default=None, metavar="FILE",
              help="Read the settings from this TOML file (keys: these options' names with '_', those of MQTT, "
                   "HTTP, clips, the audit and pushed bundles in sections [mqtt], [http], [clips], [audit], [deploy], levels as [levels.NAME]; "
                   "several sources in one process: a [[monitor]] table each); the command line beats the file. "
                   "Example: edge/systemd/humwatch.toml.")
@click.option("--print-config", is_flag=True, help="Print the settings in force as TOML (secrets masked) and exit.")
@click.pass_context
def live(ctx, config, print_config, **options) -> None:
    """Listen to a microphone, a stream or standard input.

    One JSON line per hop. SIGINT / SIGTERM stop cleanly; see docs/sources.md and docs/home-assistant.md.
    """
    from edge.monitor.assembly import Assembly, MonitorsEnded, StopOnSignals, Stopped
    from edge.monitor.sources import SourceEnded, SourceError

    with StopOnSignals() as signals:
        log_to_stderr()  # every line redacted, as every message below: no URL's credentials reach a log
        try:
            settings = live_settings(ctx, options, config)  # one monitor, or one per [[monitor]] table of the file
            if print_config:
                click.echo(monitors_toml(settings), nl=False)
                return
            assembly = signals.assembly = Assembly(settings)
            assembly.start()
        except Stopped as signal_name:
            logging.getLogger("humwatch.live").info("%s while starting: stopped", signal_name)
            return
        except START_ERRORS as error:
            raise click.ClickException(redact(error_text(error))) from error
        try:
            assembly.run()
        except (SourceEnded, SourceError, MonitorsEnded) as error:  # standard input ended (or is not audio)
            raise click.ClickException(redact(str(error))) from error


@click.command()
def devices() -> None:
    """List the audio input devices and their native rates.

    One row per device: index, name, channels, native rate."""
    from edge.monitor.live import DeviceUnavailable
    from edge.monitor.sources import import_sounddevice, input_devices

    try:
        found = input_devices(import_sounddevice())
    except DeviceUnavailable as error:
        raise click.ClickException(str(error)) from error
    if not found:
        raise click.ClickException("no audio input device found: is the USB microphone plugged in? (check 'arecord -l')")
    click.echo(format_table(found, ["index", "name", "channels", "native_rate"]))


@click.command("bench-bundle")
@BUNDLE
@click.option("--precision", type=click.Choice([*PRECISIONS, "all"]), default="all", show_default=True,
              help="The precision to time, or all of the bundle's.")
@THREADS
@click.option("--windows", type=click.IntRange(min=2), default=20, show_default=True, help="Windows timed per precision.")
@click.option("--cpu-budget", type=click.FloatRange(0, 1, min_open=True), default=0.5, show_default=True,
              help="The share of all cores a monitor may use: sets the hops reported.")
@click.option("--budget-run", type=click.Path(path_type=Path, exists=True, dir_okay=False), default=None,
              help="Also stream this recording in real time at --hop auto and measure its CPU from /proc.")
@click.option("--allow-busy", is_flag=True, help="Time even while other processes keep the cores busy (and say so).")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
def bench_bundle(bundle_dir, precision, threads, windows, cpu_budget, budget_run, allow_busy, as_json) -> None:
    """Time a bundle here and estimate the hop it allows on a Pi.

    Per window: ms, CPU and GFLOP/s, memory, hops here and on a Pi 4 and 5. Each precision runs in a fresh process, one after the other, so the figures compare fairly.
    """
    from edge.engine.bench import PEAK_EFFICIENCY, PI_PEAKS, BenchError, bench, check_quiet
    from edge.engine.bench import budget_run as run_budget

    try:
        bundle = load_bundle(bundle_dir)
        note = check_quiet(allow_busy)
    except (BundleError, BenchError) as error:
        raise click.ClickException(str(error)) from error
    precisions = list(bundle.precisions) if precision == "all" else [precision]
    if precision != "all" and precision not in bundle.precisions:
        raise click.ClickException(f"{bundle_dir}: no {precision} model in this bundle (it has {', '.join(bundle.precisions)})")
    results = bench(bundle_dir, precisions, threads, windows, cpu_budget)
    try:
        budget = run_budget(bundle_dir, budget_run, cpu_budget, None if precision == "all" else precision) if budget_run else None
    except BenchError as error:
        raise click.ClickException(str(error)) from error
    if as_json:
        click.echo(json.dumps({"bundle": str(bundle_dir), "busy": note, "cpu_budget": cpu_budget, "results": results,
                               "budget_run": budget}, indent=2))
        return
    click.echo(f"{bundle_dir}: {bundle.window.window_sec:g} s windows, {windows} windows each, one at a time, "
               f"CPU budget {cpu_budget:.0%} of the cores")
    if note:
        click.secho(f"WARNING: {note}: the figures are not clean", fg="yellow")
    click.echo(format_table(results, ["precision", "threads", "load_sec", "p50_ms", "p95_ms", "cpu_ms", "gflop", "gflops",
                                      "realtime_factor", "hop_here_sec", "pi4_hop_est_sec", "pi5_hop_est_sec", "peak_rss_mb", "model_mb"]))
    for row in results[1:]:
        click.echo(f"{row['precision']} speed-up over {results[0]['precision']} (p50): "
                   f"{results[0]['p50_ms'] / row['p50_ms']:.2f}x")
    click.echo("pi*_hop_est_sec are ESTIMATES: GFLOP per window / (published peak x "
               f"{PEAK_EFFICIENCY:.0%}) on 4 cores; peaks: " +
               "; ".join(f"{p['board']} {p['fp32']:g} GFLOP/s fp32, {p['int8']:g} GOP/s int8" for p in PI_PEAKS.values()))
    if budget:
        click.echo(f"budget run over {budget_run}: hop {budget['hop_sec']} s, CPU / wall {budget['cpu_over_wall']:.3f} cores "
                   f"(limit {budget['limit']:.3f}: {'within' if budget['within_budget'] else 'OVER'}), debounced states "
                   f"equal to hop 1.5 s on {budget['hops_agreeing']}/{budget['hops_compared']} hops away from changes")


@click.command("bench-monitors")
@BUNDLE
@click.option("--precision", "precisions", type=click.Choice(PRECISIONS), multiple=True,
              help="Repeat for more [default: the bundle's].")
@click.option("--sources", "counts", default="1,4", show_default=True, metavar="N,N...",
              help="Numbers of sources to compare (one alone is always measured).")
@click.option("--seconds", type=click.FloatRange(min=10), default=20.0, show_default=True,
              help="Real-time seconds each configuration runs.")
@click.option("--hop", default="1.5", show_default=True, type=HOP, metavar="SECONDS|auto", help="As live's --hop.")
@THREADS
@click.option("--audio", type=click.Path(path_type=Path, exists=True, dir_okay=False), default=None,
              help="The recording every source plays in real time, looped [default: 30 s of noise at 48 kHz].")
@click.option("--source", default=None, metavar="DEVICE|URL",
              help="Every monitor listens to this source instead (e.g. a camera's rtsp:// URL).")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
def bench_monitors(bundle_dir, precisions, counts, seconds, hop, threads, audio, source, as_json) -> None:
    """Measure the memory and CPU of N sources in one process.

    Peak memory and CPU of N sources in one process against one, and against N processes. Every configuration runs in fresh processes, one after the other; N processes run side by side.
    """
    from edge.engine.bench import check_quiet
    from edge.monitor.bench_monitors import bench_monitors as run
    from edge.monitor.bench_monitors import summary

    try:
        counts = [int(count) for count in counts.split(",")]
        if min(counts) < 1:
            raise ValueError
    except ValueError:
        raise click.BadParameter(f"{counts!r}: expected numbers of sources, e.g. 1,4", param_hint="--sources") from None
    if source == "-":
        raise click.BadParameter("standard input cannot feed several sources; give a device or a URL, or --audio",
                                 param_hint="--source")
    note = check_quiet(allow_busy=True)
    base = LiveSettings(bundle=bundle_dir, hop=hop, threads=threads, source=source, max_lag=3.0)
    try:
        rows = run(base, list(precisions) or [None], counts, seconds, audio)
    except (RuntimeError, ValueError, OSError) as error:
        raise click.ClickException(str(error)) from error
    if as_json:
        click.echo(json.dumps({"bundle": str(bundle_dir), "busy": note, "seconds": seconds, "hop": hop,
                               "source": source or str(audio or "noise, 48 kHz"), "results": rows}, indent=2))
        return
    if note:
        click.secho(f"WARNING: {note}: the CPU figures are not clean", fg="yellow")
    click.echo(format_table(rows, ["precision", "sources", "layout", "peak_rss_mb", "x_one_source", "per_process_mb",
                                   "rss_end_mb", "cpu_pct_of_a_core", "lines_per_source", "dropped_sec", "hop_sec"]))
    for line in summary(rows):
        click.echo(line)


@click.command("bench-live")
@BUNDLE
@click.option("--seconds", type=click.FloatRange(min=10), default=150.0, show_default=True,
              help="Real-time seconds each monitor runs (two audits at this command's --audit-every-sec default).")
@click.option("--audit-every-sec", type=click.FloatRange(min=1), default=60.0, show_default=True,
              help="The audited student's spacing of audits.")
@click.option("--audit-teacher", "teachers", type=click.Choice(("fp32", "int8")), multiple=True,
              help="Audit the student with this precision; repeat to compare [default: the bundle's teacher].")
@click.option("--hop", default="auto", show_default=True, type=HOP, metavar="SECONDS|auto", help="As live's --hop.")
@click.option("--audio", type=click.Path(path_type=Path, exists=True, dir_okay=False), default=None,
              help="The recording the monitor hears in real time, looped [default: 30 s of noise at 48 kHz].")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
def bench_live(bundle_dir, seconds, audit_every_sec, teachers, hop, audio, as_json) -> None:
    """Measure whole live monitors, audits included, side by side.

    One live monitor as a user runs it (page and history on): the student alone, audited, and each
    BEATs precision: steady and peak memory, process CPU, the longest hop delay, the audio dropped.

    Each runs in a fresh process, one after the other, for --seconds of real time.
    """
    import tempfile

    from edge.engine.bench import check_quiet
    from edge.monitor.bench_monitors import bench_live as run
    from edge.monitor.bench_monitors import free_port, live_configurations

    note = check_quiet(allow_busy=True)
    with tempfile.TemporaryDirectory(prefix="humwatch-bench-live-") as work:
        base = LiveSettings(bundle=bundle_dir, hop=hop, max_lag=3.0, history=Path(work) / "history.db",
                            http=HttpOptions(listen=str(free_port())))
        configurations = live_configurations(base, load_bundle(bundle_dir).precisions, audit_every_sec,
                                             list(teachers) or [None])
        try:
            rows = run(configurations, seconds, audio)
        except (RuntimeError, ValueError, OSError) as error:
            raise click.ClickException(str(error)) from error
    if as_json:
        click.echo(json.dumps({"bundle": str(bundle_dir), "busy": note, "seconds": seconds, "hop": hop,
                               "audit_every_sec": audit_every_sec, "results": rows}, indent=2))
        return
    if note:
        click.secho(f"WARNING: {note}: the lags are not clean (the CPU and memory figures are)", fg="yellow")
    click.echo(format_table(rows, ["monitor", "steady_rss_mb", "x_steady_rss", "peak_rss_mb", "teacher_process_peak_mb",
                                   "cpu_pct_of_a_core", "x_cpu", "metrics_cpu_pct_of_a_core", "max_lag_sec",
                                   "dropped_sec", "audits", "hops", "hop_sec"]))


@click.group()
def bundle() -> None:
    """Check bundles before they go to a monitor."""


class OldSpelling(click.Argument):
    """A positional argument kept for an earlier spelling: accepted, left out of the usage line."""

    def get_usage_pieces(self, ctx: click.Context) -> list[str]:
        return []


@bundle.command("check")
@click.option("--bundle", "bundle_dir", type=BUNDLE_DIR, default=None, metavar="DIR",
              help="The bundle directory (from humwatch export).")
@click.argument("old_dir", cls=OldSpelling, type=BUNDLE_DIR, required=False)
def check(bundle_dir: Path | None, old_dir: Path | None) -> None:
    """Verify a bundle before it goes to the monitor.

    Every field of bundle.json, checksums, graph shapes, and one window through each precision. The earlier
    spelling, bundle check DIR, still works and names the new one."""
    from edge.engine.classifier import Classifier

    if old_dir is not None:
        if bundle_dir is not None:
            raise click.UsageError(f"two bundles: --bundle {bundle_dir} and {old_dir}; check one with --bundle DIR")
        click.echo(f"humwatch bundle check DIR is now humwatch bundle check --bundle {old_dir}, as in every command; "
                   "the old spelling still works for now", err=True)
        bundle_dir = old_dir
    if bundle_dir is None:
        raise click.UsageError("which bundle? humwatch bundle check --bundle DIR")
    try:
        loaded = load_bundle(bundle_dir)
        verify_files(loaded)
        for precision in loaded.precisions:
            probs = Classifier(loaded, precision, threads=None).check()  # the same checks as open_classifier
            shown = ", ".join(f"p_{name} {p:.3f}" for name, p in zip(loaded.manifest.labels, probs))
            click.echo(f"{precision}: ok ({shown} on a noise window)")
            report = loaded.manifest.report(precision)
            if report is not None:
                role = "the default" if precision == loaded.default_precision else "offered"
                click.echo(f"{precision}: {role}: {report.default_reason}")
    except BundleError as error:
        raise click.ClickException(str(error)) from error
    appliances = loaded.manifest.appliances
    click.echo(f"appliances: {', '.join(appliances.names)}; statuses, in priority order: {' | '.join(appliances.statuses)}")
    click.echo(f"{bundle_dir}: bundle ok (schema {loaded.manifest.schema_version}, "
               f"{len(loaded.manifest.files)} files verified, default precision {loaded.default_precision})")


@click.command("history")
@click.option("--db", "db_path", type=click.Path(path_type=Path, exists=True, dir_okay=False), required=True,
              help="The monitor's --history file (or a copy of it).")
@click.option("--days", type=click.IntRange(min=1), default=7, show_default=True,
              help="How many days back from today to show.")
@click.option("--watts", default=None, metavar="NAME=W,...",
              help="Power of any appliance in the history when running, for energy, e.g. ac=1200,fridge=150.")
@click.option("--format", "output_format", type=click.Choice(["table", "json", "csv"]), default="table", show_default=True,
              help="table: aligned columns; json: a list of rows; csv: a header and a row per day and appliance.")
def history(db_path, days, watts, output_format) -> None:
    """Daily run-time, cycles and energy of each appliance.

    Per day and appliance: hours observed, run-time, cycles, longest run, energy. Safe while a monitor writes."""
    import csv
    import sqlite3
    import time

    from edge.home.history import daily_table, reading, stored_appliances
    from edge.home.household import check_watts, parse_watts

    try:
        power = parse_watts(watts)
        with reading(db_path) as connection:  # one snapshot for every day
            check_watts(power, stored_appliances(connection), "the history's")
            rows = daily_table(connection, days, time.time(), power)
    except (ValueError, sqlite3.Error) as error:
        raise click.ClickException(f"{db_path}: {error}") from error
    columns = ["day", "appliance", "observed_h", "runtime_h", "cycles", "longest_run_min", "energy_kwh"]
    if output_format == "json":
        click.echo(json.dumps(rows, indent=2))
    elif output_format == "csv":
        writer = csv.DictWriter(sys.stdout, columns)
        writer.writeheader()
        writer.writerows(rows)
    else:
        click.echo(format_table(rows, columns))


TOKEN = click.option("--token", envvar="HUMWATCH_HTTP_TOKEN", default=None, metavar="TOKEN",
                     help="The monitor's --http-token [env: HUMWATCH_HTTP_TOKEN].")


def _judged_refusal(bundle_dir: Path, running: dict) -> str | None:
    """Why a bundle may not be pushed without --force: its judge says it scores worse than the
    running one, or judged it against another bundle than the one running (None: it may go)."""
    from edge.core.bundle_archive import JUDGED

    judged_path = bundle_dir / JUDGED
    if not judged_path.is_file():
        return None
    judged = json.loads(judged_path.read_text(encoding="utf-8"))
    if judged.get("against_sha256") != running.get("manifest_sha256"):
        return (f"{judged_path}: judged against another bundle than the one the monitor runs "
                f"({running.get('path')}); judge again against the monitor, or --force")
    if judged.get("verdict") == "worse":
        return f"{judged_path}: {judged.get('summary', 'it scores worse than the running bundle')}; --force pushes it all the same"
    return None


@click.command()
@click.argument("url")
@click.argument("bundle_dir", metavar="BUNDLE", type=BUNDLE_DIR)
@TOKEN
@click.option("--force", is_flag=True, help="Push a bundle that scores worse than the running one (see 'humwatch judge').")
def push(url, bundle_dir, token, force) -> None:
    """Send BUNDLE to the monitor at URL, which swaps it in.

    The monitor checks it as at start and swaps it in between two hops, keeping the previous one for rollback."""
    import tempfile

    from edge.core.bundle_archive import pack_bundle
    from edge.home.client import MonitorClient, MonitorError

    try:
        verify_files(load_bundle(bundle_dir))
        client = MonitorClient(url, token)
        running = client.get_json("api/bundle", root=True)["current"]  # the token checked before the upload
        refusal = _judged_refusal(bundle_dir, running)
        if refusal and not force:
            raise click.ClickException(f"not pushed: {refusal}")
        with tempfile.TemporaryFile() as archive:
            pack_bundle(bundle_dir, archive)
            size = archive.tell()
            archive.seek(0)
            click.echo(f"pushing {bundle_dir} ({size / 1e6:.1f} MB) to {client.root} ...", err=True)
            answer = client.post_file("api/bundle", archive, size, "application/x-tar", root=True)
    except (BundleError, MonitorError, OSError) as error:
        raise click.ClickException(str(error)) from error
    _say_bundles("running", answer)


@click.command()
@click.argument("url")
@TOKEN
def rollback(url, token) -> None:
    """Return the monitor at URL to its previous bundle.

    The one it ran before the last push (or rollback)."""
    from edge.home.client import MonitorClient, MonitorError

    try:
        answer = MonitorClient(url, token).post_json("api/bundle/rollback", {}, root=True)
    except MonitorError as error:
        raise click.ClickException(str(error)) from error
    _say_bundles("rolled back: running", answer)


@click.command()
@click.argument("urls", metavar="URL...", nargs=-1, required=True)
@click.option("--monitor", "ident", default=None, metavar="ID",
              help="Of several monitors in one process, pull only this one's (its id: /monitor/<id>/).")
@click.option("--samples", "samples_dir", type=click.Path(path_type=Path, file_okay=False), default=Path("samples"),
              show_default=True, help="The project's samples folder; each monitor's files go to a subfolder of it.")
@TOKEN
def pull(urls, ident, samples_dir, token) -> None:
    """Fetch the monitors' new recordings and relabelled clips.

    From the monitor(s) at URL into the samples folder, a subfolder per monitor."""
    from edge.home.client import MonitorClient, MonitorError
    from edge.home.pull import folder_name, monitors
    from edge.home.pull import pull as pull_from

    refused = False
    for url in urls:
        try:
            root = MonitorClient(url, token)
            chosen = [m for m in monitors(root) if ident is None or m["id"] == ident]
            if not chosen:
                raise click.ClickException(f"{url}: no monitor {ident!r} there (it has: "
                                           f"{', '.join(str(m['id']) for m in monitors(root))})")
            for monitor in chosen:
                client = MonitorClient(root.root + (f"monitor/{monitor['id']}/" if monitor["id"] else ""), token)
                result = pull_from(client, samples_dir / folder_name(monitor, client))
                counts = ", ".join(f"{label} {count}" for label, count in result.per_label().items())
                click.echo(f"{monitor['name']}: {len(result.fetched)} new into {result.folder}"
                           f"{f' ({counts})' if counts else ''}, {len(result.present)} already here")
                for name, why in result.refused.items():
                    click.echo(f"{monitor['name']}: not pulled: {name}: {why}", err=True)
                refused |= bool(result.refused)
        except (MonitorError, OSError) as error:
            raise click.ClickException(str(error)) from error
    if refused:
        raise click.ClickException("some files were not pulled (above)")


@click.command()
@click.argument("new", metavar="BUNDLE", type=BUNDLE_DIR)
@click.option("--against", required=True, metavar="URL|BUNDLE",
              help="The bundle to beat: the one a monitor runs (its URL, with the token) or a bundle folder.")
@click.option("--samples", "samples_dir", type=BUNDLE_DIR, default=Path("samples"), show_default=True,
              help="The samples folder holding the home's pulled clips.")
@TOKEN
def judge(new, against, samples_dir, token) -> None:
    """Score BUNDLE against the running one on the home's clips.

    Side by side on the home's held-out clips; writes BUNDLE/judged.json (push refuses a bundle judged worse
    unless --force)."""
    import tempfile

    from edge.core.bundle_archive import JUDGED, unpack_bundle
    from edge.core.files import write_json_atomic
    from edge.engine.judge import held_out_clips
    from edge.engine.judge import judge as run_judge
    from edge.home.client import MonitorClient, MonitorError

    clips = held_out_clips(samples_dir)
    if not clips:
        raise click.ClickException(f"{samples_dir}: none of the home's clips is held out for judging yet (one in four "
                                   "recordings or relabels made on the Pi is); record or relabel more, pull, retrain")
    with tempfile.TemporaryDirectory() as work:
        old = Path(against)
        try:
            if not old.is_dir():
                archive, old = Path(work) / "running.tar", Path(work) / "running"
                MonitorClient(against, token).download("api/bundle/current.tar", archive, root=True)
                unpack_bundle(archive, old, max_bytes=1 << 40)
            verdict = run_judge(new, old, clips)
        except (BundleError, MonitorError, AudioError, OSError) as error:
            raise click.ClickException(str(error)) from error
    verdict["old"] = against
    write_json_atomic(new / JUDGED, verdict)
    click.echo(format_table([{"clips": row["what"], "new": row["new"], "running": row["old"]} for row in verdict["rows"]],
                            ["clips", "new", "running"]))
    click.echo(f"{new}: {verdict['summary']} (in {new / JUDGED})")


def _say_bundles(verb: str, answer: dict) -> None:
    current, previous = answer["current"], answer["previous"]
    click.echo(f"{verb} {current['path']} (run {current['run_id']}, {current['created']}, "
               f"{', '.join(current['appliances'])})")
    if previous:
        click.echo(f"a rollback restores {previous['path']} (run {previous['run_id']})")


COMMANDS = (batch, stream, live, devices, bench_bundle, bench_monitors, bench_live, bundle, history, push, rollback, pull, judge)
