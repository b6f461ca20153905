"""Batch: one decision per audio file (median over all its windows), streamed from disk."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import numpy as np

from edge.core.audio import AudioError, AudioFile, iter_windows
from edge.core.decision import DecisionConfig, decide_file
from edge.core.files import walk_files
from edge.core.hearing import NO_SIGNAL, SIGNAL_FLOOR_DBFS, level_dbfs, no_signal_reason
from edge.core.labels import control_characters_error, is_audio
from edge.engine.classifier import Classifier

if TYPE_CHECKING:
    from edge.engine.detector import Detector


class NoAudioError(ValueError):
    """Paths that hold no audio file at all; the message lists what was searched."""


def expand_paths(paths: list[Path]) -> tuple[list[Path], dict[Path, str]]:
    """Files as given; directories as every audio file below them (subdirectories too), sorted; and
    the error for each folder that could not be read."""
    found: list[Path] = []
    unreadable: dict[Path, str] = {}
    for path in paths:
        if path.is_dir():
            files, problems = walk_files(path)
            found += (p for p in files if is_audio(p))
            unreadable |= problems
        else:
            found.append(path)
    if not found and not unreadable:
        raise NoAudioError(f"no audio files (.m4a .aac .mp3 .wav .flac .ogg) in {', '.join(map(str, paths))}")
    return found, unreadable


def classify_file(classifier: Classifier, path: Path, decision: DecisionConfig,
                  signal_floor_dbfs: float = SIGNAL_FLOOR_DBFS) -> dict:
    """The batch line of one file: the median over its windows that carry a signal (the others are
    counted in `no_signal_windows`); status no-signal when none does. Raises AudioError for
    unusable audio or a name with control characters."""
    if refusal := control_characters_error(path):
        raise AudioError(refusal)
    audio = AudioFile(path)
    probs, silent = [], []
    for _, window in iter_windows(audio, classifier.bundle.window):
        level = level_dbfs(window)
        if level < signal_floor_dbfs:
            silent.append(level)
        else:
            probs.append(classifier.predict(window[None]))
    quiet = {"no_signal_windows": len(silent)} if silent else {}
    if not probs:
        return {"path": str(path), "status": NO_SIGNAL, "reason": no_signal_reason(max(silent), signal_floor_dbfs),
                "windows": 0, **quiet, "duration_sec": audio.duration_sec}
    result = decide_file(np.concatenate(probs), decision)
    return {"path": str(path), **result.fields(), "windows": len(probs), **quiet, "duration_sec": audio.duration_sec}


def run_batch(detector: Detector, paths: list[Path]) -> Iterator[dict]:
    """One line per file, and one per folder that could not be read; a file that fails yields a line
    with `error` and the others still run."""
    found, unreadable = expand_paths(paths)
    for folder, error in unreadable.items():
        yield {"path": str(folder), "error": error}
    for path in found:
        try:
            yield detector.classify_file(path)
        except AudioError as error:
            yield {"path": str(path), "error": str(error)}
