"""The one audio path: decode any sample format to mono float32, resample to 16 kHz, cut windows.

Everything streams: a file is decoded frame by frame (PyAV for .m4a .aac .mp3, soundfile for the
others), mixed to mono, resampled chunk by chunk with soxr's high-quality streaming resampler,
and cut into windows by the :class:`Windower`, so memory holds a few windows whatever a file's
length. Training, batch, stream and live all go through here, so a file gives identical windows
everywhere (a microphone's chunks go through the same resampler and windower).

A file that cannot be used is an :class:`AudioError` naming it, never another exception: unreadable,
empty, undecodable or cut short, a corrupt header (a rate or channel count no audio has), samples
that are NaN, infinite or far beyond full scale.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Iterator

import numpy as np
import soxr

from edge.core.window import SAMPLE_RATE, WindowConfig

PYAV_SUFFIXES = (".m4a", ".aac", ".mp3", ".mp4")
RESAMPLE_QUALITY = "HQ"
SOUNDFILE_BLOCK = 1 << 16
RATE_RANGE = (1_000, 768_000)  # Hz; a header outside it is corrupt (random bytes decode as 0 Hz streams)
MAX_CHANNELS = 64  # a soundfile block holds SOUNDFILE_BLOCK frames of every channel
PYAV_MAX_CHANNELS = 7  # PyAV reads past the plane list of a planar frame with 8 or more (a crash)
MAX_PEAK = 16.0  # +24 dBFS: float files may go a little over full scale, never this far unless broken


def decoders():
    """PyAV and soundfile, imported at the first file: a monitor that hears a device or standard
    input never loads them (PyAV's FFmpeg alone is ~15 MB of memory)."""
    import av
    import soundfile

    return av, soundfile


def decoder_errors() -> tuple[type[Exception], ...]:
    """What the codec libraries raise for a corrupt, truncated or unreadable file. Anything else is a
    bug and goes on as itself."""
    av, soundfile = decoders()
    return OSError, av.FFmpegError, soundfile.SoundFileError


class AudioError(ValueError):
    """An audio file that cannot be used; the message names the file and what is wrong."""


class StreamResampler:
    """Resample mono float32 chunks to the target rate (soxr HQ); :meth:`flush` returns the tail."""

    def __init__(self, rate: int, target_rate: int = SAMPLE_RATE) -> None:
        self._stream = (
            None if rate == target_rate
            else soxr.ResampleStream(rate, target_rate, 1, dtype="float32", quality=RESAMPLE_QUALITY)
        )

    def __call__(self, chunk: np.ndarray) -> np.ndarray:
        chunk = np.ascontiguousarray(chunk, dtype=np.float32)
        return chunk if self._stream is None else self._stream.resample_chunk(chunk)

    def flush(self) -> np.ndarray:
        if self._stream is None:
            return np.zeros(0, np.float32)
        return self._stream.resample_chunk(np.zeros(0, np.float32), last=True)


def to_float(samples: np.ndarray) -> np.ndarray:
    """float32 samples; integers scaled by their full scale (int16 32767 -> ~1.0; unsigned ones centred first)."""
    if np.issubdtype(samples.dtype, np.integer):
        info = np.iinfo(samples.dtype)
        middle = (int(info.max) + 1) // 2 if info.min == 0 else 0
        return ((samples.astype(np.float64) - middle) / (int(info.max) + 1 - middle)).astype(np.float32)
    return samples.astype(np.float32)


def peak_problem(samples: np.ndarray) -> str | None:
    """What makes `samples` unusable as audio (NaN or infinite, or beyond MAX_PEAK), or None."""
    peak = float(np.max(np.abs(samples), initial=0.0))
    if not math.isfinite(peak):
        return "the audio holds NaN or infinite samples"
    if peak > MAX_PEAK:
        return f"samples reach {peak:.3g}, far outside the full scale [-1, 1] (at most {MAX_PEAK:g} is taken)"
    return None


def as_mono(samples, what: str = "samples") -> np.ndarray:
    """An array a program holds as mono float32, by one rule: 1-D is mono; 2-D is (frames, channels), as
    soundfile and sounddevice give it, mixed down by the mean; integer samples are scaled by their full
    scale; floats are taken as they are within MAX_PEAK. Anything else is an AudioError naming the fix."""
    array = np.asarray(samples)
    if array.ndim == 2 and array.shape[1] > MAX_CHANNELS:
        raise AudioError(f"{what}: shape {array.shape} would be {array.shape[1]} channels; audio is (frames, channels): "
                         "pass samples.T if it is (channels, frames) as librosa and torchaudio give it")
    if array.ndim not in (1, 2):
        raise AudioError(f"{what}: shape {array.shape}; pass 1-D mono or 2-D (frames, channels) audio")
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise AudioError(f"{what}: dtype {array.dtype} is not audio; pass float samples in [-1, 1] or integer PCM")
    array = to_float(array)
    if problem := peak_problem(array):
        raise AudioError(f"{what}: {problem}; pass float audio in [-1, 1] (PCM values held as floats: divide "
                         "by their full scale, e.g. 32768, or pass the int16 array itself, which is scaled)")
    return array.mean(axis=1) if array.ndim == 2 else array


class AudioFile:
    """An audio file opened for streaming. ``sample_rate`` and ``channels`` are the file's own;
    ``duration_sec`` counts what was decoded so far (the whole file once iterated)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise AudioError(f"{self.path}: no such file")
        if not self.path.is_file():
            raise AudioError(f"{self.path}: not a regular file")
        try:
            with open(self.path, "rb") as handle:
                size = os.fstat(handle.fileno()).st_size
        except OSError as error:
            raise AudioError(f"{self.path}: cannot read the file ({error.strerror}); check its permissions") from error
        if size == 0:
            raise AudioError(f"{self.path}: the file is empty")
        self._pyav = self.path.suffix.lower() in PYAV_SUFFIXES
        try:
            if self._pyav:
                with self._open_container() as container:
                    if not container.streams.audio:
                        raise AudioError(f"{self.path}: no audio stream in this file")
                    context = container.streams.audio[0].codec_context
                    if context is None:
                        raise AudioError(f"{self.path}: no decoder for this file's audio codec")
                    self.sample_rate, self.channels = context.sample_rate, context.channels
            else:
                info = decoders()[1].info(str(self.path))
                self.sample_rate, self.channels = info.samplerate, info.channels
        except decoder_errors() as error:
            raise self._undecodable(error) from error
        self._max_channels = PYAV_MAX_CHANNELS if self._pyav else MAX_CHANNELS
        low, high = RATE_RANGE
        if not (low <= self.sample_rate <= high and 1 <= self.channels <= self._max_channels):
            raise AudioError(f"{self.path}: the stream says {self.sample_rate} Hz, {self.channels} channel(s), but "
                             f"{low}-{high} Hz and 1-{self._max_channels} channels are readable; the file is corrupt "
                             f"or not audio (or mix it down: ffmpeg -i IN -ac 1 OUT.wav)")
        self.native_samples = 0

    @property
    def duration_sec(self) -> float:
        return self.native_samples / self.sample_rate

    def _undecodable(self, error: Exception) -> AudioError:
        return AudioError(f"{self.path}: cannot decode audio ({error}); is the file complete and an audio format?")

    def native_chunks(self) -> Iterator[np.ndarray]:
        """Mono float32 chunks at the file's own rate; AudioError names the file on any failure."""
        self.native_samples = 0
        try:
            for chunk in (self._pyav_chunks() if self._pyav else self._soundfile_chunks()):
                self.native_samples += len(chunk)
                yield chunk
        except decoder_errors() as error:
            raise self._undecodable(error) from error
        if self.native_samples == 0:
            raise AudioError(f"{self.path}: the file holds no audio samples")

    def _usable(self, samples: np.ndarray) -> np.ndarray:
        """`samples` (any channels, before mixing) when finite and within MAX_PEAK, else an AudioError."""
        if problem := peak_problem(samples):
            raise AudioError(f"{self.path}: {problem}; the file is corrupt, or normalize it (e.g. sox IN OUT norm -1) "
                             "or re-export it")
        return samples

    def _open_container(self):
        return decoders()[0].open(str(self.path), metadata_errors="replace")  # mangled tags never stop the audio

    def _pyav_chunks(self) -> Iterator[np.ndarray]:
        with self._open_container() as container:
            stream = container.streams.audio[0]
            for frame in container.decode(stream):
                channels = frame.layout.nb_channels
                if frame.sample_rate != self.sample_rate or not 1 <= channels <= self._max_channels:
                    raise AudioError(f"{self.path}: the stream turns to {frame.sample_rate} Hz, {channels} channel(s) "
                                     f"after {self.sample_rate} Hz, {self.channels}; the file is corrupt or spliced")
                try:
                    planes = frame.to_ndarray()  # planar formats: [channels, n]; packed: [1, n * channels]
                except ValueError as error:  # a sample format PyAV cannot convert
                    raise AudioError(f"{self.path}: {error}") from error
                if not frame.format.is_planar:
                    planes = planes.reshape(-1, channels).T
                yield self._usable(to_float(planes)).mean(axis=0)

    def _soundfile_chunks(self) -> Iterator[np.ndarray]:
        for block in decoders()[1].blocks(str(self.path), blocksize=SOUNDFILE_BLOCK, dtype="float32", always_2d=True):
            yield self._usable(block).mean(axis=1)

    def chunks(self, target_rate: int = SAMPLE_RATE) -> Iterator[np.ndarray]:
        """Mono float32 chunks resampled to target_rate."""
        resample = StreamResampler(self.sample_rate, target_rate)
        for chunk in self.native_chunks():
            yield resample(chunk)
        yield resample.flush()


class Windower:
    """Audio in, in chunks of any size; out, a full window every hop: windows start at 0, hop,
    2 hop, ... of the audio pushed, and ``t`` is the audio time at a window's end.

    Used for files (batch, stream, training) and for the microphone (live). It also keeps the last
    `recent_samples` of audio up to the latest window's end, for clips.
    """

    def __init__(self, window_samples: int, hop_samples: int, sample_rate: int, recent_samples: int = 0) -> None:
        self.window_samples, self.hop_samples, self.sample_rate = window_samples, hop_samples, sample_rate
        self.recent_samples = max(recent_samples, window_samples)
        self._buffer = np.zeros(0, np.float32)  # audio from the next window's start on ...
        self._incoming: list[np.ndarray] = []  # ... then chunks pushed since, joined only when needed
        self._size = 0  # samples in both
        self._start_t = 0.0  # audio time of the buffer's first sample
        self._seen = 0  # samples at the buffer's start already in `recent`
        self.recent = np.zeros(0, np.float32)

    @property
    def heard_sec(self) -> float:
        """The audio time at the end of what was pushed."""
        return self._start_t + self._size / self.sample_rate

    def retime(self, hop_sec: float) -> None:
        """Windows from now on start `hop_sec` apart."""
        self.hop_samples = round(hop_sec * self.sample_rate)

    def push(self, samples: np.ndarray) -> None:
        samples = np.asarray(samples, dtype=np.float32)
        self._incoming.append(samples)
        self._size += len(samples)

    def _join(self) -> None:
        if self._incoming:
            self._buffer = np.concatenate([self._buffer, *self._incoming])
            self._incoming = []

    def windows(self) -> Iterator[tuple[float, np.ndarray]]:
        """(audio time at the window's end, window) for every window the pushed audio completes."""
        while self._size >= self.window_samples:
            self._join()
            window = self._buffer[: self.window_samples]
            self._remember(self.window_samples)
            try:
                yield self._start_t + self.window_samples / self.sample_rate, window
            finally:  # a window handed out is used, even when its consumer failed or stopped early
                self._drop(self.hop_samples)

    def skip_backlog(self, keep_sec: float) -> float:
        """When more than one hop + `keep_sec` waits beyond the next window, skip to the newest
        window; the seconds skipped (0 when none)."""
        backlog = self._size - self.window_samples
        if backlog <= self.hop_samples + keep_sec * self.sample_rate:
            return 0.0
        self._join()
        self._remember(backlog)
        self._drop(backlog)
        return backlog / self.sample_rate

    def gap(self, seconds: float) -> None:
        """Audio was lost: time moves on, and the next window starts afresh."""
        self._start_t += self._size / self.sample_rate + seconds
        self._buffer, self._incoming, self._size, self._seen = np.zeros(0, np.float32), [], 0, 0

    def _remember(self, end: int) -> None:
        if end > self._seen:
            self.recent = np.concatenate([self.recent, self._buffer[self._seen : end]])[-self.recent_samples :]
            self._seen = end

    def _drop(self, count: int) -> None:
        count = min(count, len(self._buffer))
        self._buffer = self._buffer[count:]
        self._size -= count
        self._start_t += count / self.sample_rate
        self._seen = max(0, self._seen - count)


def too_short(path: str | Path, duration_sec: float, window: WindowConfig) -> AudioError:
    """The one error for audio shorter than one window."""
    return AudioError(f"{path}: {duration_sec:.1f} s is shorter than one {window.window_sec:g} s window; "
                      f"record at least {window.window_sec:g} s or leave the file out")


def iter_windows(audio: AudioFile, window: WindowConfig) -> Iterator[tuple[float, np.ndarray]]:
    """(audio time at the window's end, window) of a file, decoded, resampled and cut as it streams.

    A file shorter than one window is an AudioError (:func:`too_short`) once it has been read."""
    windower = Windower(window.window_samples, window.hop_samples, window.sample_rate)
    count = 0
    for chunk in audio.chunks(window.sample_rate):
        windower.push(chunk)
        for t, samples in windower.windows():
            count += 1
            yield t, samples
    if count == 0:
        raise too_short(audio.path, audio.duration_sec, window)


def load_windows(path: str | Path, window: WindowConfig) -> tuple[np.ndarray, AudioFile]:
    """Every window of a file in memory ([n, window_samples]), for training steps that need them all."""
    audio = AudioFile(path)
    windows = np.stack([samples.copy() for _, samples in iter_windows(audio, window)])
    return windows, audio
