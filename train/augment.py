"""The design's augmentations: gain, mixing in a background window (from a recording whose named
appliances are all off), EQ tilt (waveform) and SpecAugment (fbank). Each draw comes from the numpy Generator passed in, so a cached view is
reproducible from its seed."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np
import torch

from edge.core.window import SAMPLE_RATE


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    gain_db: float = 6.0
    mix_probability: float = 0.5
    mix_snr_db: tuple[float, float] = (8.0, 25.0)
    eq_probability: float = 0.3
    eq_db: float = 3.0
    eq_low_hz: tuple[float, float] = (150.0, 300.0)
    eq_high_hz: tuple[float, float] = (2000.0, 5000.0)
    time_masks: int = 2
    time_mask_frames: int = 40  # 0.4 s of 10 ms frames
    freq_masks: int = 2
    freq_mask_bins: int = 20


def background_ids(labels: Mapping[str, Mapping[str, bool]], names: tuple[str, ...]) -> list[str]:
    """The recordings ({id: named labels}) whose windows are mixed into others: those that name every
    appliance off (for the seed: the both-off recordings). Where none does, those whose named
    appliances are all off: one that does not name an appliance may hold it running, so it is
    mixed only when nothing better is there."""
    quiet = [recording for recording, named in labels.items() if not any(named.values())]
    complete = [recording for recording in quiet if set(names) <= set(labels[recording])]
    return complete or quiet


def _power(x: np.ndarray) -> float:
    return float(np.mean(np.square(x, dtype=np.float64))) + 1e-12


def eq_tilt(window: np.ndarray, low_db: float, low_hz: float, high_db: float, high_hz: float) -> np.ndarray:
    """First-order-like low and high shelves applied in the frequency domain."""
    freqs = np.fft.rfftfreq(len(window), 1 / SAMPLE_RATE)
    low = 1 / (1 + (freqs / low_hz) ** 2)
    high = (freqs / high_hz) ** 2 / (1 + (freqs / high_hz) ** 2)
    gain = 10 ** ((low_db * low + high_db * high) / 20)
    return np.fft.irfft(np.fft.rfft(window) * gain, len(window)).astype(np.float32)


def augment_waveform(window: np.ndarray, rng: np.random.Generator, background: np.ndarray | None,
                     config: AugmentConfig = AugmentConfig()) -> np.ndarray:
    """One augmented copy of a window; background is a pool [n, N] of windows to mix in (see
    :func:`background_ids`)."""
    out = np.asarray(window, dtype=np.float32).copy()
    if background is not None and len(background) and rng.random() < config.mix_probability:
        noise = background[rng.integers(len(background))]
        snr = rng.uniform(*config.mix_snr_db)
        out = out + noise * np.sqrt(_power(out) / (_power(noise) * 10 ** (snr / 10)))
    if rng.random() < config.eq_probability:
        out = eq_tilt(out, rng.uniform(-config.eq_db, config.eq_db), rng.uniform(*config.eq_low_hz),
                      rng.uniform(-config.eq_db, config.eq_db), rng.uniform(*config.eq_high_hz))
    out = out * 10 ** (rng.uniform(-config.gain_db, config.gain_db) / 20)
    return np.clip(out, -1.0, 1.0).astype(np.float32)


def spec_augment(fbank: torch.Tensor, rng: np.random.Generator, config: AugmentConfig = AugmentConfig()) -> torch.Tensor:
    """Time and frequency masks on one normalised fbank [F, 128] (masked to 0, the mean)."""
    out = fbank.clone()
    frames, bins = out.shape
    for _ in range(config.time_masks):
        width = int(rng.integers(0, config.time_mask_frames + 1))
        start = int(rng.integers(0, max(1, frames - width)))
        out[start : start + width, :] = 0.0
    for _ in range(config.freq_masks):
        width = int(rng.integers(0, config.freq_mask_bins + 1))
        start = int(rng.integers(0, max(1, bins - width)))
        out[:, start : start + width] = 0.0
    return out
