"""Batch: one decision per audio file (median over all its windows)."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

from edge.core.audio import AudioError, load_windows
from edge.core.decision import decide_file
from edge.core.defaults import DecisionConfig
from edge.core.labels import is_audio
from edge.monitor.runtime import Classifier


def expand_paths(paths: list[Path]) -> Iterator[Path]:
    """Files as given; directories as the audio files directly inside them, sorted."""
    for path in paths:
        if path.is_dir():
            yield from sorted(p for p in path.iterdir() if p.is_file() and is_audio(p))
        else:
            yield path


def classify_file(classifier: Classifier, path: Path, decision: DecisionConfig) -> dict:
    """The batch line of one file; raises AudioError for unusable audio."""
    window = classifier.bundle.window
    windows, decoded = load_windows(path, window)
    result = decide_file(classifier.predict(windows), decision)
    return {"path": str(path), "status": result.status, "p_ac": result.p_ac, "p_fridge": result.p_fridge,
            "windows": len(windows), "duration_sec": decoded.duration_sec}


def run_batch(classifier: Classifier, paths: list[Path], decision: DecisionConfig) -> Iterator[dict]:
    """One line per file; a file that fails yields a line with `error` and the others still run."""
    for path in expand_paths(paths):
        try:
            yield classify_file(classifier, path, decision)
        except AudioError as error:
            yield {"path": str(path), "error": str(error)}
