"""Deterministic synthetic recordings that behave like the original ones.

Calibrated on shared/reference/original-manifests: a room floor near -58 dBFS window RMS; a fridge
(compressor hum on mains harmonics plus a faint whine) that adds only 1-2 dB; an AC (broadband
blower plus a blade-pass tone) near -46 dBFS; day recordings drift in level and carry transients
(footsteps, voices) so their windows vary 2-3x more than night ones. Written as 44.1 kHz stereo
AAC .m4a, one file per (on/off of each appliance, daypart), named by the sample pattern.

A third appliance, the dehumidifier (no original recordings: its level is set between the fridge's
and the AC's): a rotary compressor's hum on the mains frequency and higher odd harmonics (50, 250,
350, 450 Hz; none is one of the fridge's 100-400 Hz) plus a fan (broadband, flatter than the AC's
blower, with a higher blade-pass tone). Median window RMS (6 s windows of the 16 kHz mono audio, as
prepare measures them; seed 0, 180 s recordings): the dehumidifier alone -51.4 dBFS by night, -51.3
by day (the room alone -58.7 / -58.4), i.e. +7 dB: louder than the fridge (+1.5 dB), quieter than
the AC (-46.1, +12 dB). With the fridge -51.0; with the AC -45.2 (it adds 0.9 dB to the AC).
"""

from __future__ import annotations

import concurrent.futures
import itertools
import os
import zlib
from pathlib import Path
from typing import Callable, Iterable, Mapping, NamedTuple

import av
import numpy as np

from edge.core.files import atomic_path
from edge.core.labels import DAYPARTS, SEED_APPLIANCES, Appliances, LabelError, sample_file_name
from edge.core.window import WindowConfig

RATE = 44_100
MAINS_HZ = 50.0
ROOM_DBFS = -58.0
FRIDGE_DBFS = -62.0  # power sum with the room: about +1.5 dB
AC_DBFS = -46.2
DEHUMIDIFIER_DBFS = -52.0  # power sum with the room: about -51 dBFS
AAC_BITRATE = 128_000
MIC_SELF_NOISE_DBFS = -75.0


def _db_to_amplitude(dbfs: float) -> float:
    return 10 ** (dbfs / 20)


def _at_level(signal: np.ndarray, dbfs: float) -> np.ndarray:
    return signal * (_db_to_amplitude(dbfs) / max(np.sqrt(np.mean(signal**2)), 1e-12))


