"""The defaults both sides agree on, written once: audio format, windows, decision parameters.

Each is recorded in a training run and in the bundle; the edge reads them back from the bundle.
"""

from __future__ import annotations

import dataclasses

from edge.core.fields import FieldError, Fields, join, number

SAMPLE_RATE = 16_000
LABELS = ("ac", "fridge")
MAX_WINDOW_SEC = 60.0  # window and hop; BEATs was trained on 10-s clips
MAX_SPAN_SEC = 3600.0  # the running median and the debounce


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
        """Errors are FieldErrors (ValueErrors) that start with the field's name."""
        for name in PROBABILITY_FIELDS:
            number(name, getattr(self, name), 0.0, 1.0)
        for appliance in LABELS:
            on, off = getattr(self, f"{appliance}_on"), getattr(self, f"{appliance}_off")
            if off > on:
                raise FieldError(f"{appliance}_off: {off:g} is above {appliance}_on {on:g}; "
                                 "a hysteresis 'off' threshold must not exceed its 'on' threshold")
        for name in ("median_sec", "debounce_sec"):
            number(name, getattr(self, name), 0.0, MAX_SPAN_SEC, low_open=True)

    def median_windows(self, hop_sec: float) -> int:
        """Windows in the running median at this hop (at least 1)."""
        return max(1, round(self.median_sec / hop_sec))

    def debounce_updates(self, hop_sec: float) -> int:
        """Identical updates a change needs at this hop (at least 1)."""
        return max(1, round(self.debounce_sec / hop_sec))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict, where: str = "") -> DecisionConfig:
        """The fields of :meth:`to_dict` (other keys are ignored); errors name the field."""
        fields = Fields(data, where)
        values = {field.name: fields.number(field.name) for field in dataclasses.fields(cls)}
        try:
            return cls(**values)
        except FieldError as error:
            raise FieldError(join(where, str(error))) from error

    def replace(self, **overrides) -> DecisionConfig:
        """A copy with the given fields changed; None values are ignored."""
        return dataclasses.replace(self, **{k: v for k, v in overrides.items() if v is not None})
