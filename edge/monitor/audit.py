"""The teacher audits the student: every `every_sec` seconds of audio the BEATs model also decides
the window (at the first hop that reaches the spacing, so at any hop the audits stay about that
far apart).

The teacher keeps its own stream decider at the audit spacing (so its median and debounce are
durations, as everywhere), and each audit compares its debounced status with the student's.
Disagreements over the last hour give a rate: above `degraded_rate` the monitor reports itself
degraded (/healthz); above `fallback_rate` (when set) the monitor switches to the teacher for good
and says so. The teacher's sessions are loaded at the first audit, and the memory they took is
reported.
"""

from __future__ import annotations

import collections
import logging
import time
from typing import Callable

import numpy as np

from edge.core.decision import StreamDecider
from edge.core.proc import memory_mb
from edge.monitor.runtime import Classifier

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
        self._decider: StreamDecider | None = None
        self._spacing = 0.0
        self._since_sec = 0.0  # audio seconds since the last audit

    def _teacher(self) -> Classifier:
        if self.teacher is None:
            before = memory_mb()
            self.teacher = self.load_teacher()
            self.teacher_mb = memory_mb() - before
            log.info("audit: teacher (%s) loaded, %.0f MB more memory", self.teacher.precision, self.teacher_mb)
        return self.teacher

    def __call__(self, window: np.ndarray, line) -> bool:
        """Audit this hop if `every_sec` of audio passed since the last audit; True when the rate calls for the fallback."""
        self._since_sec += line.hop_sec
        if self.fell_back or self._since_sec < self.every_sec - 1e-6:
            return False
        spacing, self._since_sec = round(self._since_sec, 6), 0.0
        teacher = self._teacher()
        probs = teacher.predict(window[None])[0]
        if self._decider is None:
            self._decider = StreamDecider(teacher.decision, spacing)
        elif spacing != self._spacing:
            self._decider.retime(spacing)
        self._spacing = spacing
        verdict = self._decider.update(probs).debounced_status
        disagreed = verdict != line.debounced_status
        self.audits += 1
        self.disagreements += disagreed
        self.max_abs_diff = max(self.max_abs_diff, float(np.abs(probs - list(line.probabilities.values())).max()))
        now = self.clock()
        self._recent.append((now, disagreed))
        while self._recent and self._recent[0][0] < now - HOUR_SEC:
            self._recent.popleft()
        if disagreed:
            pairs = ", ".join(f"p_{name} {teacher_p:.2f} vs {student_p:.2f}"
                              for (name, student_p), teacher_p in zip(line.probabilities.items(), probs))
            log.warning("audit at t=%.1f s: the teacher says %s, the student %s (%s); %d of %d audits disagree",
                        line.t, verdict, line.debounced_status, pairs, self.disagreements, self.audits)
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