def _shaped_noise(rng: np.random.Generator, n: int, exponent: float, low_hz: float = 20.0, high_hz: float = 16_000.0) -> np.ndarray:
    """Noise with power ~ 1 / f**exponent between low_hz and high_hz."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1 / RATE)
    gain = np.where((freqs >= low_hz) & (freqs <= high_hz), 1.0 / np.maximum(freqs, low_hz) ** (exponent / 2), 0.0)
    return np.fft.irfft(spectrum * gain, n)


def _slow_drift(rng: np.random.Generator, n: int, depth_db: float, period_sec: float) -> np.ndarray:
    """A smooth random level envelope, +- depth_db, changing over about period_sec."""
    knots = rng.uniform(-depth_db, depth_db, size=int(n / RATE / period_sec) + 2)
    curve = np.interp(np.arange(n) / RATE / period_sec, np.arange(len(knots)), knots)
    return 10 ** (curve / 20)


def room(rng: np.random.Generator, n: int, day: bool) -> np.ndarray:
    """The quiet room: pinkish floor; by day, level drift plus footsteps and voices."""
    floor = _at_level(_shaped_noise(rng, n, exponent=1.0), ROOM_DBFS)
    if not day:
        return floor * _slow_drift(rng, n, depth_db=1.0, period_sec=6.0)
    floor *= _slow_drift(rng, n, depth_db=1.5, period_sec=5.0)
    t = np.arange(n) / RATE
    events = np.zeros(n)
    for start in rng.uniform(0, n / RATE, size=rng.poisson(n / RATE / 20)):  # a footstep run every ~20 s
        for step in range(rng.integers(3, 8)):
            onset = start + step * rng.uniform(0.45, 0.6)
            local = t - onset
            mask = (local >= 0) & (local < 0.25)
            thump = np.sin(2 * np.pi * rng.uniform(50, 90) * local[mask]) * np.exp(-local[mask] / 0.04)
            events[mask] += thump * _db_to_amplitude(rng.uniform(-40, -30))
    for start in rng.uniform(0, n / RATE, size=rng.poisson(n / RATE / 45)):  # a voice now and then
        length = rng.uniform(1.0, 3.0)
        mask = (t >= start) & (t < start + length)
        local = t[mask] - start
        pitch = rng.uniform(110, 220)
        voiced = sum(np.sin(2 * np.pi * pitch * h * local) / h for h in range(1, 8))
        syllables = np.clip(np.sin(2 * np.pi * rng.uniform(3, 5) * local), 0, None)
        events[mask] += voiced * syllables * _db_to_amplitude(rng.uniform(-52, -44))
    return floor + events


def fridge(rng: np.random.Generator, n: int) -> np.ndarray:
    """A compressor: hum on mains harmonics with slight wobble, plus a faint high whine."""
    t = np.arange(n) / RATE
    wobble = 1 + 0.002 * np.sin(2 * np.pi * 0.3 * t + rng.uniform(0, 2 * np.pi))
    hum = sum(
        np.sin(2 * np.pi * MAINS_HZ * k * wobble * t + rng.uniform(0, 2 * np.pi)) / k**0.7
        for k in (2, 3, 4, 6, 8)
    )
    whine_hz = rng.uniform(1200, 2400)
    whine = 0.15 * np.sin(2 * np.pi * whine_hz * t + 3 * np.sin(2 * np.pi * 0.5 * t))
    rattle = 0.3 * _shaped_noise(rng, n, exponent=0.0, low_hz=90, high_hz=400)
    rattle /= max(np.sqrt(np.mean(rattle**2)), 1e-12)
    return _at_level(hum + whine + 0.2 * rattle, FRIDGE_DBFS)


def air_conditioner(rng: np.random.Generator, n: int) -> np.ndarray:
    """A blower: broadband airflow noise with a blade-pass tone and its harmonics."""
    t = np.arange(n) / RATE
    airflow = _shaped_noise(rng, n, exponent=1.5, low_hz=40, high_hz=8000)
    airflow /= np.sqrt(np.mean(airflow**2))
    blade_hz = rng.uniform(110, 170)
    blade = sum(np.sin(2 * np.pi * blade_hz * k * t + rng.uniform(0, 2 * np.pi)) / k for k in (1, 2, 3))
    flutter = 1 + 0.1 * np.sin(2 * np.pi * rng.uniform(0.2, 0.6) * t)
    return _at_level((airflow + 0.35 * blade) * flutter, AC_DBFS)


def dehumidifier(rng: np.random.Generator, n: int) -> np.ndarray:
    """A rotary compressor (hum at 50 Hz and 250-450 Hz) under a fan (flat broadband air, blade-pass tone)."""
    t = np.arange(n) / RATE
    hum = sum(np.sin(2 * np.pi * MAINS_HZ * k * t + rng.uniform(0, 2 * np.pi)) / k**0.5 for k in (1, 5, 7, 9))
    air = _shaped_noise(rng, n, exponent=0.8, low_hz=150, high_hz=6000)
    air /= max(np.sqrt(np.mean(air**2)), 1e-12)
    blade_hz = rng.uniform(220, 320)
    blade = sum(np.sin(2 * np.pi * blade_hz * k * t + rng.uniform(0, 2 * np.pi)) / k for k in (1, 2))
    return _at_level(0.6 * hum + air + 0.3 * blade, DEHUMIDIFIER_DBFS)


# Each appliance's signature and its own random stream (0 is the room, 3 the microphones' self-noise).
# Mixed in this order whatever the order of the names, so the seed's audio stays what it always was.
SIGNATURES: dict[str, tuple[int, Callable[[np.random.Generator, int], np.ndarray]]] = {
    "fridge": (1, fridge),
    "ac": (2, air_conditioner),
    "dehumidifier": (4, dehumidifier),
}


def check_appliances(appliances: str | Iterable[str]) -> tuple[str, ...]:
    """The names ("ac,fridge" or a sequence) when they are a valid set and synth has a signature for each,
    else a ValueError that says why (and lists the appliances synth knows)."""
    shown = appliances if isinstance(appliances, str) else ",".join(appliances)
    try:
        names = Appliances.parse(appliances).names
    except LabelError as error:
        raise ValueError(f"--appliances {shown!r}: {error}") from error
    unknown = [name for name in names if name not in SIGNATURES]
    if unknown:
        raise ValueError(f"--appliances {shown!r}: synth has no signature for {', '.join(unknown)}; "
                         f"it knows {', '.join(sorted(SIGNATURES))}")
    return names


def synthesize(labels: Mapping[str, bool], daypart: str, seconds: float, seed: int) -> np.ndarray:
    """Stereo float32 [2, n] at 44.1 kHz for one condition: the room plus every appliance that is on."""
    n = int(round(seconds * RATE))
    mix = room(np.random.default_rng([seed, 0]), n, day=daypart == "day")
    for name, (stream, signature) in SIGNATURES.items():
        if labels.get(name):
            mix += signature(np.random.default_rng([seed, stream]), n)
    # Two capsules a few cm apart: the same room, slightly different gains, independent self-noise.
    self_noise = np.random.default_rng([seed, 3]).standard_normal((2, n)) * _db_to_amplitude(MIC_SELF_NOISE_DBFS)
    stereo = np.stack([mix, 0.97 * mix]) + self_noise
    return np.clip(stereo, -1, 1).astype(np.float32)


def write_m4a(path: Path, stereo: np.ndarray | Iterable[np.ndarray]) -> None:
    """Encode [2, n] float32 (or blocks of it, for long files) as 44.1 kHz stereo AAC in an .m4a (atomically)."""
    blocks = [stereo] if isinstance(stereo, np.ndarray) else stereo
    with atomic_path(path) as temporary:
        with av.open(str(temporary), mode="w", format="ipod") as container:
            stream = container.add_stream("aac", rate=RATE, layout="stereo")
            stream.bit_rate = AAC_BITRATE
            for block in blocks:
                for start in range(0, block.shape[1], 1024 * 64):
                    frame = av.AudioFrame.from_ndarray(
                        np.ascontiguousarray(block[:, start : start + 1024 * 64], dtype=np.float32), format="fltp",
                        layout="stereo")
                    frame.sample_rate = RATE
                    for packet in stream.encode(frame):
                        container.mux(packet)
            for packet in stream.encode(None):
                container.mux(packet)


class Recording(NamedTuple):
    """One file to synthesize: its name, what is on in it, its daypart and its own seed."""

    name: str
    labels: dict[str, bool]
    daypart: str
    seed: int


def plan(seed: int = 0, copies: int = 1, appliances: str | Iterable[str] = SEED_APPLIANCES) -> list[Recording]:
    """One recording per (on/off of each appliance, daypart) [x copies], in the order of the names' product."""
    names = check_appliances(appliances)
    if copies < 1:
        raise ValueError(f"--copies {copies}: must be at least 1")
    recordings = []
    for *states, daypart, copy in itertools.product(*[(False, True)] * len(names), DAYPARTS, range(copies)):
        labels = dict(zip(names, states))
        name = sample_file_name(labels, daypart, str(copy + 1) if copies > 1 else None)
        recordings.append(Recording(name, labels, daypart, zlib.crc32(f"{seed}/{name}".encode())))
    return recordings


def _write_one(path: Path, recording: Recording, seconds: float) -> Path:
    write_m4a(path, synthesize(recording.labels, recording.daypart, seconds, recording.seed))
    return path


def write_recordings(out_dir: Path, seconds: float = 180.0, seed: int = 0, copies: int = 1,
                     appliances: str | Iterable[str] = SEED_APPLIANCES) -> list[Path]:
    """Write the :func:`plan`'s recordings as .m4a files, in parallel; returns the paths written."""
    recordings = plan(seed, copies, appliances)
    if seconds < WindowConfig.window_sec:
        raise ValueError(f"--seconds {seconds}: recordings must be at least one {WindowConfig.window_sec:g} s window long")
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / recording.name for recording in recordings]
    with concurrent.futures.ProcessPoolExecutor(max_workers=min(len(paths), os.cpu_count() or 1)) as pool:
        return list(pool.map(_write_one, paths, recordings, [seconds] * len(paths)))
