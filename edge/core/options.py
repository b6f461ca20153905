"""Options as records: one frozen dataclass per command, each field one option.

A field made by :func:`setting` holds its help and click type: :func:`click_options` makes the
command-line options from the fields, :func:`load_toml` reads the same settings from a TOML file,
and :func:`merge` lets the command line beat the file. So every option has one name, one type, one
default and one help text, wherever it is given; and one check of its value: every number finite
and in its range, every text free of control characters and valid Unicode, so that :func:`to_toml`
can always write it back.

A record may hold sections (:func:`section`): records of their own, each a table of the file
([mqtt] user = ...) and options with its name in front on the command line (--mqtt-user). Each
option has a flat key, its long option with '_' for '-' (mqtt_user; or its `flag`: mqtt for [mqtt]
url). Files written before sections held the flat keys: they are still read, each with a message
naming its new spelling.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
import tomllib
import unicodedata
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Callable

import click

from edge.core.redact import HIDDEN, redact

log = logging.getLogger("humwatch.settings")


def setting(default: Any = None, help: str = "", type: click.ParamType | None = None, *, env: str | None = None,
            multiple: bool = False, is_flag: bool = False, secret: bool = False, metavar: str | None = None,
            show_default: bool = False, flag: str | None = None, callback: Callable | None = None,
            per_monitor: bool = False, addon: bool = False) -> Any:
    """A settings field: its default (dataclasses.MISSING: none, the option must be given) and how the
    command line and the file spell and check it. `flag`: the option's name where it is not the
    field's (with its section's in front); `callback`: click's, to reshape what the command line
    gave; `per_monitor`: each [[monitor]] table of a settings file sets its own; `addon`: an option
    of the Home Assistant add-on, named by its flat key."""
    if type is None and not is_flag:
        type = SECRET if secret else TEXT
    metadata = dict(help=help, type=type, env=env, multiple=multiple, is_flag=is_flag, secret=secret, metavar=metavar,
                    show_default=show_default, flag=flag, callback=callback, per_monitor=per_monitor, addon=addon)
    if isinstance(type, Table):
        return dataclasses.field(default_factory=dict, metadata=metadata)
    if multiple:
        return dataclasses.field(default=tuple(default or ()), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def section(cls: type) -> Any:
    """A field holding a section of settings, the record `cls`: a table of the settings file."""
    return dataclasses.field(default_factory=cls, metadata={"section": cls})


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
    `rule`, whose ValueError is the message. A settings file may give it as any of `accepts`
    (a number too, for an option such as --hop 1.5)."""

    def __init__(self, name: str, rule: Callable[[str], Any] | None = None, secret: bool = False,
                 accepts: tuple[type, ...] = (str,)) -> None:
        self.name, self.rule, self.secret, self.accepts = name, rule, secret, accepts

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

TEXT = TextRule("text")

SECRET = TextRule("secret", secret=True)

PROBABILITY = Range(0, 1)


@dataclasses.dataclass(frozen=True)
class Option:
    """One option of a settings record: a field of the record, or of one of its sections."""

    field: dataclasses.Field
    section: str | None = None

    @property
    def meta(self) -> Mapping[str, Any]:
        return self.field.metadata

    @property
    def type(self) -> click.ParamType | None:
        return self.meta["type"]

    @property
    def key(self) -> str:
        """The flat key: the long option with '_' for '-', and the key of files written before sections."""
        if self.meta["flag"]:
            return self.meta["flag"]
        return f"{self.section}_{self.field.name}" if self.section else self.field.name

    def spelled(self, prefix: str = "") -> str:
        """How a settings file spells it: name, [mqtt] user, [levels.NAME] threshold / on / off
        (`prefix`: the path of the table it is in, e.g. "monitor.")."""
        if isinstance(self.type, Table):
            return f"[{prefix}{self.field.name}.NAME] {' / '.join(self.type.keys)}"
        return f"[{prefix}{self.section}] {self.field.name}" if self.section else self.field.name

    def value(self, settings: Any) -> Any:
        """Its value in a record of its class."""
        return getattr(getattr(settings, self.section) if self.section else settings, self.field.name)


