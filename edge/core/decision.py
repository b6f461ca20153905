"""From window probabilities to a state: the decision logic, in one place, pure numpy.

Files: median over all windows, a threshold per appliance, the priority rule.
Streams: median over the last N windows -> per-appliance hysteresis -> per-appliance debounce (a
detector changes only after K identical updates in a row) -> priority rule; N and K follow from the
configured durations and the hop. The reported state and the per-appliance "running" flags come
from the same debounced detectors, so they always agree.

Probabilities are arrays in the order of the appliances' names (the model's outputs); the results
keep per-appliance values in dicts and write them flat (p_ac, ac_on, ...) with :func:`per_appliance`.
The settings that decide (:class:`DecisionConfig`: each appliance's :class:`Levels`, the spans)
live here too, recorded in each run and bundle and read back from them.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Mapping

import numpy as np

from edge.core.fields import FieldError, Fields, join, number
from edge.core.labels import SEED, Appliances

MAX_SPAN_SEC = 3600.0  # the running median and the debounce


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


def per_appliance(pattern: str, values: dict) -> dict:
    """{'ac': 0.9, ...} -> {'p_ac': 0.9, ...} for the pattern 'p_{}' (one home for the flat field names)."""
    return {pattern.format(name): value for name, value in values.items()}


@dataclasses.dataclass(frozen=True)
class FileDecision:
    probabilities: dict[str, float]  # the median of each appliance's window probabilities
    status: str

    def fields(self) -> dict:
        """The batch line's fields: status, then p_<name> for each appliance."""
        return {"status": self.status, **per_appliance("p_{}", self.probabilities)}


def decide_file(probs: np.ndarray, config: DecisionConfig) -> FileDecision:
    """probs [n_windows, n_appliances] -> the file's median probabilities and state."""
    if len(probs) == 0:
        raise ValueError("no windows to decide on")
    names = config.appliances.names
    medians = {name: float(value) for name, value in zip(names, np.median(probs, axis=0))}
    running = {name: medians[name] >= config.levels[name].threshold for name in names}
    return FileDecision(medians, config.appliances.status(running))
class Hysteresis:
    """A binary detector that turns on at `on` and off only below `off`."""

    def __init__(self, on: float, off: float) -> None:
        self.on, self.off, self.active = on, off, False

    def update(self, value: float) -> bool:
        if self.active and value < self.off:
            self.active = False
        elif not self.active and value >= self.on:
            self.active = True
        return self.active


class Debounce:
    """A boolean that takes its first value as it comes and later changes only after K identical,
    different values in a row."""

    def __init__(self, k: int) -> None:
        self.k, self.value, self._run = k, None, 0

    def update(self, value: bool) -> bool:
        if self.value is None:
            self.value = value
        elif value == self.value:
            self._run = 0
        else:
            self._run += 1
            if self._run >= self.k:
                self.value, self._run = value, 0
        return self.value


@dataclasses.dataclass(frozen=True)
class StreamUpdate:
    """One hop's decision, as reported in a stream / live line."""

    status: str  # from the detectors of this hop
    debounced_status: str  # from the debounced detectors: what is reported and published
    changed: bool  # the debounced status changed (always True on the first hop)
    medians: dict[str, float]  # per appliance: the running median
    on: dict[str, bool]  # the detectors after hysteresis, before debouncing
    running: dict[str, bool]  # the same, debounced: debounced_status follows from these

    def fields(self) -> dict:
        """The line's fields in their order: status, debounced_status, changed, median_<name> for each
        appliance, then <name>_on, then <name>_running (the seed: median_ac, median_fridge, ac_on, ...)."""
        return {"status": self.status, "debounced_status": self.debounced_status, "changed": self.changed,
                **per_appliance("median_{}", self.medians), **per_appliance("{}_on", self.on),
                **per_appliance("{}_running", self.running)}


class StreamDecider:
    """Stateful decision over a stream of window probabilities."""

    def __init__(self, config: DecisionConfig, hop_sec: float) -> None:
        self.config = config
        self._recent: collections.deque = collections.deque()
        self._detectors = {name: Hysteresis(level.on, level.off) for name, level in config.levels.items()}
        self._debounced = {name: Debounce(1) for name in config.levels}
        self.debounced_status: str | None = None
        self.retime(hop_sec)

    def retime(self, hop_sec: float) -> None:
        """A new hop: the same durations now span another number of windows and updates."""
        self._recent = collections.deque(self._recent, maxlen=self.config.median_windows(hop_sec))
        for debounce in self._debounced.values():
            debounce.k = self.config.debounce_updates(hop_sec)

    def update(self, probs) -> StreamUpdate:
        """One window's probabilities, in the order of the appliances' names."""
        self._recent.append(np.asarray(probs, dtype=float))
        names, appliances = self.config.appliances.names, self.config.appliances
        medians = {name: float(v) for name, v in zip(names, np.median(np.asarray(self._recent), axis=0))}
        on = {name: self._detectors[name].update(medians[name]) for name in names}
        running = {name: self._debounced[name].update(on[name]) for name in names}
        debounced = appliances.status(running)
        changed, self.debounced_status = debounced != self.debounced_status, debounced
        return StreamUpdate(appliances.status(on), debounced, changed, medians, on, running)
