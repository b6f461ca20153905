"""Stream: live processing simulated over a file, one line per hop."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Iterator

import numpy as np

from edge.core.audio import AudioError, load_windows
from edge.core.decision import StreamDecider, StreamUpdate
from edge.core.defaults import DecisionConfig
from edge.monitor.runtime import Classifier


def hop_line(t: float, probs: np.ndarray, update: StreamUpdate, infer_ms: float) -> dict:
    """The JSON line of one hop (stream and live)."""
    return {
        "t": round(t, 3), "status": update.status, "debounced_status": update.debounced_status,
        "p_ac": float(probs[0]), "p_fridge": float(probs[1]),
        "median_ac": update.median_ac, "median_fridge": update.median_fridge,
        "ac_on": update.ac_on, "fridge_on": update.fridge_on, "infer_ms": round(infer_ms, 1),
    }


def infer_window(classifier: Classifier, window: np.ndarray) -> tuple[np.ndarray, float]:
    """(probabilities [2], milliseconds) for one window."""
    start = time.perf_counter()
    probs = classifier.predict(window[None])[0]
    return probs, (time.perf_counter() - start) * 1000


def stream_file(classifier: Classifier, path: Path, decision: DecisionConfig, realtime: bool = False,
                only_changes: bool = False) -> Iterator[dict]:
    """Lines as a live monitor would have printed them; `t` is the audio time at each window's end."""
    window = classifier.bundle.window
    windows, decoded = load_windows(path, window)
    if len(windows) == 0:
        raise AudioError(f"{path}: {decoded.duration_sec:.2f} s is shorter than one {window.window_sec:g} s window")
    decider = StreamDecider(decision)
    started = time.monotonic()
    for index, audio in enumerate(windows):
        t = (index * window.hop_samples + window.window_samples) / window.sample_rate
        if realtime:
            time.sleep(max(0.0, started + t - time.monotonic()))
        probs, infer_ms = infer_window(classifier, audio)
        update = decider.update(float(probs[0]), float(probs[1]))
        if update.changed or not only_changes:
            yield hop_line(t, probs, update, infer_ms)