def options_of(cls: type) -> list[Option]:
    """The options of a settings record: its own fields made by :func:`setting`, then its sections'."""
    own = [Option(field) for field in dataclasses.fields(cls) if "help" in field.metadata]
    return own + [Option(inner, field.name) for field in dataclasses.fields(cls) if "section" in field.metadata
                  for inner in dataclasses.fields(field.metadata["section"])]


def build(cls: type, values: Mapping[str, Any]) -> Any:
    """The record `cls` from {flat key: value}; the defaults for the rest."""
    own: dict[str, Any] = {}
    sections: dict[str, dict[str, Any]] = {}
    for option in options_of(cls):
        if option.key in values:
            (sections.setdefault(option.section, {}) if option.section else own)[option.field.name] = values[option.key]
    for field in dataclasses.fields(cls):
        if "section" in field.metadata:
            own[field.name] = field.metadata["section"](**sections.get(field.name, {}))
    return cls(**own)


def click_options(cls: type, exclude: tuple[str, ...] = (), required: tuple[str, ...] = ()) -> Callable:
    """A decorator adding the click options of `cls` (but those whose flat key, or a table shortcut's, is in
    `exclude`); those in `required` (where no settings file can give them) or with no default must be given."""
    def decorate(function: Callable) -> Callable:
        for option in reversed(options_of(cls)):
            if option.key not in exclude:
                for make in reversed(_click_options(option, option.key in required, exclude)):
                    function = make(function)
        return function
    return decorate


def click_option(cls: type, key: str) -> Callable:
    """The click option of one option of `cls` (its flat key), for a command that has no record."""
    (made,) = _click_options(next(option for option in options_of(cls) if option.key == key), False)
    return made


def _click_options(option: Option, required: bool, exclude: tuple[str, ...] = ()) -> list[Callable]:
    """The option (named by its flat key), and a table's shortcuts (--t-ac P: --level ac.threshold=P)."""
    meta, field, flag = option.meta, option.field, f"--{option.key.replace('_', '-')}"
    kwargs = dict(help=meta["help"] + (f" [env {meta['env']}]" if meta["env"] else ""), envvar=meta["env"],
                  show_default=meta["show_default"], metavar=meta["metavar"], callback=meta["callback"],
                  required=required or (field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING))
    if meta["is_flag"]:
        kwargs.update(is_flag=True, default=field.default)
    else:
        default = None if field.default is dataclasses.MISSING else field.default
        kwargs.update(type=option.type, multiple=meta["multiple"], default=() if meta["multiple"] else default)
    made = [click.option(flag, option.key, **kwargs)]
    if isinstance(option.type, Table):
        value = option.type.form.partition("=")[2]  # P
        made += [click.option(f"--{alias.replace('_', '-')}", alias, type=option.type.value, default=None, metavar=value,
                              help=f"Short for {flag} {name}.{key}={value}.")
                 for alias, (name, key) in option.type.aliases.items() if alias not in exclude]
    return made


class SettingsError(click.ClickException):
    """A settings file or value that cannot be used; the message names the key and the file (any
    URL in it redacted)."""

    def __init__(self, message: str) -> None:
        super().__init__(redact(message))


