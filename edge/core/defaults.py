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


PROBABILITY_FIELDS = ("t_ac", "t_fridge", "ac_on", "ac_off", "fridge_on", "fridge_off")


@dataclasses.dataclass(frozen=True)
class DecisionConfig:
    """File thresholds; streaming hysteresis; the running-median span and the debounce, in seconds.

    The spans are durations so that a monitor may hop at another rate than training did: at a hop
    of h seconds the median covers round(median_sec / h) windows and a change needs
    round(debounce_sec / h) identical updates (at the 1.5 s default: 7 windows and 2 updates).
    """

    t_ac: float = 0.75
    t_fridge: float = 0.70
    ac_on: float = 0.80
    ac_off: float = 0.60
    fridge_on: float = 0.75
    fridge_off: float = 0.55
    median_sec: float = 10.5
    debounce_sec: float = 3.0

    def __post_init__(self) -> None:
        for name in PROBABILITY_FIELDS:
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name}={value} is not a probability in [0, 1]")
        if self.ac_off > self.ac_on or self.fridge_off > self.fridge_on:
            raise ValueError("a hysteresis 'off' threshold must not exceed its 'on' threshold")
        if self.median_sec <= 0 or self.debounce_sec <= 0:
            raise ValueError(f"median_sec={self.median_sec} and debounce_sec={self.debounce_sec} must be positive durations")

    def median_windows(self, hop_sec: float) -> int:
        """Windows in the running median at this hop (at least 1)."""
        return max(1, round(self.median_sec / hop_sec))

    def debounce_updates(self, hop_sec: float) -> int:
        """Identical updates a change needs at this hop (at least 1)."""
        return max(1, round(self.debounce_sec / hop_sec))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> DecisionConfig:
        """The fields of :meth:`to_dict`; other keys are ignored, a missing one is a KeyError."""
        return cls(**{field.name: float(data[field.name]) for field in dataclasses.fields(cls)})

    def replace(self, **overrides) -> DecisionConfig:
        """A copy with the given fields changed; None values are ignored."""
        return dataclasses.replace(self, **{k: v for k, v in overrides.items() if v is not None})
