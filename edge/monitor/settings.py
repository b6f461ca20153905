"""The live monitor's options (`humwatch live`): the engine's, and the source, outputs, Home
Assistant, the page and the audit; one monitor from the file's keys, or several ([[monitor]])."""

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
    Range,
    SettingsError,
    _given,
    _merge,
    check_keys,
    merge,
    read_toml,
    setting,
    to_toml,
)
from edge.engine.settings import DetectorSettings

DAY_SEC = 86_400


@dataclasses.dataclass(frozen=True)
class LiveSettings(DetectorSettings):
    """Everything `humwatch live` does: the source, the outputs, Home Assistant, the page, the audit."""

    source: str | None = setting(None, "Where the audio comes from: a device index or (part of its) name (see "
                                       "'humwatch devices'), rtsp:// rtsps:// http:// https:// URL, or - for raw PCM "
                                       "on standard input [default: the system's input device].",
                                 metavar="DEVICE|URL|-")
    source_format: str | None = setting(None, "With --source -: the PCM format, ENCODING:RATE:CHANNELS "
                                              "(s16le, s32le or f32le), e.g. s16le:48000:1.", metavar="FORMAT")
    device: str | None = setting(None, "The same as --source DEVICE (kept from earlier versions).")
    only_changes: bool = setting(False, "Print only lines where the debounced status changes.", is_flag=True)
    output: Path | None = setting(None, "Also append lines to this file.", FILE)
    max_lag: float = setting(3.0, "Seconds inference may fall behind (wall-clock: audio a stream delivers at once "
                                  "after a stall is not lag) before the oldest audio is dropped.",
                             Range(0, 600), show_default=True)
    name: str = setting("humwatch", "This monitor's name: the Home Assistant device (e.g. Kitchen -> sensor.kitchen_state).",
                        show_default=True)
    mqtt: str | None = setting(None, "Publish to this broker: mqtt://HOST[:PORT] or mqtts://...", metavar="URL")
    mqtt_user: str | None = setting(None, "MQTT user name", env="HUMWATCH_MQTT_USER")
    mqtt_password: str | None = setting(None, "MQTT password", env="HUMWATCH_MQTT_PASSWORD", secret=True)
    mqtt_device_id: str | None = setting(None, "Topic id: humwatch/<id>/... [default: the name as a slug]")
    mqtt_heartbeat: float = setting(60.0, "Seconds between state republishes when nothing changes.",
                                    Range(1, DAY_SEC), show_default=True)
    http: str | None = setting(None, "Serve the page at / and /state, /healthz, /metrics (a bare port: loopback only).",
                               metavar="[HOST:]PORT")
    http_token: str | None = setting(None, "Needed to relabel when --http listens beyond loopback.",
                                     env="HUMWATCH_HTTP_TOKEN", secret=True)
    http_host: tuple[str, ...] = setting((), "A name the page is opened by besides localhost and IP addresses (e.g. "
                                             "pi.local; repeat for more).", multiple=True, metavar="NAME")
    relabel_dir: Path | None = setting(None, "The page's relabel control writes correctly named copies of clips here "
                                             "(needs --clips).", FOLDER)
    clips: Path | None = setting(None, "Write the audio around every state change here (FLAC + JSON).", FOLDER)
    clips_seconds: float = setting(20.0, "Seconds of audio in a clip.", Range(1, 600), show_default=True)
    clips_max_mb: float = setting(500.0, "The clips folder is kept under this size.", Range(1, 1_000_000),
                                  show_default=True)
    history: Path | None = setting(None, "Keep every change of each appliance and the monitor's uptime in this "
                                         "SQLite file.", FILE)
    history_days: float = setting(400.0, "Days the history keeps.", Range(1, 36_500), show_default=True)
    alarm: tuple[str, ...] = setting((), "A run or pause of any appliance of the bundle longer than DURATION, e.g. "
                                         "fridge-run-max=90m, fridge-off-max=6h (needs --history; repeat for more).",
                                     multiple=True, metavar="APPLIANCE-(run|off)-max=DURATION")
    watts: str | None = setting(None, "Power of any appliance of the bundle when running: energy sensors, e.g. "
                                      "ac=1200,fridge=150 (needs --history).", metavar="NAME=W,...")
    audit_every_sec: float = setting(60.0, "With the student deciding: BEATs also decides a window this often and the "
                                           "two are compared (0: never).", Range(0, DAY_SEC), show_default=True)
    audit_max_rate: float = setting(0.1, "/healthz says degraded when more than this share of the last hour's audits "
                                         "disagree.", PROBABILITY, show_default=True)
    audit_fallback: float | None = setting(None, "Switch to BEATs for good when more than RATE of the last hour's "
                                                 "audits disagree.", PROBABILITY, metavar="RATE")

