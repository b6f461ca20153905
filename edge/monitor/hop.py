"""The per-hop line that every sink (stdout, file, MQTT, HTTP, clips) reads through its fields; the
Detector (edge/detector.py) makes one per hop for stream and live alike."""

from __future__ import annotations

import dataclasses

import numpy as np

from edge.core.decision import StreamUpdate, per_appliance


@dataclasses.dataclass(frozen=True)
class HopLine(StreamUpdate):
    """One hop's decision (the StreamUpdate fields) with its time, probabilities and costs. ``t`` is
    seconds of audio at the window's end; lag, drops and overflows are the live monitor's (None in
    stream)."""

    t: float
    probabilities: dict[str, float]  # per appliance: this window's probability
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
        names = update.medians.keys()
        return cls(**{field.name: getattr(update, field.name) for field in dataclasses.fields(StreamUpdate)},
                   t=round(t, 3), probabilities={name: float(p) for name, p in zip(names, probs)},
                   infer_ms=round(infer_ms, 1), **live)

    def to_json(self) -> dict:
        """The JSON object printed for this hop: t, the decision's fields, p_<name> for each appliance,
        infer_ms, then the live-only fields that are set."""
        decision = {field.name for field in dataclasses.fields(StreamUpdate)} | {"t", "probabilities", "infer_ms"}
        live = {field.name: getattr(self, field.name) for field in dataclasses.fields(self) if field.name not in decision}
        return {"t": self.t, **self.fields(), **per_appliance("p_{}", self.probabilities), "infer_ms": self.infer_ms,
                **{key: value for key, value in live.items() if value is not None}}
