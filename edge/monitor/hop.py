"""The per-hop line that every sink (stdout, file, MQTT, HTTP, clips) reads through its fields; the
Detector (edge/detector.py) makes one per hop for stream and live alike."""

from __future__ import annotations

import dataclasses

import numpy as np

from edge.core.decision import StreamUpdate


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
