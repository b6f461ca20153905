"""The defaults both sides agree on, written once: audio format, windows, decision parameters.

Each is recorded in a training run and in the bundle; the edge reads them back from the bundle.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from edge.core.fields import FieldError, Fields, join, number
from edge.core.labels import SEED, Appliances

SAMPLE_RATE = 16_000
MAX_WINDOW_SEC = 60.0  # window and hop; BEATs was trained on 10-s clips
MAX_SPAN_SEC = 3600.0  # the running median and the debounce


@dataclasses.dataclass(frozen=True)
class WindowConfig:
    """Analysis windows: length and hop in seconds at SAMPLE_RATE."""

    window_sec: float = 6.0
    hop_sec: float = 1.5
    sample_rate: int = SAMPLE_RATE

    def __post_init__(self) -> None:
        number("window_sec", self.window_sec, 0, MAX_WINDOW_SEC, low_open=True)
        number("hop_sec", self.hop_sec, 0, MAX_WINDOW_SEC, low_open=True)
        if self.sample_rate != SAMPLE_RATE:
            raise FieldError(f"sample_rate: {self.sample_rate} Hz, but humwatch's models hear {SAMPLE_RATE} Hz")
        for name in ("window_sec", "hop_sec"):
            if round(getattr(self, name) * self.sample_rate) < 1:
                raise FieldError(f"{name}: {getattr(self, name):g} s is shorter than one sample")

    @property
    def window_samples(self) -> int:
        return round(self.window_sec * self.sample_rate)

    @property
    def hop_samples(self) -> int:
        return round(self.hop_sec * self.sample_rate)

    def to_dict(self) -> dict:
        return {
            "sample_rate": self.sample_rate,
            "window_sec": self.window_sec,
            "hop_sec": self.hop_sec,
            "window_samples": self.window_samples,
            "hop_samples": self.hop_samples,
        }

    @classmethod
    def from_dict(cls, data: dict, where: str = "") -> WindowConfig:
        """The fields of :meth:`to_dict` (the sample counts, when there, must agree); errors name the field."""
        fields = Fields(data, where)
        fields.only(*cls().to_dict())
        values = fields.number("window_sec"), fields.number("hop_sec"), fields.integer("sample_rate")
        try:
            window = cls(*values)
        except FieldError as error:
            raise FieldError(join(where, str(error))) from error
        for key in ("window_samples", "hop_samples"):
            if fields.integer(key, default=getattr(window, key)) != getattr(window, key):
                raise FieldError(f"{fields.name(key)}: {data[key]}, but the seconds and the rate give {getattr(window, key)}")
        return window


@dataclasses.dataclass(frozen=True)
class Levels:
    """One appliance's probability levels: the file threshold, and the stream's hysteresis (on at `on`,
    off below `off`)."""

    threshold: float
    on: float
    off: float


SEED_LEVELS = {"ac": Levels(0.75, 0.80, 0.60), "fridge": Levels(0.70, 0.75, 0.55)}
NEW_APPLIANCE_LEVELS = Levels(0.70, 0.75, 0.55)  # an appliance's start before its threshold search


def level_keys(appliance: str) -> dict[str, str]:
    """The flat keys of an appliance's levels in bundle.json, runs and overrides: t_ac, ac_on, ac_off."""
    return {"threshold": f"t_{appliance}", "on": f"{appliance}_on", "off": f"{appliance}_off"}


