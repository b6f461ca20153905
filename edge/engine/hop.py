"""The per-hop line that every sink (stdout, file, MQTT, HTTP, clips) reads through its fields; the
Detector (edge.engine.detector) makes one per hop for stream and live alike.

A line either decides (the appliances' states) or says why it decided nothing (`reason`, with the
status ``no-signal`` or ``no-audio`` of edge.core.hearing): sinks ask :attr:`HopLine.decided`."""

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
    reason: str | None = None  # a hop that decided nothing: why (its status is no-signal or no-audio)
    level_dbfs: float | None = None  # ... and, with no signal, the level of the window's quietest second

    @property
    def decided(self) -> bool:
        """Whether the hop decided the appliances' states (else `reason` says why not)."""
        return self.reason is None

    @classmethod
    def undecided(cls, t: float, status: str, reason: str, changed: bool, level_dbfs: float | None = None,
                  **live) -> HopLine:
        """A hop that decided nothing: `status` (no-signal, no-audio) and the reason, no probabilities."""
        return cls(status=status, debounced_status=status, changed=changed, medians={}, on={}, running={},
                   t=round(t, 3), probabilities={}, infer_ms=0.0, reason=reason,
                   level_dbfs=None if level_dbfs is None else round(level_dbfs, 1), **live)

    @classmethod
    def build(cls, t: float, probs: np.ndarray, update: StreamUpdate, infer_ms: float, **live) -> HopLine:
        names = update.medians.keys()
        return cls(**{field.name: getattr(update, field.name) for field in dataclasses.fields(StreamUpdate)},
                   t=round(t, 3), probabilities={name: float(p) for name, p in zip(names, probs)},
                   infer_ms=round(infer_ms, 1), **live)

    def to_json(self) -> dict:
        """The JSON object printed for this hop: t, the decision's fields, p_<name> for each appliance,
        infer_ms, then the live-only fields that are set; a hop that decided nothing has its status,
        reason (and level) in place of the decision and the probabilities."""
        heard = {"reason": self.reason, "level_dbfs": self.level_dbfs}
        decision = {field.name for field in dataclasses.fields(StreamUpdate)} | {"t", "probabilities", "infer_ms", *heard}
        live = {field.name: getattr(self, field.name) for field in dataclasses.fields(self) if field.name not in decision}
        live = {key: value for key, value in live.items() if value is not None}
        if not self.decided:
            return {"t": self.t, **self.fields(), **{key: value for key, value in heard.items() if value is not None}, **live}
        return {"t": self.t, **self.fields(), **per_appliance("p_{}", self.probabilities), "infer_ms": self.infer_ms, **live}
