"""How often to decide: a fixed hop, or the shortest hop whose inference fits a CPU budget.

The cost of a window is measured as process CPU time (every onnxruntime thread counted), first in a
short warm-up, then on every window as the monitor runs (a throttling Pi slows down). The budget is
a share of the whole machine: 0.5 on a 4-core Pi is two cores' worth. Hops come in steps of
HOP_STEP_SEC; the hop grows as soon as the cost needs it and shrinks only when the shorter hop
would still leave a margin, so it does not flap.
"""

from __future__ import annotations

import logging
import math
import os

from edge.core.proc import median_sec
from edge.core.window import MAX_WINDOW_SEC
from edge.engine.classifier import Classifier, noise_window

log = logging.getLogger("humwatch.pacing")
HOP_STEP_SEC = 0.5
MIN_HOP_SEC = 0.5
MIN_FIXED_HOP_SEC = 0.1  # --hop SECONDS (auto never goes below MIN_HOP_SEC)
WARMUP_WINDOWS = 3
RECHECK_EVERY = 20  # windows
SHRINK_MARGIN = 0.8  # a shorter hop is taken only if it would use at most 80 % of the budget
SMOOTHING = 0.1  # weight of the newest window in the running mean of CPU seconds


def cpu_seconds_per_window(classifier: Classifier, windows: int = WARMUP_WINDOWS) -> float:
    """The warm-up: median process CPU seconds of the test window (after one untimed run)."""
    window = noise_window(classifier.window_samples)[None]
    return median_sec(lambda: classifier.predict(window), windows, cpu=True)


def parse_hop(value: str) -> float | None:
    """'auto' -> None; else seconds from MIN_FIXED_HOP_SEC to MAX_WINDOW_SEC (nan and inf are neither)."""
    if value == "auto":
        return None
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not MIN_FIXED_HOP_SEC <= seconds <= MAX_WINDOW_SEC:
        raise ValueError(f"--hop {value!r}: expected seconds (e.g. 1.5) or 'auto'; a hop is {MIN_FIXED_HOP_SEC:g} "
                         f"to {MAX_WINDOW_SEC:g} s")
    return seconds


class HopPlanner:
    """The current hop and the CPU share it costs; with a budget it follows the measured cost."""

    def __init__(self, hop_sec: float | None, cpu_sec: float, budget: float | None = None,
                 cores: int | None = None) -> None:
        self.cores = cores or os.cpu_count() or 1
        self.budget = budget
        self.cpu_sec = cpu_sec
        self._since_check = 0
        self.hop_sec = hop_sec if hop_sec is not None else self.fitting_hop(cpu_sec)

    @property
    def auto(self) -> bool:
        return self.budget is not None

    @property
    def cpu_share(self) -> float:
        """Share of the whole machine the monitor's inference uses at this hop."""
        return self.cpu_sec / (self.hop_sec * self.cores)

    def fitting_hop(self, cpu_sec: float) -> float:
        """The shortest hop (in HOP_STEP_SEC steps) at which cpu_sec per window stays within the budget."""
        needed = cpu_sec / (self.budget * self.cores)
        return max(MIN_HOP_SEC, math.ceil(needed / HOP_STEP_SEC - 1e-9) * HOP_STEP_SEC)

    def observe(self, cpu_sec: float) -> bool:
        """Record one window's CPU seconds; True when the hop changed."""
        self.cpu_sec += SMOOTHING * (cpu_sec - self.cpu_sec)
        self._since_check += 1
        if not self.auto or self._since_check < RECHECK_EVERY:
            return False
        self._since_check = 0
        hop = self.fitting_hop(self.cpu_sec)
        if hop <= self.hop_sec:  # shorter only where the margin holds
            hop = min(self.hop_sec, self.fitting_hop(self.cpu_sec / SHRINK_MARGIN))
        if hop != self.hop_sec:
            log.info("hop %.1f s -> %.1f s: %.0f ms of CPU per window, budget %.0f %% of %d cores",
                     self.hop_sec, hop, 1000 * self.cpu_sec, 100 * self.budget, self.cores)
            self.hop_sec = hop
            return True
        return False


def plan_hop(classifier: Classifier, hop: str, budget: float) -> HopPlanner:
    """A planner for `--hop` / `--cpu-budget`, logging what it chose and why."""
    hop_sec = parse_hop(hop)
    planner = HopPlanner(hop_sec, cpu_seconds_per_window(classifier), None if hop_sec else budget)
    if planner.auto:
        log.info("hop %.1f s: %.0f ms of CPU per window fits %.0f %% of %d cores (uses %.0f %%)", planner.hop_sec,
                 1000 * planner.cpu_sec, 100 * budget, planner.cores, 100 * planner.cpu_share)
    else:
        log.info("hop %.1f s (fixed): %.0f %% of %d cores", planner.hop_sec, 100 * planner.cpu_share, planner.cores)
    return planner
