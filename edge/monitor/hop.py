"""What stream and live share: the windower that cuts 16 kHz audio into one window per hop, and
the per-hop line every sink (stdout, file, MQTT, HTTP, clips) reads."""

from __future__ import annotations

import dataclasses
from typing import Iterator

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
    ac_on: bool  # the per-label detectors after hysteresis, before the priority rule
    fridge_on: bool
    infer_ms: float
    lag_sec: float | None = None
    dropped_sec: float | None = None
    overflows: int | None = None

    @classmethod
    def build(cls, t: float, probs: np.ndarray, update: StreamUpdate, infer_ms: float, **live) -> HopLine:
        return cls(t=round(t, 3), status=update.status, debounced_status=update.debounced_status,
                   changed=update.changed, p_ac=float(probs[0]), p_fridge=float(probs[1]),
                   median_ac=update.median_ac, median_fridge=update.median_fridge, ac_on=update.ac_on,
                   fridge_on=update.fridge_on, infer_ms=round(infer_ms, 1), **live)

    def to_json(self) -> dict:
        """The JSON object printed for this hop (live-only fields left out when unset)."""
        return {key: value for key, value in dataclasses.asdict(self).items() if value is not None}


class Windower:
    """16 kHz audio in, in chunks of any size; out, the full window ending at every hop.

    Windows end at whole hops of audio time (the first once a window has filled), so a file and a
    microphone give the same windows. It also keeps the last `recent_samples` of audio for clips.
    """

    def __init__(self, window_samples: int, hop_samples: int, sample_rate: int, recent_samples: int = 0) -> None:
        self.window_samples, self.hop_samples, self.sample_rate = window_samples, hop_samples, sample_rate
        self.recent_samples = max(recent_samples, window_samples)
        self.audio_t = 0.0  # seconds of audio seen, skipped audio included
        self._history = np.zeros(0, np.float32)
        self._pending = np.zeros(0, np.float32)
        self.recent = np.zeros(0, np.float32)

    @property
    def pending_sec(self) -> float:
        """Audio waiting to be windowed: how far the decisions are behind the input."""
        return len(self._pending) / self.sample_rate

    def push(self, samples: np.ndarray) -> None:
        self._pending = np.concatenate([self._pending, samples.astype(np.float32, copy=False)])

    def windows(self) -> Iterator[tuple[float, np.ndarray]]:
        """(audio time at the window's end, window) for every hop the pending audio completes."""
        while len(self._pending) >= self.hop_samples:
            step, self._pending = self._pending[: self.hop_samples], self._pending[self.hop_samples :]
            self._advance(step)
            if len(self._history) == self.window_samples:
                yield self.audio_t, self._history

    def skip_backlog(self, keep_sec: float) -> float:
        """Skip the oldest pending audio beyond one hop + `keep_sec`; the seconds skipped (0 when none)."""
        limit = self.hop_samples + int(keep_sec * self.sample_rate)
        if len(self._pending) <= limit:
            return 0.0
        skipped = len(self._pending) - self.hop_samples
        self._advance(self._pending[:skipped])
        self._pending = self._pending[skipped:]
        return skipped / self.sample_rate

    def gap(self, seconds: float) -> None:
        """Audio was lost: time moves on, and the next window starts afresh."""
        self.audio_t += seconds
        self._history, self._pending = np.zeros(0, np.float32), np.zeros(0, np.float32)

    def _advance(self, samples: np.ndarray) -> None:
        self._history = np.concatenate([self._history, samples])[-self.window_samples :]
        self.recent = np.concatenate([self.recent, samples])[-self.recent_samples :]
        self.audio_t += len(samples) / self.sample_rate
