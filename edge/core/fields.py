"""JSON objects read field by field: each value's type and range checked, every error naming the
field by its path (``window.hop_sec``, ``parity.int8.meets_bar``)."""

from __future__ import annotations

import math
from typing import Any

REQUIRED = object()  # the default of a field that must be there


class FieldError(ValueError):
    """A field of the wrong type or out of range; the message starts with the field's path."""


def join(where: str, key: str) -> str:
    """The path of `key` inside the object at `where`."""
    return f"{where}.{key}" if where else key


def kind(value: Any) -> str:
    """A JSON type's name, as an error shows it."""
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list", dict: "an object"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def number(name: str, value: Any, low: float = -math.inf, high: float = math.inf, low_open: bool = False) -> float:
    """A finite number in [low, high] (or (low, high]); `name` is the field's path."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise FieldError(f"{name}: expected a number, got {kind(value)} {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise FieldError(f"{name}: {value} is not a finite number")
    if value < low or value > high or (low_open and value == low):
        raise FieldError(f"{name}: {value:g} is outside {'(' if low_open else '['}{low:g}, {high:g}]")
    return value


class Fields:
    """One JSON object whose fields are read with their types checked.

    A field with a default may be absent; one whose default is None may also be null.
    """

    def __init__(self, data: Any, where: str = "") -> None:
        if not isinstance(data, dict):
            raise FieldError(f"{where or 'the document'}: expected an object, got {kind(data)}")
        self.data, self.where = data, where

    def name(self, key: str) -> str:
        return join(self.where, key)

    def _get(self, key: str, default: Any) -> tuple[bool, Any]:
        """(present, value); raises for a required field that is absent."""
        if key not in self.data or (self.data[key] is None and default is None):
            if default is REQUIRED:
                raise FieldError(f"{self.name(key)}: missing")
            return False, default
        return True, self.data[key]

    def _typed(self, key: str, types: tuple, label: str, default: Any) -> Any:
        present, value = self._get(key, default)
        if present and type(value) not in types:  # exact: a boolean is no integer here
            raise FieldError(f"{self.name(key)}: expected {label}, got {kind(value)} {value!r}")
        return value

    def number(self, key: str, low: float = -math.inf, high: float = math.inf, low_open: bool = False,
               default: Any = REQUIRED) -> float | None:
        present, value = self._get(key, default)
        return number(self.name(key), value, low, high, low_open) if present else value

    def integer(self, key: str, low: int = 0, high: int | None = None, default: Any = REQUIRED) -> int | None:
        value = self._typed(key, (int,), "an integer", default)
        if isinstance(value, int) and (value < low or (high is not None and value > high)):
            raise FieldError(f"{self.name(key)}: {value} is outside [{low}, {'…' if high is None else high}]")
        return value

    def text(self, key: str, default: Any = REQUIRED, choices: tuple[str, ...] | None = None) -> str | None:
        value = self._typed(key, (str,), "a string", default)
        if choices is not None and isinstance(value, str) and value not in choices:
            raise FieldError(f"{self.name(key)}: {value!r} is not one of {', '.join(choices)}")
        return value

    def flag(self, key: str, default: Any = REQUIRED) -> bool | None:
        return self._typed(key, (bool,), "true or false", default)

    def texts(self, key: str, default: Any = REQUIRED) -> tuple[str, ...] | None:
        values = self._typed(key, (list,), "a list of strings", default)
        if not isinstance(values, list):
            return values
        for index, value in enumerate(values):
            if not isinstance(value, str):
                raise FieldError(f"{self.name(key)}[{index}]: expected a string, got {kind(value)} {value!r}")
        return tuple(values)

    def object(self, key: str, default: Any = REQUIRED) -> Fields | None:
        present, value = self._get(key, default)
        return Fields(value, self.name(key)) if present else value

    def numbers(self, key: str, low: float = -math.inf, high: float = math.inf, default: Any = REQUIRED) -> dict | None:
        """An object of name -> finite number in [low, high], the values as written (an integer stays one)."""
        fields = self.object(key, default)
        if not isinstance(fields, Fields):
            return fields
        for name, value in fields.data.items():
            number(fields.name(name), value, low, high)
        return dict(fields.data)

    def scalars(self, key: str, default: Any = REQUIRED) -> dict | None:
        """An object of name -> string, number, boolean or null (a free-form record)."""
        fields = self.object(key, default)
        if not isinstance(fields, Fields):
            return fields
        for name, value in fields.data.items():
            if value is not None and not isinstance(value, (str, int, float, bool)):
                raise FieldError(f"{fields.name(name)}: expected a string, number or boolean, got {kind(value)}")
        return dict(fields.data)

    def only(self, *keys: str) -> None:
        """Refuse fields other than `keys` (a misspelt field would otherwise be ignored)."""
        unknown = sorted(set(self.data) - set(keys))
        if unknown:
            raise FieldError(f"{self.name(unknown[0])}: unknown field (known: {', '.join(keys)})")
