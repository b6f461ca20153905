"""Clips: on every change of the debounced state, the audio around it as FLAC + a JSON sidecar
(its time, the old and new state, and each appliance's p_<name> and median_<name>). A hop that
decided nothing (no signal, no audio) is no state: no clip goes to or from it.

A clip is the last `seconds` of 16 kHz audio up to the window that made the change (default 20 s:
the window plus history). The directory is bounded: the oldest clips go first. Rename a clip by
the sample pattern into samples/ and it becomes training data. A clip that cannot be written (a
full disk) leaves no file behind and waits in memory (the latest MAX_WAITING_CLIPS) to be written
on a later hop; the error names the directory.
"""

from __future__ import annotations

import collections
import dataclasses
import io
import json
import logging
import time
from pathlib import Path
from typing import Callable

import numpy as np
import soundfile

from edge.core.decision import per_appliance
from edge.core.files import atomic_path
from edge.core.output import error_text
from edge.engine.hop import HopLine

log = logging.getLogger("humwatch.clips")
MAX_WAITING_CLIPS = 3  # about 1.3 MB of audio each at 20 s


@dataclasses.dataclass(frozen=True)
class Clip:
    """A change and its audio, captured at the hop it happened."""

    line: HopLine
    old: str
    new: str
    audio: np.ndarray
    wall: float


class ClipWriter:
    """A live-line sink; `recent_audio` returns the monitor's latest 16 kHz audio."""

    def __init__(self, directory: Path, recent_audio: Callable[[], np.ndarray], sample_rate: int,
                 seconds: float = 20.0, max_mb: float = 500.0) -> None:
        self.directory = Path(directory)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise ValueError(f"--clips {directory}: cannot make this folder ({error.strerror}); "
                             "give a folder the monitor may write") from error
        self.recent_audio = recent_audio
        self.sample_rate = sample_rate
        self.seconds = seconds
        self.max_bytes = int(max_mb * 1e6)
        self.previous: str | None = None
        self.waiting: collections.deque[Clip] = collections.deque()
        self.lost = 0  # clips given up after waiting

    def __call__(self, line: HopLine) -> None:
        """Capture a change; write every clip that waits (OSError, naming the directory, while that fails)."""
        status, previous = line.debounced_status, self.previous
        self.previous = status if line.decided else None  # after a hop that decided nothing, no change to capture
        if line.decided and previous is not None and status != previous:
            if len(self.waiting) >= MAX_WAITING_CLIPS:
                self.waiting.popleft()
                self.lost += 1
            audio = self.recent_audio()[-int(self.seconds * self.sample_rate):]
            self.waiting.append(Clip(line, previous, status, audio, time.time()))
        while self.waiting:
            try:
                self.write(self.waiting[0])
            except OSError as error:
                lost = f", {self.lost} given up" if self.lost else ""
                raise OSError(error.errno, f"--clips {self.directory}: {error_text(error)}; "
                                           f"{len(self.waiting)} clips wait to be written{lost}") from None
            self.waiting.popleft()
            self.enforce_bound()

    def write(self, clip: Clip) -> Path:
        """The FLAC and its sidecar, each complete or absent (encoded in memory, renamed into place)."""
        line = clip.line
        stem = f"{time.strftime('%Y%m%d-%H%M%S', time.localtime(clip.wall))}-t{line.t:09.1f}-{clip.old}-to-{clip.new}"
        encoded = io.BytesIO()
        soundfile.write(encoded, clip.audio, self.sample_rate, format="FLAC", subtype="PCM_24")
        sidecar = json.dumps({
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(clip.wall)), "t": line.t,
            "old_state": clip.old, "new_state": clip.new, "duration_sec": len(clip.audio) / self.sample_rate,
            "sample_rate": self.sample_rate, **per_appliance("p_{}", line.probabilities),
            **per_appliance("median_{}", line.medians),
        }, indent=2) + "\n"
        path = self.directory / f"{stem}.flac"
        # the sidecar lands first, the FLAC (which makes it a clip) last; neither is renamed before both are written
        with atomic_path(path) as flac, atomic_path(path.with_suffix(".json")) as json_file:
            flac.write_bytes(encoded.getvalue())
            json_file.write_text(sidecar, encoding="utf-8")
        log.info("clip written: %s (%s -> %s)", path, clip.old, clip.new)
        return path

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