# The keys each [[monitor]] table of a settings file gives; every other key is shared by all monitors.
MONITOR_KEYS = ("name", "source", "source_format", "device", "output", "only_changes", "history", "history_days",
                "clips", "clips_seconds", "clips_max_mb", "relabel_dir", "alarm", "watts", "mqtt_device_id")

MONITOR_FILES = ("output", "history", "clips", "relabel_dir")  # each monitor writes its own


def live_settings(ctx: click.Context, given: dict[str, Any], config: Path | None) -> list[LiveSettings]:
    """The monitors `humwatch live` runs: one from the file's keys and the command line (:func:`merge`),
    or one per [[monitor]] table of the file: the table's keys over the shared ones (the file's other
    keys, then the command line)."""
    data = read_toml(config) if config else {}
    if "monitor" not in data:
        return [merge(LiveSettings, ctx, given, config)]
    tables = data.pop("monitor")
    if not isinstance(tables, list) or not tables or not all(isinstance(table, dict) for table in tables):
        raise SettingsError(f"{config}: monitor: expected [[monitor]] tables, e.g. [[monitor]] then name = \"Kitchen\"")
    for key in data:
        if key in MONITOR_KEYS:
            raise SettingsError(f"{config}: {key!r} is a monitor's own key: with [[monitor]] tables in the file, "
                                f"move it into each [[monitor]] table")
    for name in MONITOR_KEYS:
        if _given(ctx, name):
            raise SettingsError(f"--{name.replace('_', '-')}: {config} lists [[monitor]] tables, so it is set in "
                                "each of them, not on the command line")
    shared = _merge(LiveSettings, ctx, given, check_keys(LiveSettings, data, config))
    monitors = []
    for number, table in enumerate(tables, start=1):
        where = f"[[monitor]] {number}" + (f" ({table['name']})" if isinstance(table.get("name"), str) else "")
        for key in table:
            if key not in MONITOR_KEYS:
                why = ("is shared by all monitors: set it once, above the [[monitor]] tables" if key in _field_names()
                       else f"is not a key; a monitor's keys are: {', '.join(MONITOR_KEYS)}")
                raise SettingsError(f"{config}: {where}: {key!r} {why}")
        if "name" not in table:
            raise SettingsError(f"{config}: {where}: no name; give each monitor its own, e.g. name = \"Kitchen\"")
        monitors.append(dataclasses.replace(shared, **check_keys(LiveSettings, table, config, f"{where}: ")))
    check_distinct(monitors, config)
    return monitors


def _field_names() -> set[str]:
    return {field.name for field in dataclasses.fields(LiveSettings)}


def monitor_id(settings: LiveSettings) -> str:
    """A monitor's id: its MQTT topic level (humwatch/<id>/...) and its page (/monitor/<id>/)."""
    from edge.home.mqtt import MqttSettings

    return MqttSettings(host="", port=0, tls=False, name=settings.name, device_id=settings.mqtt_device_id).topic_id


def check_distinct(monitors: list[LiveSettings], config: Path | None) -> None:
    """Each monitor has its own name, id, standard input and files: two would overwrite each other's
    entities or history. A file or folder is what it is, not how it is spelled (links, `..`)."""
    seen: dict[tuple, tuple[str, str]] = {}  # what a monitor has -> (that monitor's name, what sharing it means)
    for settings in monitors:
        try:
            ident = monitor_id(settings)
        except ValueError as error:
            raise SettingsError(f"{config}: [[monitor]] ({settings.name}): {error}") from error
        owns = {("name", settings.name): "the name; give each its own",
                ("id", ident): f"the id {ident!r} (MQTT humwatch/{ident}/..., the page /monitor/{ident}/); give "
                               "each its own name or mqtt_device_id"}
        if settings.source == "-":
            owns[("stdin",)] = "standard input (source = \"-\"): only one monitor can read it"
        for key in MONITOR_FILES:
            path = getattr(settings, key)
            if path:
                owns["file", identity(path)] = f"{key} = {str(path)!r}"
        for thing, shared in owns.items():
            if thing in seen:
                first, before = seen[thing]
                if thing[0] == "file":
                    spelled = shared if shared == before else f"one file or folder, spelled {before} and {shared}"
                    shared = f"{spelled}; give each its own"
                raise SettingsError(f"{config}: the monitors {first!r} and {settings.name!r} share {shared}")
            seen[thing] = settings.name, shared


def monitors_toml(monitors: list[LiveSettings]) -> str:
    """--print-config: one monitor as flat keys (as the file may give it), several as the shared keys
    and a [[monitor]] table each."""
    if len(monitors) == 1:
        return to_toml(monitors[0])
    text = to_toml(monitors[0], leave_out=MONITOR_KEYS)
    return text + "".join(f"\n[[monitor]]\n{to_toml(settings, keys=MONITOR_KEYS)}" for settings in monitors)
