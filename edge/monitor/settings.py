"""The live monitor's options (`humwatch live`): the engine's, and the source, outputs, and the
sections [mqtt] (Home Assistant), [http] (the page), [clips], [audit] and [deploy] (pushed bundles); one monitor from the
file, or several ([[monitor]] tables: the options marked per_monitor in each, the rest shared)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import click

from edge.core.files import identity
from edge.core.options import (
    FILE,
    FOLDER,
    PROBABILITY,
    Option,
    Range,
    SettingsError,
    build,
    check_keys,
    command_line_over,
    given_on_command_line,
    merge,
    options_of,
    read_toml,
    section,
    setting,
    to_toml,
)
from edge.engine.settings import AUDIT_EVERY_SEC, DetectorSettings

DAY_SEC = 86_400


@dataclasses.dataclass(frozen=True)
class MqttOptions:
    """[mqtt]: Home Assistant over MQTT."""

    url: str | None = setting(None, "Publish to this broker: mqtt://HOST[:PORT] or mqtts://...", metavar="URL",
                              flag="mqtt", addon=True)
    user: str | None = setting(None, "MQTT user name", env="HUMWATCH_MQTT_USER", addon=True)
    password: str | None = setting(None, "MQTT password", env="HUMWATCH_MQTT_PASSWORD", secret=True, addon=True)
    device_id: str | None = setting(None, "Topic id: humwatch/<id>/... [default: the name as a slug]", per_monitor=True)
    heartbeat: float = setting(60.0, "Seconds between state republishes when nothing changes.", Range(1, DAY_SEC),
                               show_default=True)


@dataclasses.dataclass(frozen=True)
class HttpOptions:
    """[http]: the page and /state, /healthz, /metrics."""

    listen: str | None = setting(None, "Serve the page at / and /state, /healthz, /metrics (a bare port: loopback "
                                       "only).", metavar="[HOST:]PORT", flag="http")
    token: str | None = setting(None, "Needed to relabel when --http listens beyond loopback.",
                                env="HUMWATCH_HTTP_TOKEN", secret=True, addon=True)
    hosts: tuple[str, ...] = setting((), "A name the page is opened by besides localhost and IP addresses (e.g. "
                                         "pi.local; repeat for more).", multiple=True, metavar="NAME", flag="http_host",
                                     addon=True)


@dataclasses.dataclass(frozen=True)
class ClipsOptions:
    """[clips]: the audio around every state change, and the page's relabelled copies."""

    dir: Path | None = setting(None, "Write the audio around every state change here (FLAC + JSON).", FOLDER,
                               flag="clips", per_monitor=True)
    seconds: float = setting(20.0, "Seconds of audio in a clip.", Range(1, 600), show_default=True, per_monitor=True)
    max_mb: float = setting(500.0, "The clips folder is kept under this size.", Range(1, 1_000_000),
                            show_default=True, per_monitor=True, addon=True)
    relabel_dir: Path | None = setting(None, "The page's relabel control writes correctly named copies of clips here "
                                             "(needs --clips).", FOLDER, flag="relabel_dir", per_monitor=True)
    record_max_sec: float = setting(600.0, "The longest sample the page may record (into --relabel-dir).",
                                    Range(1, 3600), show_default=True, per_monitor=True)
    recordings_max: int = setting(200, "At most this many recordings wait in --relabel-dir (delete or pull some "
                                       "to record more).", click.IntRange(1, 100_000), show_default=True,
                                 per_monitor=True)


@dataclasses.dataclass(frozen=True)
class AuditOptions:
    """[audit]: the teacher's check of the student."""

    every_sec: float = setting(AUDIT_EVERY_SEC, "With the student deciding: BEATs also decides a window this often and the two "
                                     "are compared (0: never).", Range(0, DAY_SEC), show_default=True)
    max_rate: float = setting(0.1, "/healthz says degraded when more than this share of the last hour's audits "
                                   "disagree.", PROBABILITY, show_default=True)
    fallback: float | None = setting(None, "Switch to BEATs for good when more than RATE of the last hour's audits "
                                           "disagree.", PROBABILITY, metavar="RATE")
    teacher: str | None = setting(None, "The BEATs precision that audits, in a short-lived process of its own: fp32 or "
                                        "int8 [default: the bundle's teacher: int8 where it met its bar, else fp32].",
                                  click.Choice(("fp32", "int8")))


