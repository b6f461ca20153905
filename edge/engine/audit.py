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
(when set) the monitor switches to the teacher for good and says so.

The audit never holds up a hop: the hop only hands the window over, and a thread of the audit's
own loads and runs the teacher (an audit still running when the next one is due lets that one
pass). In `humwatch live` the teacher is a :class:`TeacherProcess`: a short-lived child process per
audit that loads the teacher's graphs, decides the window, answers in JSON and exits, so the
hundreds of MB a BEATs model takes are the system's again between audits (docs/performance.md,
"A whole live monitor"). Only a fallback loads the teacher into the monitor's own process.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import subprocess
import sys
import threading
import time
from typing import Callable, Protocol

import numpy as np

from edge.core.bundle import Bundle, load_bundle
from edge.core.decision import DecisionConfig, Levels
from edge.core.output import error_text
from edge.core.proc import memory_mb
from edge.engine.classifier import Classifier
from edge.engine.settings import AUDIT_EVERY_SEC

log = logging.getLogger("humwatch.audit")
HOUR_SEC = 3600.0
MIN_AUDITS = 5  # no verdict on the rate from fewer audits than this in the last hour
CHILD_NICE = 10  # the teacher's process yields the cores to the monitor's hops
CHILD_THREADS = 1  # ... and takes one core at most


class Teacher(Protocol):
    """What audits: a Classifier in this process, or a TeacherProcess."""

    precision: str

    @property
    def decision(self) -> DecisionConfig: ...

    def predict(self, windows: np.ndarray) -> np.ndarray: ...


class TeacherProcess:
    """The teacher in a child process started for each audit (see the module's docstring). The
    windows go to it as a JSON header line and raw float32 samples; it answers one JSON line: the
    probabilities and its own peak memory (`peak_mb`). One child at a time, whichever monitor audits."""

    def __init__(self, bundle: Bundle, precision: str) -> None:
        self.bundle, self.precision = bundle, precision
        self.peak_mb: float | None = None
        self._one_at_a_time = threading.Lock()
        self._resident: Classifier | None = None

    @property
    def decision(self) -> DecisionConfig:
        return self.bundle.decision_for(self.precision)

    def predict(self, windows: np.ndarray) -> np.ndarray:
        """Probabilities [n, labels] of windows [n, window_samples]; RuntimeError when the child failed."""
        windows = np.ascontiguousarray(windows, dtype=np.float32)
        header = {"bundle": str(self.bundle.path), "precision": self.precision, "shape": list(windows.shape)}
        with self._one_at_a_time:
            done = subprocess.run([sys.executable, "-m", __name__], input=json.dumps(header).encode() + b"\n"
                                  + windows.tobytes(), capture_output=True, check=False)
        if done.returncode != 0:
            why = (done.stderr.decode(errors="replace").strip().splitlines() or ["no message"])[-1]
            raise RuntimeError(f"the teacher's process failed (exit code {done.returncode}): {why}")
        answer = json.loads(done.stdout)
        self.peak_mb = answer["peak_mb"]
        return np.asarray(answer["probabilities"], dtype=np.float32)

    def load(self) -> Classifier:
        """The teacher in this process, for a fallback (loaded once, whichever monitor falls back)."""
        with self._one_at_a_time:
            if self._resident is None:
                self._resident = Classifier(self.bundle, self.precision)
            return self._resident


def _child() -> None:
    """The teacher's process: the windows on stdin, the answer on stdout (TeacherProcess)."""
    os.nice(CHILD_NICE)
    header = json.loads(sys.stdin.buffer.readline())
    count, samples = header["shape"]
    windows = np.frombuffer(sys.stdin.buffer.read(), dtype=np.float32).reshape(count, samples)
    teacher = Classifier(load_bundle(header["bundle"]), header["precision"], CHILD_THREADS, check=False)
    probabilities = teacher.predict(windows).tolist()
    json.dump({"probabilities": probabilities, "peak_mb": memory_mb("VmHWM")}, sys.stdout)


