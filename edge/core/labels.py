"""Sample names carry the labels; one rule turns the appliances' running flags into one summary state.

A recording is named by ``<appliance>-(on|off)`` pairs, then the daypart, then an optional tag:
``ac-on-fridge-off-day.m4a``, ``ac-off-fridge-on-dehumidifier-on-night-take-2.flac``. The appliances
of a project are those its recordings name; a recording that does not name one says nothing about it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

SEED_APPLIANCES = ("ac", "fridge")
AC_ON, FRIDGE_ON, BOTH_OFF = "ac-on", "fridge-on", "both-off"  # the seed's statuses
DAYPARTS = ("day", "night")
# the name grammar's and the statuses' words, the MQTT stats' "alarms" entry beside the appliances, and the
# page's relabel and record bodies' own fields beside one per appliance
RESERVED_NAMES = (*DAYPARTS, "daypart", "on", "off", "both", "all", "alarms", "clip", "seconds")
AUDIO_SUFFIXES = (".m4a", ".aac", ".mp3", ".wav", ".flac", ".ogg")
NAME_PATTERN = "<appliance>-(on|off)[-<appliance>-(on|off)...]-(day|night)[-TAG]"
APPLIANCE_RULE = ("an appliance name holds lowercase letters, digits and '_' and is none of "
                  + ", ".join(RESERVED_NAMES))
TAG_RULE = "a TAG may hold letters (accented ones too), digits, '-', '_' and '.'"
_APPLIANCE = re.compile(r"[a-z0-9_]+")
_TAG = re.compile(r"[\w.-]+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")  # a newline, a tab, ...: never in a good name


class LabelError(ValueError):
    """An appliance name, a label set or a sample name that breaks the naming rule; the message says which."""


def check_appliance(name: str) -> str:
    """`name` when it is a usable appliance name, else a LabelError that gives the rule."""
    if not isinstance(name, str) or not _APPLIANCE.fullmatch(name) or name in RESERVED_NAMES:
        raise LabelError(f"{name!r} is not an appliance name: {APPLIANCE_RULE}")
    return name


@dataclasses.dataclass(frozen=True)
class Appliances:
    """The appliances a model hears, in the order of its outputs, and the priority order of the summary
    state: the first running appliance in priority order gives ``<name>-on``; none running gives
    ``both-off`` for two appliances, ``all-off`` for more, ``<name>-off`` for one. The default is the
    seed: the AC, then the fridge (``ac-on`` | ``fridge-on`` | ``both-off``)."""

    names: tuple[str, ...] = SEED_APPLIANCES
    priority: tuple[str, ...] = ()  # those first, then the others in the order of `names`

    def __post_init__(self) -> None:
        names, first = tuple(self.names), tuple(self.priority)
        if not names:
            raise LabelError("no appliances: name at least one, e.g. ac-on-day.m4a")
        for name in names:
            check_appliance(name)
        if len(set(names)) != len(names):
            raise LabelError(f"appliances {', '.join(names)}: each may appear once")
        unknown = [name for name in first if name not in names]
        if unknown or len(set(first)) != len(first):
            raise LabelError(f"priority {','.join(first)}: name each appliance at most once, among "
                             f"{', '.join(names)}" + (f" ({', '.join(unknown)} is not one)" if unknown else ""))
        object.__setattr__(self, "names", names)
        object.__setattr__(self, "priority", first + tuple(name for name in names if name not in first))

    @classmethod
    def parse(cls, names: str | Iterable[str], priority: str | Iterable[str] = ()) -> Appliances:
        """From comma-separated text (``ac,fridge,dehumidifier``) or sequences."""
        split = (lambda value: [part.strip() for part in value.split(",") if part.strip()]
                 if isinstance(value, str) else list(value))
        return cls(tuple(split(names)), tuple(split(priority)))

    @property
    def off_status(self) -> str:
        if len(self.names) == 1:
            return f"{self.names[0]}-off"
        return BOTH_OFF if len(self.names) == 2 else "all-off"

    @property
    def statuses(self) -> tuple[str, ...]:
        """Every summary state, in priority order, the 'off' one last."""
        return (*(f"{name}-on" for name in self.priority), self.off_status)

    def status(self, running: Mapping[str, bool | None]) -> str | None:
        """The summary state of these running flags; None when an appliance whose flag is unknown (None
        or missing) could decide it, i.e. comes before the first running one in priority order."""
        for name in self.priority:
            flag = running.get(name)
            if flag is None:
                return None
            if flag:
                return f"{name}-on"
        return self.off_status

    def to_dict(self) -> dict:
        return {"labels": list(self.names), "priority": list(self.priority)}


SEED = Appliances()


@dataclasses.dataclass(frozen=True)
class SampleName:
    """What a sample's file name says: the named appliances' states (in the name's order), daypart, tag."""

    labels: dict[str, bool]
    daypart: str
    tag: str | None


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


def read_sample_name(path: str | Path) -> SampleName:
    """The labels in a file name such as ``ac-off-fridge-on-night-2.m4a``; a LabelError says what is wrong."""
    if _CONTROL.search(Path(path).name):
        raise LabelError("the name holds control characters")
    tokens = Path(path).stem.split("-")
    labels: dict[str, bool] = {}
    index = 0
    while index + 1 < len(tokens) and tokens[index + 1] in ("on", "off") and tokens[index] not in DAYPARTS:
        name = check_appliance(tokens[index])
        if name in labels:
            raise LabelError(f"it names {name} twice")
        labels[name] = tokens[index + 1] == "on"
        index += 2
    if not labels:
        raise LabelError("it does not start with an <appliance>-(on|off) pair")
    if index >= len(tokens) or tokens[index] not in DAYPARTS:
        found = repr("-".join(tokens[index:])) if index < len(tokens) else "nothing"
        raise LabelError(f"'day' or 'night' must follow the last (on|off), not {found}")
    tag = "-".join(tokens[index + 1:])
    if index + 1 < len(tokens) and not _TAG.fullmatch(tag):
        raise LabelError(f"the tag {tag!r} breaks the rule: {TAG_RULE}")
    return SampleName(labels, tokens[index], tag or None)


def parse_sample_name(path: str | Path) -> SampleName | None:
    """:func:`read_sample_name`, or None for a name that breaks the rule."""
    try:
        return read_sample_name(path)
    except LabelError:
        return None


def sample_file_name(labels: Mapping[str, bool], daypart: str, tag: str | None = None, suffix: str = ".m4a") -> str:
    """The file name that :func:`parse_sample_name` reads back as these labels (in this order)."""
    name = "-".join(f"{check_appliance(appliance)}-{'on' if on else 'off'}" for appliance, on in labels.items())
    name = f"{name}-{daypart}"
    return f"{name}-{tag}{suffix}" if tag else f"{name}{suffix}"


HOME_TAGS = ("rec-", "clip-")  # the tags of samples made on the Pi: recorded from the page, relabelled clips
JUDGING_SHARE = 4  # one in this many of them is kept out of training, for 'humwatch judge'


def kept_for_judging(sample: SampleName) -> bool:
    """Whether a sample is one of the home's held-out clips: made on the Pi (a recording or a
    relabelled clip) and its tag's sha256 falls in one JUDGING_SHARE-th. Decided by the name alone,
    so a file held out once is held out in every retrain (no bundle was trained on it); the Pi picks
    a recording's tag so that one in JUDGING_SHARE of its recordings is held out, the first one too."""
    tag = sample.tag or ""
    return tag.startswith(HOME_TAGS) and int(hashlib.sha256(tag.encode()).hexdigest()[:8], 16) % JUDGING_SHARE == 0


def project_appliances(samples: Iterable[SampleName], priority: str | Iterable[str] = ()) -> Appliances:
    """The appliances these recordings name, in order of first appearance (the default priority)."""
    names: dict[str, None] = {}
    for sample in samples:
        names.update(dict.fromkeys(sample.labels))
    return Appliances.parse(tuple(names), priority)
