"""Stream: live processing simulated over a file, one line per hop (the file streams from disk)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Iterator

import numpy as np

from edge.core.audio import AudioFile, iter_windows
from edge.core.decision import StreamDecider
from edge.core.defaults import DecisionConfig
from edge.monitor.hop import HopLine
from edge.monitor.runtime import Classifier


def infer_window(classifier: Classifier, window: np.ndarray) -> tuple[np.ndarray, float]:
    """(probabilities [2], milliseconds) for one window."""
    start = time.perf_counter()
    probs = classifier.predict(window[None])[0]
    return probs, (time.perf_counter() - start) * 1000


def stream_file(classifier: Classifier, path: Path, decision: DecisionConfig, realtime: bool = False) -> Iterator[HopLine]:
    """Lines as a live monitor would have printed them; `t` is the audio time at each window's end."""
    window = classifier.bundle.window
    decider = StreamDecider(decision, window.hop_sec)
    started = time.monotonic()
    for t, audio in iter_windows(AudioFile(path), window):
        if realtime:
            time.sleep(max(0.0, started + t - time.monotonic()))
        probs, infer_ms = infer_window(classifier, audio)
        yield HopLine.build(t, probs, decider.update(float(probs[0]), float(probs[1])), infer_ms)