class Auditor:
    """Call it with each hop's window and the student's line; once the rate calls for the fallback,
    `fallback` holds the teacher (in this process) that decides from then on.

    `load_teacher` gives the teacher, at the first audit. `background`: audits run on a thread of
    their own, so no hop waits for one (`humwatch live`); without it they run within the hop (a
    file's stream, where nothing waits for the audio)."""

    def __init__(self, load_teacher: Callable[[], Teacher], every_sec: float = AUDIT_EVERY_SEC, degraded_rate: float = 0.1,
                 fallback_rate: float | None = None, clock: Callable[[], float] = time.monotonic,
                 background: bool = False) -> None:
        if not every_sec > 0:
            raise ValueError(f"the audit spacing must be above 0 s, got {every_sec!r}")
        self.load_teacher, self.every_sec, self.clock, self.background = load_teacher, every_sec, clock, background
        self.degraded_rate, self.fallback_rate = degraded_rate, fallback_rate
        self.teacher: Teacher | None = None
        self.teacher_mb: float | None = None  # memory a teacher loaded into this process took
        self.fallback: Teacher | None = None
        self.audits = self.disagreements = self.passed = 0
        self.max_abs_diff = 0.0
        self.fell_back = False
        self.failure: str | None = None  # why the last audit failed (None once one works again)
        self._recent: collections.deque[tuple[float, bool]] = collections.deque()
        self._lock = threading.Lock()  # _recent: the audit's thread writes, /healthz reads
        self._since_sec = 0.0  # audio seconds since the last audit
        self._thread: threading.Thread | None = None

    @property
    def teacher_process_peak_mb(self) -> float | None:
        """The peak memory of the last audit's teacher process (None: no child has answered)."""
        return getattr(self.teacher, "peak_mb", None)

    def __call__(self, window: np.ndarray, line, decision: DecisionConfig) -> None:
        """Audit this hop's window if `every_sec` of audio passed since the last audit (`decision`: the
        student's settings in force)."""
        self._since_sec += line.hop_sec
        if self.fell_back or self._since_sec < self.every_sec - 1e-6:
            return
        self._since_sec = 0.0
        args = (np.array(window, dtype=np.float32), line, decision)
        if not self.background:
            self._audit(*args)
        elif self._thread is not None and self._thread.is_alive():
            self.passed += 1
            log.info("audit at t=%.1f s passed: the previous one still runs (%d passed)", line.t, self.passed)
        else:
            self._thread = threading.Thread(target=self._audit, args=args, name="audit", daemon=True)
            self._thread.start()

    def join(self) -> None:
        """Wait for the audit in flight, if any."""
        if self._thread is not None:
            self._thread.join()

    def _audit(self, window: np.ndarray, line, decision: DecisionConfig) -> None:
        try:
            teacher = self._teacher()
            probs = dict(zip(line.probabilities, teacher.predict(window[None])[0].tolist()))
        except Exception as error:  # a failed audit (a child out of memory, a broken graph) never stops the monitor
            self.failure = f"the audit at t={line.t:.1f} s failed: {error_text(error)}"
            log.error("%s; the student goes on deciding", self.failure)
            return
        self.failure = None
        disagreeing = [name for name, student_p in line.probabilities.items()
                       if opposite(heard(student_p, decision.levels[name]), heard(probs[name], teacher.decision.levels[name]))]
        self.audits += 1
        self.disagreements += bool(disagreeing)
        self.max_abs_diff = max(self.max_abs_diff, max(abs(probs[name] - p) for name, p in line.probabilities.items()))
        now = self.clock()
        with self._lock:
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
            self.fallback = self._resident(teacher.load) if isinstance(teacher, TeacherProcess) else teacher

    def _teacher(self) -> Teacher:
        if self.teacher is None:
            self.teacher = self._resident(self.load_teacher)
        return self.teacher

    def _resident(self, load: Callable[[], Teacher]) -> Teacher:
        """`load`'s teacher, logging the memory it took in this process."""
        before = memory_mb()
        teacher = load()
        if not isinstance(teacher, TeacherProcess):
            self.teacher_mb = memory_mb() - before
            log.info("audit: teacher (%s) loaded, %.0f MB more memory", teacher.precision, self.teacher_mb)
        return teacher

    @property
    def hour_rate(self) -> float | None:
        """Share of the last hour's audits that disagreed; None with fewer than MIN_AUDITS of them."""
        with self._lock:
            if len(self._recent) < MIN_AUDITS:
                return None
            return sum(disagreed for _, disagreed in self._recent) / len(self._recent)

    def problem(self) -> str | None:
        """Why the monitor is degraded by the audit, or None (also once it fell back to the teacher)."""
        rate = None if self.fell_back else self.hour_rate
        if rate is not None and rate > self.degraded_rate:
            return (f"the student disagrees with the teacher on {rate:.0%} of {len(self._recent)} audits in the last hour "
                    f"(degraded above {self.degraded_rate:.0%})")
        return self.failure


def heard(probability: float, levels: Levels) -> bool | None:
    """One window's verdict on one appliance by a model's hysteresis levels: on, off, or None between them."""
    if probability >= levels.on:
        return True
    return False if probability < levels.off else None


def opposite(one: bool | None, other: bool | None) -> bool:
    """Two verdicts that contradict each other (on against off; an undecided one contradicts neither)."""
    return one is not None and other is not None and one != other


if __name__ == "__main__":
    _child()