@dataclasses.dataclass(frozen=True)
class DeployOptions:
    """[deploy]: bundles pushed to the running monitor ('humwatch push')."""

    dir: Path | None = setting(None, "Accept bundles pushed with 'humwatch push' (needs --http and --http-token) and "
                                     "keep them here: the running one and the previous, for 'humwatch rollback'; "
                                     "the monitor starts with the last one deployed.", FOLDER, flag="deploy_dir")
    max_mb: float = setting(2000.0, "A pushed bundle may hold at most this many MB.", Range(1, 1_000_000),
                            show_default=True)


@dataclasses.dataclass(frozen=True)
class LiveSettings(DetectorSettings):
    """Everything `humwatch live` does: the source, the outputs, Home Assistant, the page, the audit."""

    source: str | None = setting(None, "Where the audio comes from: a device index or (part of its) name (see "
                                       "'humwatch devices'), rtsp:// rtsps:// http:// https:// URL, or - for raw PCM "
                                       "on standard input [default: the system's input device].",
                                 metavar="DEVICE|URL|-", per_monitor=True, addon=True)
    source_format: str | None = setting(None, "With --source -: the PCM format, ENCODING:RATE:CHANNELS "
                                              "(s16le, s32le or f32le), e.g. s16le:48000:1.", metavar="FORMAT",
                                        per_monitor=True)
    device: str | None = setting(None, "The same as --source DEVICE (kept from earlier versions).", per_monitor=True)
    only_changes: bool = setting(False, "Print only lines where the debounced status changes.", is_flag=True,
                                 per_monitor=True)
    output: Path | None = setting(None, "Also append lines to this file.", FILE, per_monitor=True)
    max_lag: float = setting(3.0, "Seconds inference may fall behind (wall-clock: audio a stream delivers at once "
                                  "after a stall is not lag) before the oldest audio is dropped.",
                             Range(0, 600), show_default=True)
    name: str = setting("humwatch", "This monitor's name: the Home Assistant device (e.g. Kitchen -> sensor.kitchen_state).",
                        show_default=True, per_monitor=True, addon=True)
    history: Path | None = setting(None, "Keep every change of each appliance and the monitor's uptime in this "
                                         "SQLite file.", FILE, per_monitor=True)
    history_days: float = setting(400.0, "Days the history keeps.", Range(1, 36_500), show_default=True,
                                  per_monitor=True, addon=True)
    alarm: tuple[str, ...] = setting((), "A run or pause of any appliance of the bundle longer than DURATION, e.g. "
                                         "fridge-run-max=90m, fridge-off-max=6h (needs --history; repeat for more).",
                                     multiple=True, metavar="APPLIANCE-(run|off)-max=DURATION", per_monitor=True,
                                     addon=True)
    watts: str | None = setting(None, "Power of any appliance of the bundle when running: energy sensors, e.g. "
                                      "ac=1200,fridge=150 (needs --history).", metavar="NAME=W,...", per_monitor=True,
                                addon=True)
    mqtt: MqttOptions = section(MqttOptions)
    http: HttpOptions = section(HttpOptions)
    clips: ClipsOptions = section(ClipsOptions)
    audit: AuditOptions = section(AuditOptions)
    deploy: DeployOptions = section(DeployOptions)


def per_monitor(option: Option) -> bool:
    """Whether each [[monitor]] table of a settings file sets this option (every other is shared)."""
    return option.meta["per_monitor"]


