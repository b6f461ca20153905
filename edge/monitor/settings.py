"""The settings of the edge commands: one frozen dataclass, each field one option.

A field's metadata holds its help and click type: :func:`click_options` makes the command-line
options from the fields, :func:`load_toml` reads the same keys (the long option names, with `_`
for `-`) from a TOML file, and :func:`merge` lets the command line beat the file. So every option
has one name, one type, one default and one help text, wherever it is given; and one check of its
value: every number finite and in its range, every text free of control characters and valid
Unicode, so that :func:`to_toml` can always write it back.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
import unicodedata
from pathlib import Path
from typing import Any, Callable

import click

from edge.core.bundle import PRECISIONS
from edge.core.defaults import MAX_SPAN_SEC
from edge.core.files import identity
from edge.core.hearing import SIGNAL_FLOOR_DBFS, SILENT_DBFS
from edge.core.redact import HIDDEN, redact


def setting(default: Any = None, help: str = "", type: click.ParamType | None = None, *, env: str | None = None,
            multiple: bool = False, is_flag: bool = False, secret: bool = False, metavar: str | None = None,
            show_default: bool = False) -> Any:
    """A settings field: its default and how the command line and the file spell and check it."""
    if type is None and not is_flag:
        type = SECRET if secret else TEXT
    metadata = dict(help=help, type=type, env=env, multiple=multiple, is_flag=is_flag, secret=secret,
                    metavar=metavar, show_default=show_default)
    if multiple:
        return dataclasses.field(default=tuple(default or ()), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def check_text(text: str) -> None:
    """Text a setting can hold: no control characters (no setting means one, and a log line or a
    topic would carry it) and nothing that is not Unicode (a lone surrogate: bytes that were not
    UTF-8, or JSON's "\\ud800"), which no TOML file or UTF-8 log can hold. The ValueError names the
    character, not the text (it may be a secret)."""
    for position, character in enumerate(text):
        kind = unicodedata.category(character)
        if kind in ("Cc", "Cs"):
            what = "a lone surrogate (not UTF-8 text)" if kind == "Cs" else "a control character"
            raise ValueError(f"{what}, U+{ord(character):04X}, at character {position + 1}; remove it")


class TextRule(click.ParamType):
    """An option kept as text (:func:`check_text`; a `secret` one never shown) and checked by
    `rule`, whose ValueError is the message."""

    def __init__(self, name: str, rule: Callable[[str], Any] | None = None, secret: bool = False) -> None:
        self.name, self.rule, self.secret = name, rule, secret

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        text = str(value)
        try:
            check_text(text)
        except ValueError as error:
            self.fail(f"{HIDDEN if self.secret else redact(repr(text))}: {error}", param, ctx)
        if self.rule is not None:
            try:
                self.rule(text)
            except ValueError as error:
                self.fail(redact(str(error)), param, ctx)
        return text


class PathText(click.Path):
    """A file or folder option whose name is text a setting can hold (:func:`check_text`)."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        return super().convert(TEXT.convert(value, param, ctx) if isinstance(value, str) else value, param, ctx)


class Range(click.FloatRange):
    """A finite number in [min, max] (click's FloatRange alone lets nan through)."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if math.isnan(number):
            self.fail(f"{value!r} is not a number in the range {self._describe_range()}", param, ctx)
        return number


def hop_rule(text: str) -> float | None:
    """Seconds between decisions, or "auto": edge.monitor.pacing.parse_hop, imported only when an option
    is checked (pacing loads onnxruntime)."""
    from edge.monitor.pacing import parse_hop

    return parse_hop(text)


def parse_level(text: str) -> tuple[str, float]:
    """'dehumidifier_on=0.8' -> ('dehumidifier_on', 0.8); whether the bundle has that appliance is
    checked against its labels when the detector opens."""
    key, _, value = text.partition("=")
    try:
        probability = float(value)
    except ValueError:
        probability = float("nan")
    if not key.strip() or not 0 <= probability <= 1:
        raise ValueError(f"{text!r}: expected KEY=P with P in [0, 1], e.g. t_dehumidifier=0.6 or dehumidifier_on=0.8")
    return key.strip(), probability


TEXT = TextRule("text")
SECRET = TextRule("secret", secret=True)
HOP = TextRule("hop", hop_rule)
LEVEL = TextRule("level", parse_level)
PROBABILITY = Range(0, 1)
SECONDS = Range(0, int(MAX_SPAN_SEC), min_open=True)  # the decision spans: edge.core.defaults.DecisionConfig's bounds


@dataclasses.dataclass(frozen=True)
class DetectorSettings:
    """What decides: the bundle, the model, the hop, and overrides of the bundle's decision settings."""

    bundle: Path | None = setting(None, "Bundle directory (from humwatch export).",
                                  PathText(path_type=Path, file_okay=False))
    precision: str | None = setting(None, "fp32 or int8 (BEATs), or student (distilled) [default: the bundle's]",
                                    click.Choice(PRECISIONS))
    threads: int | None = setting(None, "onnxruntime intra-op threads [default: all cores]", click.IntRange(1, 1024))
    hop: str = setting("auto", "Seconds between decisions, or auto: the shortest hop that fits --cpu-budget.",
                       HOP, metavar="SECONDS|auto", show_default=True)
    cpu_budget: float = setting(0.5, "With --hop auto: the share of all cores inference may use.",
                                Range(0, 1, min_open=True), show_default=True)
    signal_floor_dbfs: float = setting(SIGNAL_FLOOR_DBFS, "Windows quieter than this (RMS about the mean, in dBFS) are "
                                       "not decided: the line says no-signal (digital silence, a dead microphone).",
                                       Range(SILENT_DBFS, 0), show_default=True)
    median_sec: float | None = setting(None, "Seconds of windows in the running median [bundle]", SECONDS)
    debounce_sec: float | None = setting(None, "Seconds a new state must hold before it is reported [bundle]", SECONDS)
    t_ac: float | None = setting(None, "File threshold for the AC [bundle]", PROBABILITY)
    t_fridge: float | None = setting(None, "File threshold for the fridge [bundle]", PROBABILITY)
    ac_on: float | None = setting(None, "AC hysteresis: on at [bundle]", PROBABILITY)
    ac_off: float | None = setting(None, "AC hysteresis: off below [bundle]", PROBABILITY)
    fridge_on: float | None = setting(None, "Fridge hysteresis: on at [bundle]", PROBABILITY)
    fridge_off: float | None = setting(None, "Fridge hysteresis: off below [bundle]", PROBABILITY)
    level: tuple[str, ...] = setting((), "Any appliance's file threshold or hysteresis, e.g. t_dehumidifier=0.6, "
                                     "dehumidifier_on=0.8 (repeat for more) [bundle]", LEVEL, multiple=True,
                                     metavar="KEY=P")

    def decision_overrides(self) -> dict[str, float]:
        """The decision settings given here (the rest come from the bundle)."""
        names = ("median_sec", "debounce_sec", "t_ac", "t_fridge", "ac_on", "ac_off", "fridge_on", "fridge_off")
        given = {name: getattr(self, name) for name in names if getattr(self, name) is not None}
        return {**given, **dict(parse_level(text) for text in self.level)}


def key_of(field: dataclasses.Field) -> str:
    """The file key and (with '-' for '_') the long option of a field."""
    return field.name


def click_options(cls: type, exclude: tuple[str, ...] = (), required: tuple[str, ...] = ()) -> Callable:
    """A decorator adding one click option per field of `cls` (but those in `exclude`); the fields in
    `required` must be given on the command line (where no settings file can give them)."""
    def decorate(function: Callable) -> Callable:
        for field in reversed(dataclasses.fields(cls)):
            if field.name in exclude:
                continue
            meta = field.metadata
            kwargs = dict(help=meta["help"] + (f" [env {meta['env']}]" if meta["env"] else ""), envvar=meta["env"],
                          show_default=meta["show_default"], metavar=meta["metavar"], required=field.name in required)
            if meta["is_flag"]:
                kwargs.update(is_flag=True, default=field.default)
            else:
                kwargs.update(type=meta["type"], multiple=meta["multiple"], default=field.default)
            function = click.option(f"--{key_of(field).replace('_', '-')}", field.name, **kwargs)(function)
        return function
    return decorate


class SettingsError(click.ClickException):
    """A settings file or value that cannot be used; the message names the key and the file (any
    URL in it redacted)."""

    def __init__(self, message: str) -> None:
        super().__init__(redact(message))


def _expected(field: dataclasses.Field) -> tuple[type, ...]:
    meta = field.metadata
    if meta["is_flag"]:
        return (bool,)
    kind = meta["type"]
    if kind is HOP:
        return (str, int, float)
    if isinstance(kind, (click.IntRange,)) or kind is click.INT:
        return (int,)
    if isinstance(kind, click.FloatRange) or kind is click.FLOAT:
        return (int, float)
    return (str,)


def load_toml(cls: type, path: Path) -> dict[str, Any]:
    """The settings in a TOML file, checked key by key: {field name: value}."""
    return check_keys(cls, read_toml(path), path)


def read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as error:
        raise SettingsError(f"--config {path}: cannot read it ({error.strerror or error})") from error
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise SettingsError(f"--config {path}: not valid TOML ({error})") from error


def check_keys(cls: type, data: dict[str, Any], path: Path, where: str = "") -> dict[str, Any]:
    """{field name: value} of a file's table (`where` says which, e.g. "[[monitor]] 2 (Cellar): ")."""
    fields = {key_of(field): field for field in dataclasses.fields(cls)}
    values = {}
    for key, value in data.items():
        field = fields.get(key)
        if field is None:
            known = ", ".join(sorted(fields))
            raise SettingsError(f"{path}: {where}unknown key {key!r}; the keys are: {known}")
        values[field.name] = _checked(field, value, f"{path}: {where}{key}")
    return values


def _checked(field: dataclasses.Field, value: Any, where: str) -> Any:
    """A file value of the right type, converted and range-checked by the option's own click type."""
    expected, kind = _expected(field), field.metadata["type"]
    items = value if field.metadata["multiple"] else [value]
    if field.metadata["multiple"] and not isinstance(value, list):
        raise SettingsError(f"{where} = {value!r}: expected a list, e.g. [\"...\"]")
    for item in items:
        if isinstance(item, bool) != (bool in expected) or not isinstance(item, expected):
            names = " or ".join("number" if t is float else {int: "integer", str: "string", bool: "true/false"}[t]
                                for t in expected if not (t is int and float in expected))
            bounds = f" in the range {kind._describe_range()}" if isinstance(kind, click.types._NumberRangeBase) else ""
            shown = HIDDEN if field.metadata["secret"] else repr(item)
            raise SettingsError(f"{where} = {shown}: expected {names}{bounds}")
    if field.metadata["is_flag"]:
        return value
    try:
        converted = [kind.convert(item, None, None) for item in items]
    except click.BadParameter as error:
        raise SettingsError(f"{where}: {error.message}") from error
    return tuple(converted) if field.metadata["multiple"] else converted[0]


def merge(cls: type, ctx: click.Context, given: dict[str, Any], config: Path | None) -> Any:
    """The settings in force: the dataclass defaults, then the file, then what the command line or
    the environment gave (`given`: the command's keyword arguments)."""
    return _merge(cls, ctx, given, load_toml(cls, config) if config else {})


def _given(ctx: click.Context, name: str) -> bool:
    """Whether the command line or the environment gave option `name`."""
    return ctx.get_parameter_source(name) in (click.core.ParameterSource.COMMANDLINE,
                                              click.core.ParameterSource.ENVIRONMENT)


def _merge(cls: type, ctx: click.Context, given: dict[str, Any], values: dict[str, Any]) -> Any:
    for field in dataclasses.fields(cls):
        if field.name in given and (_given(ctx, field.name) or field.name not in values):
            values[field.name] = given[field.name]
    return cls(**values)


def to_toml(settings: Any, keys: tuple[str, ...] | None = None, leave_out: tuple[str, ...] = ()) -> str:
    """The settings in force as TOML, secrets masked (credentials in URLs too); unset options as
    comments. `keys`: only these fields; `leave_out`: not these."""
    lines = []
    for field in dataclasses.fields(settings):
        if (keys is not None and field.name not in keys) or field.name in leave_out:
            continue
        value = getattr(settings, field.name)
        if value is None:
            lines.append(f"# {key_of(field)} =  (not set)")
            continue
        if field.metadata["secret"]:
            value = HIDDEN
        lines.append(f"{key_of(field)} = {toml_value(value, redact)}")
    return "\n".join(lines) + "\n"


_ESCAPES = {"\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r", '"': '\\"', "\\": "\\\\"}


def toml_value(value: Any, shown: Callable[[str], str] = str) -> str:
    """`value` (text or a path, a number, true/false, or a list of them) as a TOML value, each text
    through `shown` first. (Python writes a float as TOML does, inf and nan too.)"""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(item, shown) for item in value) + "]"
    return '"' + "".join(map(_escaped, shown(str(value)))) + '"'


def _escaped(character: str) -> str:
    """One character as a TOML basic string holds it: quotes, backslashes and control characters
    escaped; a lone surrogate, which no TOML file can hold, is a ValueError."""
    kind = unicodedata.category(character)
    if character in _ESCAPES:
        return _ESCAPES[character]
    if kind == "Cs":
        raise ValueError(f"U+{ord(character):04X} is a lone surrogate (not UTF-8 text): TOML cannot hold it")
    return f"\\u{ord(character):04X}" if kind == "Cc" else character


def require_bundle(settings: DetectorSettings) -> None:
    if settings.bundle is None:
        raise SettingsError("no bundle: pass --bundle DIR or set bundle = \"DIR\" in the --config file")



DAY_SEC = 86_400
FILE = PathText(path_type=Path, dir_okay=False)
FOLDER = PathText(path_type=Path, file_okay=False)


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
