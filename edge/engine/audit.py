"""The teacher audits the student: every `every_sec` seconds of audio the BEATs model also hears
the window the student just decided (at the first hop that reaches the spacing, so at any hop the
audits stay about that far apart).

Like is judged with like: the same window, and the same rule for both models: each appliance's
probability against that model's own hysteresis levels, on (at or above `on`), off (below
`off`) or undecided between them. The two disagree when one model hears an appliance on and the
other hears it off. The student's debounced state is never compared with an instant verdict of the
teacher, so a change the student's running median and debounce have not yet followed is no
disagreement, and a window near a level is none either. Disagreements over the last hour give a
rate: above `degraded_rate` the monitor reports itself degraded (/healthz); above `fallback_rate`
(when set) the monitor switches to the teacher for good and says so. The teacher's sessions are
loaded at the first audit, and the memory they took is reported.
"""

from __future__ import annotations

import collections
import logging
import time
from typing import Callable

import numpy as np

from edge.core.decision import DecisionConfig, Levels
from edge.core.proc import memory_mb
from edge.engine.classifier import Classifier

log = logging.getLogger("humwatch.audit")
HOUR_SEC = 3600.0
MIN_AUDITS = 5  # no verdict on the rate from fewer audits than this in the last hour


class Auditor:
    """Call it with each hop's window and the student's line; it answers whether to fall back now."""

    def __init__(self, load_teacher: Callable[[], Classifier], every_sec: float = 60.0, degraded_rate: float = 0.1,
                 fallback_rate: float | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        if not every_sec > 0:
            raise ValueError(f"the audit spacing must be above 0 s, got {every_sec!r}")
        self.load_teacher, self.every_sec, self.clock = load_teacher, every_sec, clock
        self.degraded_rate, self.fallback_rate = degraded_rate, fallback_rate
        self.teacher: Classifier | None = None
        self.teacher_mb: float | None = None
        self.audits = self.disagreements = 0
        self.max_abs_diff = 0.0
        self.fell_back = False
        self._recent: collections.deque[tuple[float, bool]] = collections.deque()
        self._since_sec = 0.0  # audio seconds since the last audit

    def _teacher(self) -> Classifier:
        if self.teacher is None:
            before = memory_mb()
            self.teacher = self.load_teacher()
            self.teacher_mb = memory_mb() - before
            log.info("audit: teacher (%s) loaded, %.0f MB more memory", self.teacher.precision, self.teacher_mb)
        return self.teacher

    def __call__(self, window: np.ndarray, line, decision: DecisionConfig) -> bool:
        """Audit this hop if `every_sec` of audio passed since the last audit (`decision`: the student's
        settings in force); True when the rate calls for the fallback."""
        self._since_sec += line.hop_sec
        if self.fell_back or self._since_sec < self.every_sec - 1e-6:
            return False
        self._since_sec = 0.0
        teacher = self._teacher()
        probs = dict(zip(line.probabilities, teacher.predict(window[None])[0].tolist()))
        disagreeing = [name for name, student_p in line.probabilities.items()
                       if opposite(heard(student_p, decision.levels[name]), heard(probs[name], teacher.decision.levels[name]))]
        self.audits += 1
        self.disagreements += bool(disagreeing)
        self.max_abs_diff = max(self.max_abs_diff, max(abs(probs[name] - p) for name, p in line.probabilities.items()))
        now = self.clock()
        self._recent.append((now, bool(disagreeing)))
        while self._recent and self._recent[0][0] < now - HOUR_SEC:
            self._recent.popleft()
        if disagreeing:
            pairs = ", ".join(f"{name}: p {probs[name]:.2f} (teacher) vs {line.probabilities[name]:.2f} (student)"
                              for name in disagreeing)
            log.warning("audit at t=%.1f s: the teacher and the student hear the same window differently (%s); "
                        "%d of %d audits disagree", line.t, pairs, self.disagreements, self.audits)
        rate = self.hour_rate
        if self.fallback_rate is not None and rate is not None and rate > self.fallback_rate:
            self.fell_back = True
            log.warning("audit: the student disagrees with the teacher on %.0f%% of the last hour's audits "
                        "(--audit-fallback %.0f%%): switching to the teacher (%s) for good",
                        100 * rate, 100 * self.fallback_rate, teacher.precision)
            return True
        return False

    @property
    def hour_rate(self) -> float | None:
        """Share of the last hour's audits that disagreed; None with fewer than MIN_AUDITS of them."""
        if len(self._recent) < MIN_AUDITS:
            return None
        return sum(disagreed for _, disagreed in self._recent) / len(self._recent)

    def problem(self) -> str | None:
        """Why the monitor is degraded by the audit, or None (also once it fell back to the teacher)."""
        rate = None if self.fell_back else self.hour_rate
        if rate is not None and rate > self.degraded_rate:
            return (f"the student disagrees with the teacher on {rate:.0%} of {len(self._recent)} audits in the last hour "
                    f"(degraded above {self.degraded_rate:.0%})")
        return None


def heard(probability: float, levels: Levels) -> bool | None:
    """One window's verdict on one appliance by a model's hysteresis levels: on, off, or None between them."""
    if probability >= levels.on:
        return True
    return False if probability < levels.off else None


def opposite(one: bool | None, other: bool | None) -> bool:
    """Two verdicts that contradict each other (on against off; an undecided one contradicts neither)."""
    return one is not None and other is not None and one != other
