"""The per-hop line: built here from a window's decision, read by every sink (stdout, file,
MQTT, HTTP, clips) through its fields."""

from __future__ import annotations

import dataclasses
import numpy as np

from edge.core.decision import StreamUpdate


@dataclasses.dataclass(frozen=True)
class HopLine:
    """One hop's decision. ``t`` is seconds of audio at the window's end; the last three fields are
    the live monitor's (None in stream)."""

    t: float
    status: str
    debounced_status: str
    changed: bool
    p_ac: float
    p_fridge: float
    median_ac: float
    median_fridge: float
    ac_on: bool  # the per-label detectors after hysteresis, before debouncing
    fridge_on: bool
    ac_running: bool  # the same, debounced: debounced_status follows from these two
    fridge_running: bool
    infer_ms: float
    lag_sec: float | None = None
    dropped_sec: float | None = None
    overflows: int | None = None

    @classmethod
    def build(cls, t: float, probs: np.ndarray, update: StreamUpdate, infer_ms: float, **live) -> HopLine:
        return cls(t=round(t, 3), status=update.status, debounced_status=update.debounced_status,
                   changed=update.changed, p_ac=float(probs[0]), p_fridge=float(probs[1]),
                   median_ac=update.median_ac, median_fridge=update.median_fridge, ac_on=update.ac_on,
                   fridge_on=update.fridge_on, ac_running=update.ac_running, fridge_running=update.fridge_running,
                   infer_ms=round(infer_ms, 1), **live)

    def to_json(self) -> dict:
        """The JSON object printed for this hop (live-only fields left out when unset)."""
        return {key: value for key, value in dataclasses.asdict(self).items() if value is not None}
