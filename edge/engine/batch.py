"""Batch: one decision per audio file (median over all its windows), streamed from disk."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

from edge.core.audio import AudioError
from edge.core.files import walk_files
from edge.core.labels import is_audio
from edge.engine.detector import Detector
from edge.engine.results import FileFailure, FileResult


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


def run_batch(detector: Detector, paths: list[Path]) -> Iterator[FileResult | FileFailure]:
    """One result per file, and a failure per folder that could not be read; a file that fails is a
    failure and the others still run."""
    found, unreadable = expand_paths(paths)
    for folder, error in unreadable.items():
        yield FileFailure(str(folder), error)
    for path in found:
        try:
            yield detector.classify_file(path)
        except AudioError as error:
            yield FileFailure(str(path), str(error))
