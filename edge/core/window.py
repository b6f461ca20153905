"""The analysis windows both sides agree on, written once: the rate the models hear, the window
and the hop. Recorded in a training run and in the bundle; the edge reads them back from the bundle.
"""

from __future__ import annotations

import dataclasses

from edge.core.fields import FieldError, Fields, join, number

SAMPLE_RATE = 16_000
MAX_WINDOW_SEC = 60.0  # window and hop; BEATs was trained on 10-s clips


@dataclasses.dataclass(frozen=True)
class WindowConfig:
    """Analysis windows: length and hop in seconds at SAMPLE_RATE."""

    window_sec: float = 6.0
    hop_sec: float = 1.5
    sample_rate: int = SAMPLE_RATE

    def __post_init__(self) -> None:
        number("window_sec", self.window_sec, 0, MAX_WINDOW_SEC, low_open=True)
        number("hop_sec", self.hop_sec, 0, MAX_WINDOW_SEC, low_open=True)
        if self.sample_rate != SAMPLE_RATE:
            raise FieldError(f"sample_rate: {self.sample_rate} Hz, but humwatch's models hear {SAMPLE_RATE} Hz")
        for name in ("window_sec", "hop_sec"):
            if round(getattr(self, name) * self.sample_rate) < 1:
                raise FieldError(f"{name}: {getattr(self, name):g} s is shorter than one sample")

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
    def from_dict(cls, data: dict, where: str = "") -> WindowConfig:
        """The fields of :meth:`to_dict` (the sample counts, when there, must agree); errors name the field."""
        fields = Fields(data, where)
        fields.only(*cls().to_dict())
        values = fields.number("window_sec"), fields.number("hop_sec"), fields.integer("sample_rate")
        try:
            window = cls(*values)
        except FieldError as error:
            raise FieldError(join(where, str(error))) from error
        for key in ("window_samples", "hop_samples"):
            if fields.integer(key, default=getattr(window, key)) != getattr(window, key):
                raise FieldError(f"{fields.name(key)}: {data[key]}, but the seconds and the rate give {getattr(window, key)}")
        return window
