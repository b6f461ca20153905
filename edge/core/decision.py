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
from collections.abc import Mapping, Sequence

import numpy as np

from edge.core.fields import FieldError, Fields, join, number
from edge.core.labels import SEED, Appliances

MAX_SPAN_SEC = 3600.0  # the running median and the debounce


LEVEL_SIDES = ("threshold", "on", "off")


@dataclasses.dataclass(frozen=True)
class Levels:
    """One appliance's probability levels: the file threshold, and the stream's hysteresis (on at `on`,
    off below `off`)."""

    threshold: float
    on: float
    off: float

    def to_dict(self) -> dict[str, float]:
        return {side: getattr(self, side) for side in LEVEL_SIDES}


SEED_LEVELS = {"ac": Levels(0.75, 0.80, 0.60), "fridge": Levels(0.70, 0.75, 0.55)}
NEW_APPLIANCE_LEVELS = Levels(0.70, 0.75, 0.55)  # an appliance's start before its threshold search


def level_name(appliance: str, side: str) -> str:
    """How a level is named in messages, options and files: 'fridge.on', 'ac.threshold'."""
    return f"{appliance}.{side}"


def flat_key(appliance: str, side: str) -> str:
    """The key a level had in files written before levels were keyed by appliance: t_ac, ac_on, ac_off."""
    return f"t_{appliance}" if side == "threshold" else f"{appliance}_{side}"


def flat_levels(data: Mapping[str, object], appliances: Sequence[str], where: str = "") -> dict[str, dict[str, object]]:
    """The levels among the flat keys of an earlier file (t_ac, ac_on, ...): appliance -> {side: value}.
    A key that two appliances both claim (appliances named ac_on and t_ac: t_ac_on) is a FieldError."""
    owners: dict[str, list[tuple[str, str]]] = {}
    for appliance in appliances:
        for side in LEVEL_SIDES:
            owners.setdefault(flat_key(appliance, side), []).append((appliance, side))
    levels: dict[str, dict[str, object]] = {}
    for key, value in data.items():
        claims = owners.get(key, [])
        if len(claims) > 1:
            both = " and ".join(level_name(*claim) for claim in claims)
            raise FieldError(join(where, f"{key}: the flat key of both {both}; write them keyed by appliance: "
                                         f"levels = {{{claims[0][0]} = {{{claims[0][1]} = ...}}, ...}}"))
        if claims:
            appliance, side = claims[0]
            levels.setdefault(appliance, {})[side] = value
    return levels


@dataclasses.dataclass(frozen=True)
class DecisionOverrides:
    """What a user changes of a bundle's decision settings: some levels of some appliances
    (appliance -> {side: p}) and the spans; None leaves the bundle's."""

    levels: Mapping[str, Mapping[str, float]] = dataclasses.field(default_factory=dict)
    median_sec: float | None = None
    debounce_sec: float | None = None

    def apply(self, config: DecisionConfig) -> DecisionConfig:
        return config.replace(levels=self.levels, median_sec=self.median_sec, debounce_sec=self.debounce_sec)

    @classmethod
    def of(cls, keywords: Mapping[str, object], appliances: Sequence[str]) -> DecisionOverrides:
        """From keyword arguments (levels={"fridge": {"on": 0.8}}, median_sec=6, debounce_sec=3);
        any other is a FieldError naming it, and an earlier release's flat key (t_ac=0.6) its new spelling."""
        for key in keywords:
            if key not in ("levels", "median_sec", "debounce_sec"):
                claims = [(name, side) for name in appliances for side in LEVEL_SIDES if flat_key(name, side) == key]
                fix = (f"write levels={{{claims[0][0]!r}: {{{claims[0][1]!r}: ...}}}}" if claims else
                       "use levels={APPLIANCE: {threshold|on|off: P}}, median_sec or debounce_sec")
                raise FieldError(f"{key}: not a decision setting of these appliances ({', '.join(appliances)}); {fix}")
        return cls(**keywords)


