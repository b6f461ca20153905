"""Edge commands: batch, stream, live, devices, bench-bundle, bundle check. No torch anywhere here."""

from __future__ import annotations

import functools
import json
import logging
import signal
import sys
from pathlib import Path

import click

from edge.core.audio import AudioError
from edge.core.bundle import PRECISIONS, BundleError, load_bundle, verify_files
from edge.core.output import LinePrinter, format_table, json_line

BUNDLE_DIR = click.Path(path_type=Path, exists=True, file_okay=False)
DECISION_OPTIONS = {
    "t_ac": "File threshold for the AC", "t_fridge": "File threshold for the fridge",
    "ac_on": "AC hysteresis: on at", "ac_off": "AC hysteresis: off below",
    "fridge_on": "Fridge hysteresis: on at", "fridge_off": "Fridge hysteresis: off below",
}


def runtime_options(function):
    """--bundle, --precision, --threads and the decision overrides (defaults come from the bundle)."""
    @click.option("--bundle", "bundle_dir", type=BUNDLE_DIR, required=True, help="Bundle directory (from humwatch export).")
    @click.option("--precision", type=click.Choice(PRECISIONS), default=None,
                  help="fp32 or int8 (BEATs), or student (distilled) [default: the bundle's]")
    @click.option("--threads", type=click.IntRange(min=1), default=None, help="onnxruntime intra-op threads [default: all cores]")
    @click.option("--median-sec", type=click.FloatRange(min=0, min_open=True), default=None,
                  help="Seconds of windows in the running median [bundle]")
    @click.option("--debounce-sec", type=click.FloatRange(min=0, min_open=True), default=None,
                  help="Seconds a new state must hold before it is reported [bundle]")
    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        return function(*args, **kwargs)
    for name, text in reversed(DECISION_OPTIONS.items()):
        wrapper = click.option(f"--{name.replace('_', '-')}", name, type=click.FloatRange(0, 1), default=None,
                               help=f"{text} [bundle]")(wrapper)
    return wrapper


def pacing_options(function):
    """--hop and --cpu-budget (stream and live)."""
    function = click.option("--cpu-budget", type=click.FloatRange(0, 1, min_open=True), default=0.5, show_default=True,
                            help="With --hop auto: the share of all cores inference may use.")(function)
    return click.option("--hop", default="auto", show_default=True, metavar="SECONDS|auto",
                        help="Seconds between decisions, or auto: the shortest hop that fits --cpu-budget.")(function)


def open_planner(classifier, hop: str, cpu_budget: float):
    from edge.monitor.pacing import plan_hop

    try:
        return plan_hop(classifier, hop, cpu_budget)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--hop") from error


def open_runtime(bundle_dir: Path, precision: str | None, threads: int | None, **overrides):
    """(classifier, decision) from a checked bundle (open_classifier) with command-line overrides applied."""
    from edge.monitor.runtime import open_classifier

    try:
        classifier = open_classifier(bundle_dir, precision, threads)
        decision = classifier.decision.replace(**overrides)
    except (BundleError, ValueError) as error:
        raise click.ClickException(str(error)) from error
    return classifier, decision


@click.command()
@runtime_options
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--format", "output_format", type=click.Choice(["jsonl", "table"]), default="jsonl", show_default=True)
def batch(bundle_dir, precision, threads, paths, output_format, **overrides) -> None:
    """One decision per audio file (files, or directories searched recursively).

    Exit code 1 if any file failed or no audio file was found.
    """
    from edge.monitor.batch import NoAudioError, expand_paths, run_batch

    try:
        expand_paths(list(paths))
    except NoAudioError as error:
        raise click.ClickException(f"{error}; pass audio files or directories that hold some") from error
    classifier, decision = open_runtime(bundle_dir, precision, threads, **overrides)
    rows, failed = [], 0
    try:
        for line in run_batch(classifier, list(paths), decision):
            failed += "error" in line
            if output_format == "jsonl":
                json_line(line)
            else:
                rows.append(line)
    except BundleError as error:  # the graphs gave no probabilities (ModelOutputError): never NaN in a line
        raise click.ClickException(str(error)) from error
    if output_format == "table":
        click.echo(format_table(rows, ["path", "status", "p_ac", "p_fridge", "windows", "duration_sec", "error"]))
    sys.exit(1 if failed else 0)


