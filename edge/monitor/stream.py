"""Stream: live processing simulated over a file, one line per hop (the file streams from disk)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Iterator

from edge.core.audio import AudioFile, Windower, too_short
from edge.core.defaults import DecisionConfig
from edge.monitor.hop import HopDecider, HopLine
from edge.monitor.pacing import HopPlanner
from edge.monitor.runtime import Classifier


def stream_file(classifier: Classifier, path: Path, decision: DecisionConfig, planner: HopPlanner,
                realtime: bool = False) -> Iterator[HopLine]:
    """Lines as a live monitor would have printed them; `t` is the audio time at each window's end."""
    window = classifier.bundle.window
    windower = Windower(window.window_samples, window.hop_samples, window.sample_rate)
    decide = HopDecider(classifier, decision, planner, windower)
    audio = AudioFile(path)
    started, count = time.monotonic(), 0
    for chunk in audio.chunks(window.sample_rate):
        windower.push(chunk)
        for t, samples in windower.windows():
            if realtime:
                time.sleep(max(0.0, started + t - time.monotonic()))
            count += 1
            yield decide(t, samples)
    if count == 0:
        raise too_short(path, audio.duration_sec, window)