class Table(click.ParamType):
    """A setting that is a table of tables of values, {NAME: {KEY: VALUE}} (the levels: {appliance:
    {side: p}}): in a settings file [FIELD.NAME] KEY = VALUE, on the command line NAME.KEY=VALUE,
    repeated (`form` names the parts, e.g. APPLIANCE.SIDE=P). `aliases`: options that set one entry
    (t_ac: ac, threshold); `old`: an earlier spelling of NAME.KEY (t_fridge -> fridge, threshold),
    still read, with a message on the command line."""

    name = "table"

    def __init__(self, keys: tuple[str, ...], value: click.ParamType, form: str, example: str,
                 aliases: Mapping[str, tuple[str, str]], old: Callable[[str], tuple[str, str]]) -> None:
        self.keys, self.value, self.form, self.example, self.aliases, self.old = keys, value, form, example, aliases, old

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> dict:
        try:
            entry, new = self.entry(value)
        except ValueError as error:
            self.fail(redact(str(error)), param, ctx)
        if new is not None and param is not None:
            log.warning("%s %s is now %s %s", param.opts[0], value, param.opts[0], new)
        return entry

    def entry(self, text: str) -> tuple[dict[str, dict[str, Any]], str | None]:
        """'fridge.on=0.8' -> ({'fridge': {'on': 0.8}}, None); an old spelling ('fridge_on=0.8') -> the
        same and its new one ('fridge.on=0.8'). A ValueError says what is expected."""
        check_text(text)
        key, _, value = text.partition("=")
        name, dot, side = key.strip().rpartition(".")
        new = None
        if not dot:
            try:
                name, side = self.old(key.strip())
            except ValueError:
                name = ""
            new = f"{name}.{side}={value.strip()}"
        try:
            number = self.value.convert(value.strip(), None, None)
        except click.BadParameter:
            number = None
        if not name or side not in self.keys or number is None:
            parts, _, value_part = self.form.partition("=")
            raise ValueError(f"{text!r}: expected {self.form} ({parts.rpartition('.')[2]}: {', '.join(self.keys)}; "
                             f"{value_part}: {self.value._describe_range()}), e.g. {self.example}")
        return {name: {side: number}}, new

    def read(self, value: Any, where: str, key: str) -> dict[str, dict[str, Any]]:
        """A settings file's tables, {NAME: {KEY: VALUE}}, or (as files held before) a list of
        NAME.KEY=VALUE texts; `key`: the file's key, `where` it and the file."""
        if isinstance(value, list):
            entries = []
            for item in value:
                if not isinstance(item, str):
                    raise SettingsError(f"{where} = {item!r}: expected string")
                try:
                    entries.append(self.entry(item)[0])
                except ValueError as error:
                    raise SettingsError(f"{where}: {error}") from None
            return overlay(*entries)
        if not isinstance(value, dict) or not all(isinstance(table, dict) for table in value.values()):
            name, _, side = self.example.partition("=")[0].rpartition(".")
            raise SettingsError(f"{where} = {value!r}: expected a table per name, e.g. [{key}.{name}] {side} = "
                                f"{self.example.partition('=')[2]}")
        tables = {}
        for name, table in value.items():
            _scalar(TEXT, name, where)
            for side in table:
                if side not in self.keys:
                    raise SettingsError(f"{where}.{toml_key(name)}: unknown key {side!r}; the keys are: {', '.join(self.keys)}")
            tables[name] = {side: _scalar(self.value, number, f"{where}.{toml_key(name)}.{side}")
                            for side, number in table.items()}
        return tables