@click.command()
@runtime_options
@click.argument("file", type=click.Path(path_type=Path, exists=True, dir_okay=False))
@click.option("--realtime", is_flag=True, help="Pace the output at wall-clock speed.")
@click.option("--only-changes", is_flag=True, help="Print only lines where the debounced status changes.")
@pacing_options
def stream(bundle_dir, precision, threads, file, realtime, only_changes, hop, cpu_budget, **overrides) -> None:
    """Simulate live processing over FILE: one JSON line per hop."""
    from edge.monitor.stream import stream_file

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    classifier, decision = open_runtime(bundle_dir, precision, threads, **overrides)
    planner = open_planner(classifier, hop, cpu_budget)
    try:
        for line in stream_file(classifier, file, decision, planner, realtime=realtime):
            if line.changed or not only_changes:
                json_line(line.to_json())
    except (AudioError, BundleError) as error:  # BundleError: the graphs gave no probabilities (ModelOutputError)
        raise click.ClickException(str(error)) from error


def parse_device(value: str | None) -> int | str | None:
    return int(value) if value is not None and value.isdigit() else value


@click.command()
@runtime_options
@click.option("--device", default=None, help="Input device index or (part of its) name; see 'humwatch devices'.")
@click.option("--only-changes", is_flag=True, help="Print only lines where the debounced status changes.")
@click.option("--output", type=click.Path(path_type=Path, dir_okay=False), default=None, help="Also append lines to this file.")
@click.option("--max-lag", type=click.FloatRange(min=0), default=3.0, show_default=True,
              help="Seconds inference may fall behind before the oldest audio is dropped.")
@click.option("--mqtt", "mqtt_url", default=None, metavar="URL", help="Publish to this broker: mqtt://HOST[:PORT] or mqtts://...")
@click.option("--mqtt-user", envvar="HUMWATCH_MQTT_USER", default=None, help="[env HUMWATCH_MQTT_USER]")
@click.option("--mqtt-password", envvar="HUMWATCH_MQTT_PASSWORD", default=None, help="[env HUMWATCH_MQTT_PASSWORD]")
@click.option("--name", default="humwatch", show_default=True,
              help="This monitor's name: the Home Assistant device (e.g. Kitchen -> sensor.kitchen_state).")
@click.option("--mqtt-device-id", default=None, help="Topic id: humwatch/<id>/... [default: the name as a slug]")
@click.option("--mqtt-heartbeat", type=click.FloatRange(min=1), default=60.0, show_default=True,
              help="Seconds between state republishes when nothing changes.")
@click.option("--http", "http_listen", default=None, metavar="[HOST:]PORT",
              help="Serve the page at / and /state, /healthz, /metrics (a bare port: loopback only).")
@click.option("--http-host", "http_hosts", multiple=True, metavar="NAME",
              help="A name the page is opened by besides localhost and IP addresses (e.g. pi.local; repeat for more).")
@click.option("--http-token", envvar="HUMWATCH_HTTP_TOKEN", default=None,
              help="Needed to relabel when --http listens beyond loopback [env HUMWATCH_HTTP_TOKEN].")
