"""From window probabilities to a state: the decision logic, in one place, pure numpy.

Files: median over all windows, thresholds t_ac / t_fridge, the priority rule.
Streams: median over the last N windows -> per-label hysteresis -> priority rule -> debounce
(a new state is reported only after K identical updates in a row); N and K follow from the
configured durations and the hop.
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


@dataclasses.dataclass(frozen=True)
class StreamUpdate:
    """One hop's decision, as reported in a stream / live line."""

    status: str
    debounced_status: str
    changed: bool
    median_ac: float
    median_fridge: float
    ac_on: bool  # the per-label detectors after hysteresis, before the priority rule
    fridge_on: bool


class StreamDecider:
    """Stateful decision over a stream of window probabilities."""

    def __init__(self, config: DecisionConfig, hop_sec: float) -> None:
        self.config = config
        self.debounce_k = config.debounce_updates(hop_sec)
        self._recent = collections.deque(maxlen=config.median_windows(hop_sec))
        self._ac = Hysteresis(config.ac_on, config.ac_off)
        self._fridge = Hysteresis(config.fridge_on, config.fridge_off)
        self.debounced_status: str | None = None
        self._candidate: str | None = None
        self._candidate_count = 0

    def update(self, p_ac: float, p_fridge: float) -> StreamUpdate:
        self._recent.append((p_ac, p_fridge))
        median_ac, median_fridge = (float(v) for v in np.median(np.asarray(self._recent), axis=0))
        ac_on, fridge_on = self._ac.update(median_ac), self._fridge.update(median_fridge)
        status = state_of(ac_on, fridge_on)
        changed = self._debounce(status)
        return StreamUpdate(status, self.debounced_status, changed, median_ac, median_fridge, ac_on, fridge_on)

    def _debounce(self, status: str) -> bool:
        """Track K identical statuses in a row; the first status is taken as it comes."""
        if self.debounced_status is None:
            self.debounced_status = status
            return True
        if status == self.debounced_status:
            self._candidate, self._candidate_count = None, 0
            return False
        if status == self._candidate:
            self._candidate_count += 1
        else:
            self._candidate, self._candidate_count = status, 1
        if self._candidate_count >= self.debounce_k:
            self.debounced_status = status
            self._candidate, self._candidate_count = None, 0
            return True
        return False
