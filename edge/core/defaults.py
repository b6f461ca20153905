"""The defaults both sides agree on, written once: audio format, windows, decision parameters.

Each is recorded in a training run and in the bundle; the edge reads them back from the bundle.
"""

from __future__ import annotations

import dataclasses

SAMPLE_RATE = 16_000
LABELS = ("ac", "fridge")


@dataclasses.dataclass(frozen=True)
class WindowConfig:
    """Analysis windows: length and hop in seconds at SAMPLE_RATE."""

    window_sec: float = 6.0
    hop_sec: float = 1.5
    sample_rate: int = SAMPLE_RATE

    @property
    def window_samples(self) -> int:
        return round(self.window_sec * self.sample_rate)

    @property
    def hop_samples(self) -> int:
        return round(self.hop_sec * self.sample_rate)

    def to_dict(self) -> dict:
        return {
            "sample_rate": self.sample_rate,
            "window_sec": self.window_sec,
            "hop_sec": self.hop_sec,
            "window_samples": self.window_samples,
            "hop_samples": self.hop_samples,
        }

    @classmethod
    def from_dict(cls, data: dict) -> WindowConfig:
        return cls(float(data["window_sec"]), float(data["hop_sec"]), int(data["sample_rate"]))


@dataclasses.dataclass(frozen=True)
class DecisionConfig:
    """File thresholds, and the streaming median / hysteresis / debounce parameters."""

    t_ac: float = 0.75
    t_fridge: float = 0.70
    ac_on: float = 0.80
    ac_off: float = 0.60
    fridge_on: float = 0.75
    fridge_off: float = 0.55
    median_n: int = 7
    debounce_k: int = 2

    def __post_init__(self) -> None:
        for name in ("t_ac", "t_fridge", "ac_on", "ac_off", "fridge_on", "fridge_off"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name}={value} is not a probability in [0, 1]")
        if self.ac_off > self.ac_on or self.fridge_off > self.fridge_on:
            raise ValueError("a hysteresis 'off' threshold must not exceed its 'on' threshold")
        if self.median_n < 1 or self.debounce_k < 1:
            raise ValueError("median_n and debounce_k must be at least 1")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> DecisionConfig:
        fields = {field.name: field.type for field in dataclasses.fields(cls)}
        return cls(**{key: (int if key in ("median_n", "debounce_k") else float)(value)
                      for key, value in data.items() if key in fields})

    def replace(self, **overrides) -> DecisionConfig:
        """A copy with the given fields changed; None values are ignored."""
        return dataclasses.replace(self, **{k: v for k, v in overrides.items() if v is not None})