def overlay(*tables: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Tables of tables laid one over the other: a later entry beats an earlier one."""
    merged: dict[str, dict[str, Any]] = {}
    for table in tables:
        for name, entries in table.items():
            merged[name] = {**merged.get(name, {}), **entries}
    return merged


def _expected(kind: click.ParamType) -> tuple[type, ...]:
    if isinstance(kind, TextRule):
        return kind.accepts
    if isinstance(kind, (click.IntRange,)) or kind is click.INT:
        return (int,)
    if isinstance(kind, click.FloatRange) or kind is click.FLOAT:
        return (int, float)
    return (str,)


def load_toml(cls: type, path: Path) -> Any:
    """The settings in a TOML file: the record `cls`."""
    return build(cls, check_keys(cls, read_toml(path), path))


def read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as error:
        raise SettingsError(f"--config {path}: cannot read it ({error.strerror or error})") from error
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise SettingsError(f"--config {path}: not valid TOML ({error})") from error


def check_keys(cls: type, data: Mapping[str, Any], path: Path, where: str = "", prefix: str = "",
               refuse: Callable[[Option], str | None] = lambda option: None) -> dict[str, Any]:
    """{flat key: value} of a file's table, each value checked (`where` says which table, e.g.
    "[[monitor]] 2 (Cellar): ", and `prefix` its path, e.g. "monitor."). A key spelled as before
    sections (mqtt_user, t_ac) is read with a message naming its new spelling. `refuse(option)`: why
    an option cannot be set here, or None."""
    allowed = [option for option in options_of(cls) if refuse(option) is None]
    values: dict[str, Any] = {}
    spellings: dict[str, str] = {}
    for option, written, value, new in _entries(cls, data, path, where, prefix, allowed):
        why = refuse(option)
        if why is not None:
            raise SettingsError(f"{path}: {where}{written!r} {why}")
        if new:
            log.warning("%s: %s%s is now %s", path, where, written, new)
        if isinstance(option.type, Table):
            value = _table(option.type, value, f"{path}: {where}{written}", written)
            twice = [f"{name}.{key}" for name in value for key in value[name] if key in values.get(option.key, {}).get(name, {})]
            if twice:
                raise SettingsError(f"{path}: {where}{written}: {twice[0]} is set twice; keep {option.spelled(prefix)}")
            values[option.key] = overlay(values.get(option.key, {}), value)
            continue
        if option.key in spellings:
            raise SettingsError(f"{path}: {where}{spellings[option.key]} and {written} are one setting; keep "
                                f"{option.spelled(prefix)}")
        spellings[option.key] = written
        values[option.key] = _checked(option, value, f"{path}: {where}{written}")
    return values


def _entries(cls: type, data: Mapping[str, Any], path: Path, where: str, prefix: str, allowed: list[Option]):
    """(option, the key as written, value, its new spelling when `written` is an old one, or None) of
    each key of a file's table; an unknown key is a SettingsError listing the `allowed` ones."""
    every = options_of(cls)
    own = {option.field.name: option for option in every if option.section is None}
    inner = {(option.section, option.field.name): option for option in every if option.section}
    flat = {option.key: option for option in every}
    aliases = {alias: option for option in every if isinstance(option.type, Table) for alias in option.type.aliases}
    for key, value in data.items():
        if any(option.section == key for option in every) and isinstance(value, dict):
            for name, inner_value in value.items():
                if (key, name) not in inner:
                    keys = ", ".join(option.field.name for option in allowed if option.section == key)
                    raise SettingsError(f"{path}: {where}unknown key {name!r} in [{prefix}{key}]; its keys are: {keys}")
                yield inner[key, name], f"[{prefix}{key}] {name}", inner_value, None
        elif key in own:
            yield own[key], key, value, None
        elif key in flat:
            yield flat[key], key, value, flat[key].spelled(prefix)
        elif key in aliases:  # a table's entry (t_ac = 0.6: [levels.ac] threshold = 0.6)
            table = aliases[key]
            name, side = table.type.aliases[key]
            yield table, key, value, f"[{prefix}{table.field.name}.{toml_key(name)}] {side}"
        else:
            keys = sorted(option.field.name for option in allowed if option.section is None)
            keys += [option.spelled(prefix) for option in allowed if option.section]
            raise SettingsError(f"{path}: {where}unknown key {key!r}; the keys are: {', '.join(keys)}")


def _table(kind: Table, value: Any, where: str, key: str) -> dict[str, dict[str, Any]]:
    """A table setting's value in a file: its tables, or the one entry a shortcut's key gives (t_ac = 0.6)."""
    if key in kind.aliases:
        name, side = kind.aliases[key]
        return {name: {side: _scalar(kind.value, value, where)}}
    return kind.read(value, where, key)


def _checked(option: Option, value: Any, where: str) -> Any:
    """A file value of the right type, converted and range-checked by the option's own click type."""
    meta = option.meta
    if meta["is_flag"]:
        if not isinstance(value, bool):
            raise SettingsError(f"{where} = {value!r}: expected true/false")
        return value
    if meta["multiple"]:
        if not isinstance(value, list):
            raise SettingsError(f"{where} = {value!r}: expected a list, e.g. [\"...\"]")
        return tuple(_scalar(option.type, item, where, meta["secret"]) for item in value)
    return _scalar(option.type, value, where, meta["secret"])


def _scalar(kind: click.ParamType, value: Any, where: str, secret: bool = False) -> Any:
    """One value of the right type for `kind`, converted and checked by it."""
    expected = _expected(kind)
    if isinstance(value, bool) or not isinstance(value, expected):
        names = " or ".join("number" if t is float else {int: "integer", str: "string"}[t]
                            for t in expected if not (t is int and float in expected))
        bounds = f" in the range {kind._describe_range()}" if isinstance(kind, click.types._NumberRangeBase) else ""
        raise SettingsError(f"{where} = {HIDDEN if secret else repr(value)}: expected {names}{bounds}")
    try:
        return kind.convert(value, None, None)
    except click.BadParameter as error:
        raise SettingsError(f"{where}: {error.message}") from error


