"""Clips: on every change of the debounced state, the audio around it as FLAC + a JSON sidecar.

A clip is the last `seconds` of 16 kHz audio up to the window that made the change (default 20 s:
the window plus history). The directory is bounded: the oldest clips go first. Rename a clip by
the sample pattern into samples/ and it becomes training data.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Callable

import numpy as np
import soundfile

from edge.core.files import atomic_path, write_json_atomic
from edge.monitor.hop import HopLine

log = logging.getLogger("humwatch.clips")


class ClipWriter:
    """A live-line sink; `recent_audio` returns the monitor's latest 16 kHz audio."""

    def __init__(self, directory: Path, recent_audio: Callable[[], np.ndarray], sample_rate: int,
                 seconds: float = 20.0, max_mb: float = 500.0) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.recent_audio = recent_audio
        self.sample_rate = sample_rate
        self.seconds = seconds
        self.max_bytes = int(max_mb * 1e6)
        self.previous: str | None = None

    def __call__(self, line: HopLine) -> None:
        status, previous = line.debounced_status, self.previous
        self.previous = status
        if previous is None or status == previous:
            return
        self.write(line, previous, status)
        self.enforce_bound()

    def write(self, line: HopLine, old: str, new: str) -> Path:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        stem = f"{stamp}-t{line.t:09.1f}-{old}-to-{new}"
        audio = self.recent_audio()[-int(self.seconds * self.sample_rate):]
        clip = self.directory / f"{stem}.flac"
        with atomic_path(clip) as temporary:
            soundfile.write(temporary, audio, self.sample_rate, format="FLAC", subtype="PCM_24")
        write_json_atomic(self.directory / f"{stem}.json", {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "t": line.t, "old_state": old, "new_state": new,
            "duration_sec": len(audio) / self.sample_rate, "sample_rate": self.sample_rate,
            "p_ac": line.p_ac, "p_fridge": line.p_fridge, "median_ac": line.median_ac, "median_fridge": line.median_fridge,
        })
        log.info("clip written: %s (%s -> %s)", clip, old, new)
        return clip

    def enforce_bound(self) -> None:
        """Remove the oldest clips (FLAC and sidecar together) until the directory fits max_mb."""
        clips = sorted(self.directory.glob("*.flac"))
        sizes = {clip: clip.stat().st_size + _size(clip.with_suffix(".json")) for clip in clips}
        total = sum(sizes.values())
        for clip in clips[:-1]:  # never the clip just written
            if total <= self.max_bytes:
                break
            total -= sizes[clip]
            clip.unlink()
            clip.with_suffix(".json").unlink(missing_ok=True)
            log.info("clip removed to stay under %.0f MB: %s", self.max_bytes / 1e6, clip.name)


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0
