"""The one audio path: decode any sample format to mono float32, resample to 16 kHz, slice windows.

Training and the Raspberry Pi both call these functions, so a file gives identical windows on
both sides. Compressed formats (.m4a .aac .mp3) decode with PyAV, the others with soundfile;
resampling is soxr's high-quality mode everywhere (also in streaming form for live input).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import av
import numpy as np
import soundfile
import soxr

from edge.core.defaults import SAMPLE_RATE, WindowConfig

PYAV_SUFFIXES = (".m4a", ".aac", ".mp3", ".mp4")
RESAMPLE_QUALITY = "HQ"


class AudioError(ValueError):
    """An audio file that cannot be used; the message names the file and what is wrong."""


@dataclasses.dataclass(frozen=True)
class DecodedAudio:
    """Mono float32 samples in [-1, 1] with the file's native rate and channel count."""

    samples: np.ndarray
    sample_rate: int
    channels: int

    @property
    def duration_sec(self) -> float:
        return len(self.samples) / self.sample_rate


def _decode_pyav(path: Path) -> DecodedAudio:
    with av.open(str(path)) as container:
        if not container.streams.audio:
            raise AudioError(f"{path}: no audio stream in this file")
        stream = container.streams.audio[0]
        channels = stream.codec_context.channels
        chunks = []
        for frame in container.decode(stream):
            planes = frame.to_ndarray()  # planar formats: [channels, n]; packed: [1, n * channels]
            if not frame.format.is_planar:
                planes = planes.reshape(-1, channels).T
            chunks.append(_to_float(planes))
        rate = stream.codec_context.sample_rate
    if not chunks:
        raise AudioError(f"{path}: the audio stream holds no samples")
    return DecodedAudio(np.concatenate(chunks, axis=1).mean(axis=0).astype(np.float32), rate, channels)


def _to_float(planes: np.ndarray) -> np.ndarray:
    if np.issubdtype(planes.dtype, np.integer):
        return planes.astype(np.float32) / float(np.iinfo(planes.dtype).max + 1)
    return planes.astype(np.float32)


def _decode_soundfile(path: Path) -> DecodedAudio:
    samples, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    return DecodedAudio(samples.mean(axis=1).astype(np.float32), rate, samples.shape[1])


def decode(path: str | Path) -> DecodedAudio:
    """Decode an audio file to mono float32 at its native rate; AudioError names the file."""
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise AudioError(f"{path}: the file is empty")
    try:
        if path.suffix.lower() in PYAV_SUFFIXES:
            audio = _decode_pyav(path)
        else:
            audio = _decode_soundfile(path)
    except AudioError:
        raise
    except Exception as error:  # codec libraries raise many types for corrupt input
        raise AudioError(f"{path}: cannot decode audio ({error}); is the file complete and an audio format?") from error
    if len(audio.samples) == 0:
        raise AudioError(f"{path}: the file holds no audio samples")
    if not np.all(np.isfinite(audio.samples)):
        raise AudioError(f"{path}: the audio holds NaN or infinite samples")
    return audio


def resample(samples: np.ndarray, rate: int, target_rate: int = SAMPLE_RATE) -> np.ndarray:
    """High-quality resampling of mono float32 audio (soxr)."""
    if rate == target_rate:
        return np.ascontiguousarray(samples, dtype=np.float32)
    return soxr.resample(samples.astype(np.float32), rate, target_rate, quality=RESAMPLE_QUALITY)


class StreamResampler:
    """Chunk-by-chunk form of :func:`resample` for live input."""

    def __init__(self, rate: int, target_rate: int = SAMPLE_RATE) -> None:
        self._stream = (
            None if rate == target_rate
            else soxr.ResampleStream(rate, target_rate, 1, dtype="float32", quality=RESAMPLE_QUALITY)
        )

    def __call__(self, chunk: np.ndarray) -> np.ndarray:
        chunk = np.ascontiguousarray(chunk, dtype=np.float32)
        return chunk if self._stream is None else self._stream.resample_chunk(chunk)


def load_audio(path: str | Path, target_rate: int = SAMPLE_RATE) -> tuple[np.ndarray, DecodedAudio]:
    """Decode and resample: (mono float32 at target_rate, the decoded original)."""
    decoded = decode(path)
    return resample(decoded.samples, decoded.sample_rate, target_rate), decoded


def too_short(path: str | Path, duration_sec: float, window: WindowConfig) -> AudioError:
    """The one error for audio shorter than one window."""
    return AudioError(f"{path}: {duration_sec:.1f} s is shorter than one {window.window_sec:g} s window; "
                      f"record at least {window.window_sec:g} s or leave the file out")


def load_windows(path: str | Path, window: WindowConfig) -> tuple[np.ndarray, DecodedAudio]:
    """Decode, resample and cut into full windows: ([n, window_samples] view, the decoded original).

    A file shorter than one window is an AudioError (:func:`too_short`)."""
    samples, decoded = load_audio(path, window.sample_rate)
    windows = slice_windows(samples, window.window_samples, window.hop_samples)
    if len(windows) == 0:
        raise too_short(path, decoded.duration_sec, window)
    return windows, decoded


def window_starts(num_samples: int, window: int, hop: int) -> np.ndarray:
    """Start offsets of every full window (none when the audio is shorter than one window)."""
    if num_samples < window:
        return np.zeros(0, dtype=np.int64)
    return np.arange(0, num_samples - window + 1, hop, dtype=np.int64)


def slice_windows(samples: np.ndarray, window: int, hop: int) -> np.ndarray:
    """[n_windows, window] read-only view of full windows, `hop` samples apart."""
    count = len(window_starts(len(samples), window, hop))
    if count == 0:
        return np.zeros((0, window), dtype=samples.dtype)
    view = np.lib.stride_tricks.sliding_window_view(samples, window)[::hop]
    return view[:count]
