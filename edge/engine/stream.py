"""Stream: live processing simulated over a file, one line per hop (the file streams from disk)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Iterator

from edge.core.audio import AudioFile, too_short
from edge.engine.detector import Detector
from edge.engine.hop import HopLine


def stream_file(detector: Detector, path: Path, realtime: bool = False) -> Iterator[HopLine]:
    """Lines as a live monitor would have printed them; `t` is the audio time at each window's end."""
    audio = AudioFile(path)
    started, count = time.monotonic(), 0

    def paced(lines):
        nonlocal count
        for line in lines:
            if realtime:
                time.sleep(max(0.0, started + line.t - time.monotonic()))
            count += 1
            yield line

    for chunk in audio.native_chunks():
        detector.push(chunk, audio.sample_rate)
        yield from paced(detector.decide())
    yield from paced(detector.flush())
    if count == 0:
        raise too_short(path, audio.duration_sec, detector.classifier.bundle.window)