@click.option("--relabel-dir", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="The page's relabel control writes correctly named copies of clips here (needs --clips).")
@click.option("--clips", "clips_dir", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Write the audio around every state change here (FLAC + JSON).")
@click.option("--clips-seconds", type=click.FloatRange(min=1), default=20.0, show_default=True)
@click.option("--clips-max-mb", type=click.FloatRange(min=1), default=500.0, show_default=True)
@click.option("--history", "history_path", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Keep every change of each appliance and the monitor's uptime in this SQLite file.")
@click.option("--history-days", type=click.FloatRange(min=1), default=400, show_default=True, help="Days the history keeps.")
@click.option("--alarm", "alarm_rules", multiple=True, metavar="APPLIANCE-(run|off)-max=DURATION",
              help="e.g. fridge-run-max=90m, fridge-off-max=6h (needs --history; repeat for more).")
@click.option("--watts", default=None, metavar="ac=W,fridge=W", help="Power when running: energy sensors (needs --history).")
@click.option("--audit-every-sec", type=click.FloatRange(min=0), default=60.0, show_default=True,
              help="With the student deciding: BEATs also decides a window this often and the two are compared (0: never).")
@click.option("--audit-max-rate", type=click.FloatRange(0, 1), default=0.1, show_default=True,
              help="/healthz says degraded when more than this share of the last hour's audits disagree.")
@click.option("--audit-fallback", type=click.FloatRange(0, 1), default=None, metavar="RATE",
              help="Switch to BEATs for good when more than RATE of the last hour's audits disagree.")
@pacing_options
def live(bundle_dir, precision, threads, device, only_changes, output, max_lag, mqtt_url, mqtt_user, mqtt_password,
         name, mqtt_device_id, mqtt_heartbeat, http_listen, http_hosts, http_token, relabel_dir, clips_dir, clips_seconds, clips_max_mb, history_path,
         history_days, alarm_rules, watts, audit_every_sec, audit_max_rate, audit_fallback, hop, cpu_budget, **overrides) -> None:
    """Listen to a microphone: one JSON line per hop.

    SIGINT / SIGTERM stop cleanly; see the README for MQTT, HTTP and clips.
    """
    from edge.monitor.live import DeviceNotFound, DeviceUnavailable, FanOut, LiveMonitor, SoundDeviceSource
    from edge.monitor.systemd import SystemdNotifier

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    classifier, decision = open_runtime(bundle_dir, precision, threads, **overrides)
    try:
        source = SoundDeviceSource(parse_device(device))
    except (DeviceNotFound, DeviceUnavailable) as error:
        raise click.ClickException(str(error)) from error
    outputs = FanOut()
    monitor = LiveMonitor(classifier, decision, source, outputs, max_lag_sec=max_lag, history_sec=clips_seconds,
                          planner=open_planner(classifier, hop, cpu_budget),
                          auditor=open_auditor(classifier, threads, audit_every_sec, audit_max_rate, audit_fallback))
    # Everything that can refuse (a history in use, a port taken, bad options) is made before anything
    # starts or any file is opened for writing: a refused monitor leaves no trace.
    closers, starters, household = [], [], None
    try:
        printer = outputs.add(LinePrinter(only_changes), "--output" if output else "stdout")
        closers.append(printer.close)
        notifier = outputs.add(SystemdNotifier(), "systemd")
        closers.append(notifier.close)
        if (alarm_rules or watts) and not history_path:
            raise ValueError("--alarm and --watts are computed from the history: add --history PATH")
        if http_hosts and not http_listen:
            raise ValueError("--http-host names the page's host: add --http [HOST:]PORT")
        if relabel_dir and not (clips_dir and http_listen):
            raise ValueError("--relabel-dir relabels clips from the page: add --clips DIR and --http [HOST:]PORT")
        if history_path:
            from edge.home.alarms import AlarmRule, Alarms
            from edge.home.history import History
            from edge.home.household import Household, parse_watts

            rules, power = [AlarmRule.parse(rule) for rule in alarm_rules], parse_watts(watts)
            household = outputs.add(Household(History(history_path, history_days), Alarms(rules), power, printer.event),
                                    "--history")
            closers.append(household.close)
        if mqtt_url:
            from edge.home.mqtt import MqttPublisher, MqttSettings

            settings = MqttSettings.from_url(mqtt_url, username=mqtt_user, password=mqtt_password, name=name,
                                             device_id=mqtt_device_id, heartbeat_sec=mqtt_heartbeat)
            publisher = outputs.add(MqttPublisher(settings, household=household), "MQTT")
            starters.append(publisher.start)
            closers.append(publisher.close)
        if http_listen:
            from edge.home.http_status import StatusServer, parse_listen
            from edge.home.page import Page, PageSettings

            page = Page(PageSettings(clips_dir, relabel_dir), decision, household)
            server = outputs.add(StatusServer(monitor, *parse_listen(http_listen), household=household, page=page,
                                              token=http_token, hosts=http_hosts), "HTTP")
            starters.append(server.start)
            closers.append(server.close)
        if clips_dir:
            from edge.home.clips import ClipWriter

            outputs.add(ClipWriter(clips_dir, monitor.recent_audio, classifier.bundle.window.sample_rate,
                                   clips_seconds, clips_max_mb), "--clips")
        if output:
            printer.append_to(output)
        for start in starters:
            start()
    except (ValueError, OSError, RuntimeError) as error:
        for close in reversed(closers):
            close()
        raise click.ClickException(str(error)) from error
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: monitor.stop.set())
    notifier.ready()
    try:
        monitor.run()
    finally:
        for close in reversed(closers):
            close()
    logging.getLogger("humwatch.live").info("stopped")


def open_auditor(classifier, threads: int | None, every_sec: float, max_rate: float, fallback: float | None):
    """The teacher's audit of the student (None when another model decides or --audit-every-sec is 0)."""
    from edge.monitor.audit import Auditor
    from edge.monitor.runtime import Classifier

    if classifier.precision != "student":
        if fallback is not None:
            raise click.BadParameter(f"the {classifier.precision} model decides, so there is no student to audit; "
                                     "use --precision student", param_hint="--audit-fallback")
        return None
    if every_sec == 0:
        if fallback is not None:
            raise click.BadParameter("needs audits: set --audit-every-sec above 0", param_hint="--audit-fallback")
        return None
    bundle = classifier.bundle
    return Auditor(lambda: Classifier(bundle, bundle.teacher_precision, threads), every_sec, max_rate, fallback)


@click.command()
def devices() -> None:
    """List the audio input devices (index, name, channels, native rate)."""
    from edge.monitor.live import DeviceUnavailable, import_sounddevice, input_devices

    try:
        found = input_devices(import_sounddevice())
    except DeviceUnavailable as error:
        raise click.ClickException(str(error)) from error
    if not found:
        raise click.ClickException("no audio input device found: is the USB microphone plugged in? (check 'arecord -l')")
    click.echo(format_table(found, ["index", "name", "channels", "native_rate"]))


@click.command("bench-bundle")
@click.option("--bundle", "bundle_dir", type=BUNDLE_DIR, required=True)
@click.option("--precision", type=click.Choice([*PRECISIONS, "all"]), default="all", show_default=True)
@click.option("--threads", type=click.IntRange(min=1), default=None, help="[default: all cores]")
@click.option("--windows", type=click.IntRange(min=2), default=20, show_default=True, help="Windows timed per precision.")
@click.option("--cpu-budget", type=click.FloatRange(0, 1, min_open=True), default=0.5, show_default=True,
              help="The share of all cores a monitor may use: sets the hops reported.")
@click.option("--budget-run", type=click.Path(path_type=Path, exists=True, dir_okay=False), default=None,
              help="Also stream this recording in real time at --hop auto and measure its CPU from /proc.")
@click.option("--allow-busy", is_flag=True, help="Time even while other processes keep the cores busy (and say so).")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
def bench_bundle(bundle_dir, precision, threads, windows, cpu_budget, budget_run, allow_busy, as_json) -> None:
    """Time a bundle on this machine: ms, CPU and GFLOP/s per window, memory, hops here and on a Pi.

    Each precision runs in a fresh process, one after the other, so the figures compare fairly.
    """
    from edge.monitor.bench import PEAK_EFFICIENCY, PI_PEAKS, BenchError, bench, budget_run as run_budget, check_quiet

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


@click.group()
def bundle() -> None:
    """Inspect bundles."""


@bundle.command("check")
@click.argument("bundle_dir", type=BUNDLE_DIR)
def check(bundle_dir: Path) -> None:
    """Every field of bundle.json, checksums, graph shapes, and one window through each precision."""
    from edge.monitor.runtime import Classifier

    try:
        loaded = load_bundle(bundle_dir)
        verify_files(loaded)
        for precision in loaded.precisions:
            p_ac, p_fridge = Classifier(loaded, precision, threads=None).check()  # the same checks as open_classifier
            click.echo(f"{precision}: ok (p_ac {p_ac:.3f}, p_fridge {p_fridge:.3f} on a noise window)")
            report = loaded.manifest.report(precision)
            if report is not None:
                role = "the default" if precision == loaded.default_precision else "offered"
                click.echo(f"{precision}: {role}: {report.default_reason}")
    except BundleError as error:
        raise click.ClickException(str(error)) from error
    click.echo(f"{bundle_dir}: bundle ok (schema {loaded.manifest.schema_version}, "
               f"{len(loaded.manifest.files)} files verified, default precision {loaded.default_precision})")


@click.command("history")
@click.option("--db", "db_path", type=click.Path(path_type=Path, exists=True, dir_okay=False), required=True,
              help="The monitor's --history file (or a copy of it).")
@click.option("--days", type=click.IntRange(min=1), default=7, show_default=True)
@click.option("--watts", default=None, metavar="ac=W,fridge=W", help="Power when running, for energy.")
@click.option("--format", "output_format", type=click.Choice(["table", "json", "csv"]), default="table", show_default=True)
def history(db_path, days, watts, output_format) -> None:
    """Per day and appliance: run-time, cycles, longest run, energy (safe while a monitor writes)."""
    import csv
    import sqlite3
    import time

    from edge.home.history import daily_table, reading
    from edge.home.household import parse_watts

    try:
        power = parse_watts(watts)
        with reading(db_path) as connection:  # one snapshot for every day
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


COMMANDS = (batch, stream, live, devices, bench_bundle, bundle, history)
