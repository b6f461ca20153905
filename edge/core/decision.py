"""From window probabilities to a state: the decision logic, in one place, pure numpy.

Files: median over all windows, a threshold per appliance, the priority rule.
Streams: median over the last N windows -> per-appliance hysteresis -> per-appliance debounce (a
detector changes only after K identical updates in a row) -> priority rule; N and K follow from the
configured durations and the hop. The reported state and the per-appliance "running" flags come
from the same debounced detectors, so they always agree.

Probabilities are arrays in the order of the appliances' names (the model's outputs); the results
keep per-appliance values in dicts and write them flat (p_ac, ac_on, ...) with :func:`per_appliance`.
"""

from __future__ import annotations

import collections
import dataclasses

import numpy as np

from edge.core.defaults import DecisionConfig


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
