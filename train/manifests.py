"""Manifests: files.csv (one row per recording) and windows.parquet (one row per analysis window).

Columns keep the original system's names (path, duration_sec, sample_rate, ac, fridge, state,
daypart, recording_id / recording_id, path, start_sec, end_sec, rms, ac, fridge) and add sha256,
channels, window_index and an outlier flag (the loudest 1 % of each file's windows, by RMS, which
training leaves out). manifest.yaml beside them records the window config they were cut with and
the directory relative paths start from, so the manifests read the same from any directory.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from edge.core.audio import AudioError, AudioFile, iter_windows
from edge.core.defaults import WindowConfig
from edge.core.files import atomic_path, sha256_file, walk_files
from edge.core.labels import NAME_PATTERN, TAG_RULE, is_audio, parse_sample_name, shown_name
from train.yamlfile import read_yaml, write_yaml_atomic

FILES_CSV = "files.csv"
WINDOWS_PARQUET = "windows.parquet"
MANIFEST_YAML = "manifest.yaml"
OUTLIER_FRACTION = 0.01


class ManifestError(ValueError):
    """Samples or manifests that cannot be used; the message says what to fix."""


def _display_path(path: Path) -> str:
    """Relative to the working directory when below it (as in the original manifests)."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path.resolve())


def find_samples(samples_dir: Path) -> tuple[list[Path], list[str]]:
    """Audio files in samples_dir and its subdirectories, and the error for each folder that could not
    be read; every file must be named by the pattern, and no two may share a name (the name is the
    recording id)."""
    if not samples_dir.is_dir():
        raise ManifestError(f"{samples_dir}: no such samples directory (record some, or run 'humwatch synth {samples_dir}')")
    files, unreadable = walk_files(samples_dir)
    audio = [p for p in files if is_audio(p)]
    if not audio and not unreadable:
        raise ManifestError(f"{samples_dir}: no audio files (.m4a .aac .mp3 .wav .flac .ogg) found")
    bad = [shown_name(p.relative_to(samples_dir)) for p in audio if parse_sample_name(p) is None]
    if bad:
        raise ManifestError(
            f"{samples_dir}: {len(bad)} audio file name(s) do not say what was running: {', '.join(bad)}. "
            f"Rename them as {NAME_PATTERN}.<ext>, e.g. ac-off-fridge-on-night.m4a; {TAG_RULE}"
        )
    by_stem: dict[str, list[str]] = {}
    for path in audio:
        by_stem.setdefault(path.stem, []).append(str(path.relative_to(samples_dir)))
    clashes = {stem: paths for stem, paths in by_stem.items() if len(paths) > 1}
    if clashes:
        raise ManifestError(f"{samples_dir}: recordings must have different names, but "
                            + "; ".join(" and ".join(paths) for paths in clashes.values())
                            + " share one; add a -TAG to tell them apart")
    return audio, list(unreadable.values())


def outlier_flags(rms: np.ndarray, fraction: float = OUTLIER_FRACTION) -> np.ndarray:
    """True for the floor(fraction * n) loudest windows (117 windows -> 1, as in the original)."""
    flags = np.zeros(len(rms), dtype=bool)
    count = math.floor(len(rms) * fraction)
    if count:
        flags[np.argsort(rms, kind="stable")[-count:]] = True
    return flags


def describe_file(path: Path, window: WindowConfig) -> tuple[dict, pd.DataFrame]:
    """The files.csv row and the windows.parquet rows of one recording (streamed, never held whole)."""
    labels = parse_sample_name(path)
    audio = AudioFile(path)
    rms = np.array([np.sqrt(np.mean(np.square(samples, dtype=np.float64))) for _, samples in iter_windows(audio, window)])
    starts = np.arange(len(rms)) * window.hop_samples
    shown = _display_path(path)
    file_row = {
        "path": shown,
        "duration_sec": audio.duration_sec,
        "sample_rate": audio.sample_rate,
        "ac": int(labels.ac),
        "fridge": int(labels.fridge),
        "state": labels.state,
        "daypart": labels.daypart,
        "recording_id": path.stem,
        "sha256": sha256_file(path),
        "channels": audio.channels,
    }
    window_rows = pd.DataFrame({
        "recording_id": path.stem,
        "path": shown,
        "start_sec": starts / window.sample_rate,
        "end_sec": (starts + window.window_samples) / window.sample_rate,
        "rms": rms,
        "ac": int(labels.ac),
        "fridge": int(labels.fridge),
        "window_index": np.arange(len(starts)),
        "outlier": outlier_flags(rms),
    })
    return file_row, window_rows


def prepare(samples_dir: Path, manifests_dir: Path, window: WindowConfig = WindowConfig()) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Scan samples_dir and write files.csv, windows.parquet and manifest.yaml atomically.

    Every file is tried; unusable ones (undecodable, too short, unreadable) and unreadable folders are
    listed together in one error."""
    rows, window_frames = [], []
    audio, problems = find_samples(samples_dir)
    for path in audio:
        try:
            file_row, window_rows = describe_file(path, window)
        except AudioError as error:
            problems.append(str(error))
            continue
        rows.append(file_row)
        window_frames.append(window_rows)
    if problems:
        raise ManifestError(f"{len(problems)} recording(s) or folder(s) cannot be used; fix or remove them, "
                            f"then run prepare again:\n  "
                            + "\n  ".join(problems))
    files = pd.DataFrame(rows)
    windows = pd.concat(window_frames, ignore_index=True)
    manifests_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(manifests_dir / FILES_CSV) as temporary:
        files.to_csv(temporary, index=False)
    with atomic_path(manifests_dir / WINDOWS_PARQUET) as temporary:
        windows.to_parquet(temporary, index=False)
    write_yaml_atomic(manifests_dir / MANIFEST_YAML, {
        "window": window.to_dict(),
        "outlier_fraction": OUTLIER_FRACTION,
        "base_dir": str(Path.cwd().resolve()),
    })
    return files, windows


def load_manifests(manifests_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame, WindowConfig]:
    """Read what :func:`prepare` wrote, with files.csv's paths made absolute; a clear error when it is
    missing or was not finished."""
    needed = [manifests_dir / name for name in (FILES_CSV, WINDOWS_PARQUET, MANIFEST_YAML)]
    missing = [str(p) for p in needed if not p.is_file()]
    if missing:
        raise ManifestError(f"missing manifest file(s) {', '.join(missing)}: run 'humwatch prepare' first")
    files = pd.read_csv(needed[0])
    windows = pd.read_parquet(needed[1])
    meta = read_yaml(needed[2])
    base = Path(meta.get("base_dir", "."))
    files["path"] = [str(base / Path(path).expanduser()) for path in files.path]
    return files, windows, WindowConfig.from_dict(meta["window"])