def check_values(cls: type, values: Mapping[str, Any], path: Path) -> dict[str, Any]:
    """{flat key: value} checked as a settings file's would be, each named by its flat key (the add-on's
    options); an unknown key is a SettingsError."""
    by_key = {option.key: option for option in options_of(cls)}
    for key in values:
        if key not in by_key:
            raise SettingsError(f"{path}: unknown key {key!r}; the keys are: {', '.join(sorted(by_key))}")
    return {key: _checked(by_key[key], value, f"{path}: {key}") for key, value in values.items()}


def merge(cls: type, ctx: click.Context, given: dict[str, Any], config: Path | None = None) -> Any:
    """The settings in force: the dataclass defaults, then the file, then what the command line or
    the environment gave (`given`: the command's keyword arguments)."""
    return build(cls, command_line_over(cls, ctx, given, check_keys(cls, read_toml(config), config) if config else {}))


def given_on_command_line(ctx: click.Context, key: str) -> bool:
    """Whether the command line or the environment gave option `key`."""
    return ctx.get_parameter_source(key) in (click.core.ParameterSource.COMMANDLINE,
                                             click.core.ParameterSource.ENVIRONMENT)


def command_line_over(cls: type, ctx: click.Context, given: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """{flat key: value}: a file's `values` with what the command line or the environment gave laid
    over them (a table's entries one by one: its shortcuts, then the option)."""
    values = dict(values)
    for option in options_of(cls):
        key, kind = option.key, option.type
        if isinstance(kind, Table):
            shortcuts = [{name: {side: given[alias]}} for alias, (name, side) in kind.aliases.items()
                         if given.get(alias) is not None]
            values[key] = overlay(values.get(key, {}), *shortcuts, *given.get(key, ()))
        elif key in given and (given_on_command_line(ctx, key) or key not in values):
            values[key] = given[key]
    return values


def to_toml(settings: Any, keep: Callable[[Option], bool] = lambda option: True, prefix: str = "") -> str:
    """The settings in force as TOML, secrets masked (credentials in URLs too); unset options as
    comments. `keep`: which options; `prefix`: the path of the tables (e.g. "monitor.")."""
    rows = [(option, option.value(settings)) for option in options_of(type(settings)) if keep(option)]
    return _toml([(option, HIDDEN if value is not None and option.meta["secret"] else value) for option, value in rows],
                  prefix, redact)


def values_toml(cls: type, values: Mapping[str, Any]) -> str:
    """{flat key: value} as a settings file of `cls` writes them (the values as they are)."""
    return _toml([(option, values[option.key]) for option in options_of(cls) if option.key in values], "", str)


def _toml(rows: list[tuple[Option, Any]], prefix: str, shown: Callable[[str], str]) -> str:
    """The options' top-level keys, then a table per entry of a table setting ([levels.ac]), then one
    per section ([mqtt]); each text through `shown`."""
    top: list[str] = []
    tables: dict[str, list[str]] = {}
    for option, value in rows:
        name = option.field.name
        if isinstance(option.type, Table):
            if not value:
                top.append(f"# {option.spelled(prefix)} =  (not set)")
            for entry, numbers in value.items():
                tables[f"{prefix}{name}.{toml_key(entry)}"] = [f"{key} = {toml_value(number)}" for key, number in numbers.items()]
            continue
        line = f"# {name} =  (not set)" if value is None else f"{name} = {toml_value(value, shown)}"
        (tables.setdefault(f"{prefix}{option.section}", []) if option.section else top).append(line)
    return "\n".join([*top, *(f"\n[{table}]\n" + "\n".join(lines) for table, lines in tables.items())]) + "\n"


def toml_key(name: str) -> str:
    """`name` as a TOML key: bare when it can be, else a quoted string."""
    return name if re.fullmatch(r"[A-Za-z0-9_-]+", name) else toml_value(name)

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

FILE = PathText(path_type=Path, dir_okay=False)

FOLDER = PathText(path_type=Path, file_okay=False)
