"""Sample names carry the labels; one rule turns the two labels into the three states."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

AC_ON, FRIDGE_ON, BOTH_OFF = "ac-on", "fridge-on", "both-off"
STATES = (AC_ON, FRIDGE_ON, BOTH_OFF)
DAYPARTS = ("day", "night")
AUDIO_SUFFIXES = (".m4a", ".aac", ".mp3", ".wav", ".flac", ".ogg")
NAME_PATTERN = "ac-(on|off)-fridge-(on|off)-(day|night)[-TAG]"
TAG_RULE = "a TAG may hold letters (accented ones too), digits, '-', '_' and '.'"
_NAME = re.compile(r"ac-(on|off)-fridge-(on|off)-(day|night)(?:-([\w.-]+))?")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")  # a newline, a tab, ...: never in a good name


def state_of(ac_on: bool, fridge_on: bool) -> str:
    """The priority rule: the AC wins, then the fridge, else both off."""
    if ac_on:
        return AC_ON
    return FRIDGE_ON if fridge_on else BOTH_OFF


@dataclasses.dataclass(frozen=True)
class SampleName:
    """What a sample's file name says about it."""

    ac: bool
    fridge: bool
    daypart: str
    tag: str | None

    @property
    def state(self) -> str:
        return state_of(self.ac, self.fridge)


def is_audio(path: Path) -> bool:
    """An audio suffix, also one that control characters follow (``x.wav\\n``): a name to refuse, not to skip."""
    return _CONTROL.sub("", path.suffix).lower() in AUDIO_SUFFIXES


def shown_name(path: str | Path) -> str:
    """`path` for a message: control characters written as escapes (a newline as ``\\n``)."""
    return _CONTROL.sub(lambda match: repr(match.group())[1:-1], str(path))


def control_characters_error(path: str | Path) -> str | None:
    """The refusal of a file name that holds control characters (a trailing newline, a tab ...), or None."""
    if _CONTROL.search(Path(path).name) is None:
        return None
    return f"{shown_name(path)}: the file name holds control characters (shown escaped); rename the file without them"


def parse_sample_name(path: str | Path) -> SampleName | None:
    """The labels in a file name such as ``ac-off-fridge-on-night-2.m4a``, or None (also for any control
    character in the name, a newline after the suffix too)."""
    match = _NAME.fullmatch(Path(path).stem)
    if match is None or _CONTROL.search(Path(path).name):
        return None
    ac, fridge, daypart, tag = match.groups()
    return SampleName(ac == "on", fridge == "on", daypart, tag)


def sample_file_name(ac: bool, fridge: bool, daypart: str, tag: str | None = None, suffix: str = ".m4a") -> str:
    """The file name that :func:`parse_sample_name` reads back as these labels."""
    name = f"ac-{'on' if ac else 'off'}-fridge-{'on' if fridge else 'off'}-{daypart}"
    return f"{name}-{tag}{suffix}" if tag else f"{name}{suffix}"