def live_settings(ctx: click.Context, given: dict[str, Any], config: Path | None) -> list[LiveSettings]:
    """The monitors `humwatch live` runs: one from the file and the command line (:func:`merge`), or
    one per [[monitor]] table of the file: the table's options over the shared ones (the file's
    others, then the command line)."""
    data = read_toml(config) if config else {}
    if "monitor" not in data:
        return [merge(LiveSettings, ctx, given, config)]
    tables = data.pop("monitor")
    if not isinstance(tables, list) or not tables or not all(isinstance(table, dict) for table in tables):
        raise SettingsError(f"{config}: monitor: expected [[monitor]] tables, e.g. [[monitor]] then name = \"Kitchen\"")
    for option in options_of(LiveSettings):
        if per_monitor(option) and given_on_command_line(ctx, option.key):
            raise SettingsError(f"--{option.key.replace('_', '-')}: {config} lists [[monitor]] tables, so it is set in "
                                "each of them, not on the command line")
    own = "is a monitor's own key: with [[monitor]] tables in the file, move it into each [[monitor]] table"
    common = "is shared by all monitors: set it once, above the [[monitor]] tables"
    values = check_keys(LiveSettings, data, config, refuse=lambda option: own if per_monitor(option) else None)
    shared = command_line_over(LiveSettings, ctx, given, values)
    monitors = []
    for number, table in enumerate(tables, start=1):
        where = f"[[monitor]] {number}" + (f" ({table['name']})" if isinstance(table.get("name"), str) else "")
        if "name" not in table:
            raise SettingsError(f"{config}: {where}: no name; give each monitor its own, e.g. name = \"Kitchen\"")
        mine = check_keys(LiveSettings, table, config, f"{where}: ", "monitor.",
                          refuse=lambda option: None if per_monitor(option) else common)
        monitors.append(build(LiveSettings, {**shared, **mine}))
    check_distinct(monitors, config)
    return monitors


def monitor_id(settings: LiveSettings) -> str:
    """A monitor's id: its MQTT topic level (humwatch/<id>/...) and its page (/monitor/<id>/)."""
    from edge.home.mqtt import MqttSettings

    return MqttSettings(host="", port=0, tls=False, name=settings.name, device_id=settings.mqtt.device_id).topic_id


def check_distinct(monitors: list[LiveSettings], config: Path | None) -> None:
    """Each monitor has its own name, id, standard input and files (its per-monitor paths: it writes
    them): two would overwrite each other's entities or history. A file or folder is what it is,
    not how it is spelled (links, `..`)."""
    files = [option for option in options_of(LiveSettings) if per_monitor(option) and isinstance(option.type, click.Path)]
    seen: dict[tuple, tuple[str, str]] = {}  # what a monitor has -> (that monitor's name, what sharing it means)
    for settings in monitors:
        try:
            ident = monitor_id(settings)
        except ValueError as error:
            raise SettingsError(f"{config}: [[monitor]] ({settings.name}): {error}") from error
        owns = {("name", settings.name): "the name; give each its own",
                ("id", ident): f"the id {ident!r} (MQTT humwatch/{ident}/..., the page /monitor/{ident}/); give "
                               "each its own name or [mqtt] device_id"}
        if settings.source == "-":
            owns[("stdin",)] = "standard input (source = \"-\"): only one monitor can read it"
        for option in files:
            path = option.value(settings)
            if path:
                owns["file", identity(path)] = f"{option.spelled()} = {str(path)!r}"
        for thing, shared in owns.items():
            if thing in seen:
                first, before = seen[thing]
                if thing[0] == "file":
                    spelled = shared if shared == before else f"one file or folder, spelled {before} and {shared}"
                    shared = f"{spelled}; give each its own"
                raise SettingsError(f"{config}: the monitors {first!r} and {settings.name!r} share {shared}")
            seen[thing] = settings.name, shared


def monitors_toml(monitors: list[LiveSettings]) -> str:
    """--print-config: one monitor as the file may give it, several as the shared options and a
    [[monitor]] table each."""
    if len(monitors) == 1:
        return to_toml(monitors[0])
    text = to_toml(monitors[0], keep=lambda option: not per_monitor(option))
    return text + "".join(f"\n[[monitor]]\n{to_toml(settings, per_monitor, 'monitor.')}" for settings in monitors)