@dataclasses.dataclass(frozen=True)
class DecisionConfig:
    """Per appliance a file threshold and the streaming hysteresis; the running-median span and the
    debounce, in seconds; the appliances and their priority (the summary state's rule).

    The spans are durations so that a monitor may hop at another rate than training did: at a hop
    of h seconds the median covers round(median_sec / h) windows and a change needs
    round(debounce_sec / h) identical updates (at the 1.5 s default: 7 windows and 2 updates).
    Written flat (:meth:`to_dict`): t_<name> for every appliance, then <name>_on, <name>_off for each,
    then the spans; for the seed t_ac, t_fridge, ac_on, ac_off, fridge_on, fridge_off, median_sec,
    debounce_sec.
    """

    appliances: Appliances = SEED
    levels: Mapping[str, Levels] = dataclasses.field(default_factory=dict)  # missing ones: the defaults
    median_sec: float = 10.5
    debounce_sec: float = 3.0

    def __post_init__(self) -> None:
        """Errors are FieldErrors (ValueErrors) that start with the flat key's name."""
        unknown = set(self.levels) - set(self.appliances.names)
        if unknown:
            raise FieldError(f"levels for {', '.join(sorted(unknown))}: not among the appliances "
                             f"{', '.join(self.appliances.names)}")
        levels = {name: self.levels.get(name) or SEED_LEVELS.get(name, NEW_APPLIANCE_LEVELS)
                  for name in self.appliances.names}
        object.__setattr__(self, "levels", levels)
        for name, level in levels.items():
            keys = level_keys(name)
            for attribute, key in keys.items():
                number(key, getattr(level, attribute), 0.0, 1.0)
            if level.off > level.on:
                raise FieldError(f"{keys['off']}: {level.off:g} is above {keys['on']} {level.on:g}; "
                                 "a hysteresis 'off' threshold must not exceed its 'on' threshold")
        for name in ("median_sec", "debounce_sec"):
            number(name, getattr(self, name), 0.0, MAX_SPAN_SEC, low_open=True)

    def median_windows(self, hop_sec: float) -> int:
        """Windows in the running median at this hop (at least 1)."""
        return max(1, round(self.median_sec / hop_sec))

    def debounce_updates(self, hop_sec: float) -> int:
        """Identical updates a change needs at this hop (at least 1)."""
        return max(1, round(self.debounce_sec / hop_sec))

    def _flat_keys(self) -> dict[str, tuple[str, str]]:
        """{flat key: (appliance, Levels attribute)} in the written order: t_NAME for every appliance,
        then NAME_on, NAME_off for each."""
        names = self.appliances.names
        thresholds = {level_keys(name)["threshold"]: (name, "threshold") for name in names}
        return {**thresholds, **{level_keys(name)[side]: (name, side) for name in names for side in ("on", "off")}}

    def to_dict(self) -> dict:
        """The flat keys (the appliances themselves are written beside, as bundle.json's labels)."""
        levels = {key: getattr(self.levels[name], side) for key, (name, side) in self._flat_keys().items()}
        return {**levels, "median_sec": self.median_sec, "debounce_sec": self.debounce_sec}

    @classmethod
    def from_dict(cls, data: dict, where: str = "", appliances: Appliances = SEED) -> DecisionConfig:
        """The flat keys of :meth:`to_dict` for these appliances (other keys are ignored); errors name the key."""
        fields = Fields(data, where)
        values = {key: fields.number(key) for key in cls(appliances).to_dict()}
        try:
            return cls(appliances).replace(**values)
        except FieldError as error:
            raise FieldError(join(where, str(error))) from error

    def replace(self, **overrides: float | None) -> DecisionConfig:
        """A copy with the given flat keys changed (t_ac=0.6, fridge_on=0.8, median_sec=9); None values
        are ignored; a key of no appliance here is a FieldError that names it."""
        overrides = {key: value for key, value in overrides.items() if value is not None}
        levels = {name: dataclasses.asdict(level) for name, level in self.levels.items()}
        spans, owners = {}, self._flat_keys()
        for key, value in overrides.items():
            if key in owners:
                name, side = owners[key]
                levels[name][side] = value
            elif key in ("median_sec", "debounce_sec"):
                spans[key] = value
            else:
                raise FieldError(f"{key}: not a decision setting of these appliances "
                                 f"({', '.join(self.appliances.names)}); "
                                 f"use t_NAME, NAME_on, NAME_off, median_sec or debounce_sec")
        return dataclasses.replace(self, levels={name: Levels(**level) for name, level in levels.items()}, **spans)
