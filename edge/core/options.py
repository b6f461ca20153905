"""Options as records: one frozen dataclass per command, each field one option.

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
    if isinstance(kind, TextRule):
        return kind.accepts
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

FILE = PathText(path_type=Path, dir_okay=False)

FOLDER = PathText(path_type=Path, file_okay=False)
