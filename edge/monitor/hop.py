"""One hop, shared by stream and live: a window -> inference -> decision -> the per-hop line that
every sink (stdout, file, MQTT, HTTP, clips) reads through its fields."""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from edge.core.audio import Windower
from edge.core.decision import StreamDecider, StreamUpdate
from edge.core.defaults import DecisionConfig
from edge.monitor.audit import Auditor
from edge.monitor.pacing import HopPlanner
from edge.monitor.runtime import Classifier


@dataclasses.dataclass(frozen=True)
class HopLine(StreamUpdate):
    """One hop's decision (the StreamUpdate fields) with its time, probabilities and costs. ``t`` is
    seconds of audio at the window's end; lag, drops and overflows are the live monitor's (None in
    stream)."""

    t: float
    p_ac: float
    p_fridge: float
    infer_ms: float
    hop_sec: float | None = None  # the hop in force and the share of the machine's CPU it costs
    cpu_share: float | None = None
    lag_sec: float | None = None
    dropped_sec: float | None = None
    overflows: int | None = None
    precision: str | None = None  # with an audited student: the model deciding, and the audit's counts
    audits: int | None = None
    audit_disagreements: int | None = None

    @classmethod
    def build(cls, t: float, probs: np.ndarray, update: StreamUpdate, infer_ms: float, **live) -> HopLine:
        return cls(**dataclasses.asdict(update), t=round(t, 3), p_ac=float(probs[0]), p_fridge=float(probs[1]),
                   infer_ms=round(infer_ms, 1), **live)

    def to_json(self) -> dict:
        """The JSON object printed for this hop, `t` first (live-only fields left out when unset)."""
        fields = dataclasses.asdict(self)
        return {"t": fields.pop("t"), **{key: value for key, value in fields.items() if value is not None}}


def infer_window(classifier: Classifier, window: np.ndarray) -> tuple[np.ndarray, float, float]:
    """(probabilities [2], wall milliseconds, process CPU seconds) for one window."""
    start, cpu_start = time.perf_counter(), time.process_time()
    probs = classifier.predict(window[None])[0]
    return probs, (time.perf_counter() - start) * 1000, time.process_time() - cpu_start


class HopDecider:
    """One window -> one line: inference, the decision, the audit (when the student decides), and
    the hop planner kept up to date. Shared by stream and live; `windower` follows the planner's hop."""

    def __init__(self, classifier: Classifier, decision: DecisionConfig, planner: HopPlanner, windower: Windower,
                 auditor: Auditor | None = None) -> None:
        self.classifier, self.planner, self.windower, self.auditor = classifier, planner, windower, auditor
        self.decider = StreamDecider(decision, planner.hop_sec)
        windower.retime(planner.hop_sec)

    def __call__(self, t: float, window: np.ndarray, **live) -> HopLine:
        probs, infer_ms, cpu_sec = infer_window(self.classifier, window)
        update = self.decider.update(float(probs[0]), float(probs[1]))
        line = HopLine.build(t, probs, update, infer_ms, hop_sec=self.planner.hop_sec,
                             cpu_share=round(self.planner.cpu_share, 4), **live)
        if self.auditor is not None:
            deciding, cpu_before = self.classifier.precision, time.process_time()
            if self.auditor(window, line):
                self.classifier = self.auditor.teacher
                self.decider = StreamDecider(self.classifier.decision, self.planner.hop_sec)
            cpu_sec += time.process_time() - cpu_before
            line = dataclasses.replace(line, precision=deciding, audits=self.auditor.audits,
                                       audit_disagreements=self.auditor.disagreements)
        if self.planner.observe(cpu_sec):
            self.decider.retime(self.planner.hop_sec)
            self.windower.retime(self.planner.hop_sec)
        return line