@dataclasses.dataclass(frozen=True)
class DecisionConfig:
    """Per appliance a file threshold and the streaming hysteresis (:class:`Levels`); the
    running-median span and the debounce, in seconds; the appliances and their priority (the
    summary state's rule).

    The spans are durations so that a monitor may hop at another rate than training did: at a hop
    of h seconds the median covers round(median_sec / h) windows and a change needs
    round(debounce_sec / h) identical updates (at the 1.5 s default: 7 windows and 2 updates).
    Written keyed by appliance (:meth:`to_dict`): {"levels": {"ac": {"threshold", "on", "off"}, ...},
    "median_sec", "debounce_sec"}; files written before hold flat keys (t_ac, ac_on, ...), which
    :meth:`from_dict` still reads.
    """

    appliances: Appliances = SEED
    levels: Mapping[str, Levels] = dataclasses.field(default_factory=dict)  # missing ones: the defaults
    median_sec: float = 10.5
    debounce_sec: float = 3.0

    def __post_init__(self) -> None:
        """Errors are FieldErrors (ValueErrors) that start with the level's name (fridge.on)."""
        unknown = set(self.levels) - set(self.appliances.names)
        if unknown:
            raise FieldError(f"levels for {', '.join(sorted(unknown))}: not among the appliances "
                             f"{', '.join(self.appliances.names)}")
        levels = {name: self.levels.get(name) or SEED_LEVELS.get(name, NEW_APPLIANCE_LEVELS)
                  for name in self.appliances.names}
        object.__setattr__(self, "levels", levels)
        for name, level in levels.items():
            for side in LEVEL_SIDES:
                number(level_name(name, side), getattr(level, side), 0.0, 1.0)
            if level.off > level.on:
                raise FieldError(f"{level_name(name, 'off')}: {level.off:g} is above {level_name(name, 'on')} "
                                 f"{level.on:g}; a hysteresis 'off' threshold must not exceed its 'on' threshold")
        for name in ("median_sec", "debounce_sec"):
            number(name, getattr(self, name), 0.0, MAX_SPAN_SEC, low_open=True)

    def median_windows(self, hop_sec: float) -> int:
        """Windows in the running median at this hop (at least 1)."""
        return max(1, round(self.median_sec / hop_sec))

    def debounce_updates(self, hop_sec: float) -> int:
        """Identical updates a change needs at this hop (at least 1)."""
        return max(1, round(self.debounce_sec / hop_sec))

    def to_dict(self) -> dict:
        """The levels keyed by appliance, then the spans (the appliances themselves are written
        beside, as bundle.json's labels)."""
        return {"levels": {name: level.to_dict() for name, level in self.levels.items()},
                "median_sec": self.median_sec, "debounce_sec": self.debounce_sec}

    @classmethod
    def from_dict(cls, data: dict, where: str = "", appliances: Appliances = SEED) -> DecisionConfig:
        """:meth:`to_dict`'s form for these appliances, or the flat keys files held before (t_ac,
        ac_on, ...; other keys are ignored); every appliance's three levels are needed. Errors name
        the field."""
        fields = Fields(data, where)
        if "levels" in data:
            table = fields.object("levels")
            table.only(*appliances.names)
            levels = {}
            for name in appliances.names:
                sides = table.object(name)
                sides.only(*LEVEL_SIDES)
                levels[name] = {side: sides.number(side, 0.0, 1.0) for side in LEVEL_SIDES}
        else:
            levels = flat_levels(data, appliances.names, where)
            for name in appliances.names:
                for side in LEVEL_SIDES:
                    fields.number(flat_key(name, side))  # missing or not a number: named as written
        spans = {name: fields.number(name) for name in ("median_sec", "debounce_sec")}
        try:
            return cls(appliances).replace(levels=levels, **spans)
        except FieldError as error:
            raise FieldError(join(where, str(error))) from error

    def replace(self, levels: Mapping[str, Mapping[str, float]] | None = None, median_sec: float | None = None,
                debounce_sec: float | None = None) -> DecisionConfig:
        """A copy with some levels (appliance -> {side: p}: {"fridge": {"on": 0.8}}) and spans
        changed; None leaves one as it is. An appliance or a side not here is a FieldError naming it."""
        merged = {name: level.to_dict() for name, level in self.levels.items()}
        for name, sides in (levels or {}).items():
            if name not in merged:
                raise FieldError(f"{name}: not an appliance of these levels ({', '.join(self.appliances.names)})")
            for side, value in sides.items():
                if side not in LEVEL_SIDES:
                    raise FieldError(f"{level_name(name, side)}: not a level; an appliance has "
                                     f"{', '.join(level_name(name, s) for s in LEVEL_SIDES)}")
                if value is not None:
                    merged[name][side] = value
        spans = {key: value for key, value in (("median_sec", median_sec), ("debounce_sec", debounce_sec))
                 if value is not None}
        return dataclasses.replace(self, levels={name: Levels(**level) for name, level in merged.items()}, **spans)


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
