"""From window probabilities to a state: the decision logic, in one place, pure numpy.

Files: median over all windows, thresholds t_ac / t_fridge, the priority rule.
Streams: median over the last N windows -> per-label hysteresis -> per-label debounce (a detector
changes only after K identical updates in a row) -> priority rule; N and K follow from the
configured durations and the hop. The reported state and the per-appliance "running" flags come
from the same debounced detectors, so they always agree.
"""

from __future__ import annotations

import collections
import dataclasses

import numpy as np

from edge.core.defaults import DecisionConfig
from edge.core.labels import state_of


@dataclasses.dataclass(frozen=True)
class FileDecision:
    p_ac: float
    p_fridge: float
    status: str


def decide_file(probs: np.ndarray, config: DecisionConfig) -> FileDecision:
    """probs [n_windows, 2] (ac, fridge) -> the file's median probabilities and state."""
    if len(probs) == 0:
        raise ValueError("no windows to decide on")
    p_ac, p_fridge = (float(value) for value in np.median(probs, axis=0))
    return FileDecision(p_ac, p_fridge, state_of(p_ac >= config.t_ac, p_fridge >= config.t_fridge))


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
    median_ac: float
    median_fridge: float
    ac_on: bool  # the per-label detectors after hysteresis, before debouncing
    fridge_on: bool
    ac_running: bool  # the same, debounced: debounced_status follows from these two
    fridge_running: bool


class StreamDecider:
    """Stateful decision over a stream of window probabilities."""

    def __init__(self, config: DecisionConfig, hop_sec: float) -> None:
        self.config = config
        self._recent: collections.deque = collections.deque()
        self._ac = Hysteresis(config.ac_on, config.ac_off)
        self._fridge = Hysteresis(config.fridge_on, config.fridge_off)
        self._ac_running, self._fridge_running = Debounce(1), Debounce(1)
        self.debounced_status: str | None = None
        self.retime(hop_sec)

    def retime(self, hop_sec: float) -> None:
        """A new hop: the same durations now span another number of windows and updates."""
        self._recent = collections.deque(self._recent, maxlen=self.config.median_windows(hop_sec))
        self._ac_running.k = self._fridge_running.k = self.config.debounce_updates(hop_sec)

    def update(self, p_ac: float, p_fridge: float) -> StreamUpdate:
        self._recent.append((p_ac, p_fridge))
        median_ac, median_fridge = (float(v) for v in np.median(np.asarray(self._recent), axis=0))
        ac_on, fridge_on = self._ac.update(median_ac), self._fridge.update(median_fridge)
        ac_running, fridge_running = self._ac_running.update(ac_on), self._fridge_running.update(fridge_on)
        debounced = state_of(ac_running, fridge_running)
        changed, self.debounced_status = debounced != self.debounced_status, debounced
        return StreamUpdate(state_of(ac_on, fridge_on), debounced, changed, median_ac, median_fridge, ac_on, fridge_on,
                            ac_running, fridge_running)
