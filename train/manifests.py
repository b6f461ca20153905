"""Manifests: files.csv (one row per recording) and windows.parquet (one row per analysis window).

The project's appliances are those its recordings name, in order of first appearance (files
sorted by path). files.csv: path, duration_sec, sample_rate, one column per appliance (1 on, 0 off,
empty when the recording does not name it: masked, never "off"), state (empty when the named ones
cannot decide it), daypart, recording_id, sha256, channels; for the seed exactly the original
system's ac, fridge columns. windows.parquet: recording_id, path, start_sec, end_sec, rms, one
float column per appliance (1.0 / 0.0 / NaN), window_index and an outlier flag (the loudest 1 % of
each file's windows, by RMS, which training leaves out). manifest.yaml beside them records the
appliances (``labels``), the window config they were cut with and the directory relative paths
start from, so the manifests read the same from any directory.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from edge.core.audio import AudioError, AudioFile, iter_windows
from edge.core.files import atomic_path, sha256_file, walk_files
from edge.core.labels import (
    APPLIANCE_RULE,
    NAME_PATTERN,
    SEED,
    TAG_RULE,
    Appliances,
    LabelError,
    SampleName,
    is_audio,
    project_appliances,
    read_sample_name,
    shown_name,
)
from edge.core.window import WindowConfig
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


class Manifests(NamedTuple):
    """What :func:`load_manifests` reads."""

    files: pd.DataFrame
    windows: pd.DataFrame
    window: WindowConfig
    appliances: Appliances  # the project's, in first-appearance order (priority: the same)


def named_labels(row: Mapping, names: Sequence[str]) -> dict[str, bool]:
    """The appliances a files.csv / windows.parquet row names and whether each was on; an empty
    (NaN) cell is an appliance the recording does not name."""
    return {name: bool(row[name]) for name in names if not pd.isna(row[name])}


def find_samples(samples_dir: Path) -> tuple[dict[Path, SampleName], list[str]]:
    """Audio files in samples_dir and its subdirectories (sorted by path) with what their names say,
    and the error for each folder that could not be read; every file must be named by the pattern
    (one error lists each bad name with its reason), and no two may share a name (the name is the
    recording id)."""
    if not samples_dir.is_dir():
        raise ManifestError(f"{samples_dir}: no such samples directory (record some, or run 'humwatch synth {samples_dir}')")
    files, unreadable = walk_files(samples_dir)
    audio = [p for p in files if is_audio(p)]
    if not audio and not unreadable:
        raise ManifestError(f"{samples_dir}: no audio files (.m4a .aac .mp3 .wav .flac .ogg) found")
    named, bad = {}, []
    for path in audio:
        try:
            named[path] = read_sample_name(path)
        except LabelError as error:
            bad.append(f"{shown_name(path.relative_to(samples_dir))}: {error}")
    if bad:
        raise ManifestError(
            f"{samples_dir}: {len(bad)} audio file name(s) do not say what was running:\n  " + "\n  ".join(bad)
            + f"\nRename them as {NAME_PATTERN}.<ext>, e.g. ac-off-fridge-on-night.m4a or "
            f"ac-off-fridge-on-dehumidifier-on-night-take-2.flac; {APPLIANCE_RULE}; {TAG_RULE}"
        )
    by_stem: dict[str, list[str]] = {}
    for path in audio:
        by_stem.setdefault(path.stem, []).append(str(path.relative_to(samples_dir)))
    clashes = {stem: paths for stem, paths in by_stem.items() if len(paths) > 1}
    if clashes:
        raise ManifestError(f"{samples_dir}: recordings must have different names, but "
                            + "; ".join(" and ".join(paths) for paths in clashes.values())
                            + " share one; add a -TAG to tell them apart")
    return named, list(unreadable.values())


def outlier_flags(rms: np.ndarray, fraction: float = OUTLIER_FRACTION) -> np.ndarray:
    """True for the floor(fraction * n) loudest windows (117 windows -> 1, as in the original)."""
    flags = np.zeros(len(rms), dtype=bool)
    count = math.floor(len(rms) * fraction)
    if count:
        flags[np.argsort(rms, kind="stable")[-count:]] = True
    return flags


def describe_file(path: Path, sample: SampleName, appliances: Appliances,
                  window: WindowConfig) -> tuple[dict, pd.DataFrame]:
    """The files.csv row and the windows.parquet rows of one recording (streamed, never held whole);
    an appliance its name does not mention is None (files.csv) / NaN (windows.parquet)."""
    labels = {name: int(sample.labels[name]) if name in sample.labels else None for name in appliances.names}
    audio = AudioFile(path)
    rms = np.array([np.sqrt(np.mean(np.square(samples, dtype=np.float64))) for _, samples in iter_windows(audio, window)])
    starts = np.arange(len(rms)) * window.hop_samples
    shown = _display_path(path)
    file_row = {
        "path": shown,
        "duration_sec": audio.duration_sec,
        "sample_rate": audio.sample_rate,
        **labels,
        "state": appliances.status(sample.labels),
        "daypart": sample.daypart,
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
        **{name: np.nan if value is None else float(value) for name, value in labels.items()},
        "window_index": np.arange(len(starts)),
        "outlier": outlier_flags(rms),
    })
    return file_row, window_rows


def prepare(samples_dir: Path, manifests_dir: Path, window: WindowConfig = WindowConfig()) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Scan samples_dir and write files.csv, windows.parquet and manifest.yaml atomically.

    Every file is tried; unusable ones (undecodable, too short, unreadable) and unreadable folders are
    listed together in one error."""
    rows, window_frames = [], []
    samples, problems = find_samples(samples_dir)
    appliances = project_appliances(samples.values()) if samples else None  # none: only unreadable folders
    for path, sample in samples.items():
        try:
            file_row, window_rows = describe_file(path, sample, appliances, window)
        except AudioError as error:
            problems.append(str(error))
            continue
        rows.append(file_row)
        window_frames.append(window_rows)
    if problems:
        raise ManifestError(f"{len(problems)} recording(s) or folder(s) cannot be used; fix or remove them, "
                            f"then run prepare again:\n  "
                            + "\n  ".join(problems))
    files = pd.DataFrame(rows).astype({name: "Int64" for name in appliances.names})  # 1 / 0 / empty
    windows = pd.concat(window_frames, ignore_index=True)
    manifests_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(manifests_dir / FILES_CSV) as temporary:
        files.to_csv(temporary, index=False)
    with atomic_path(manifests_dir / WINDOWS_PARQUET) as temporary:
        windows.to_parquet(temporary, index=False)
    write_yaml_atomic(manifests_dir / MANIFEST_YAML, {
        "labels": list(appliances.names),
        "window": window.to_dict(),
        "outlier_fraction": OUTLIER_FRACTION,
        "base_dir": str(Path.cwd().resolve()),
    })
    return files, windows


def load_manifests(manifests_dir: Path) -> Manifests:
    """Read what :func:`prepare` wrote, with files.csv's paths made absolute; a clear error when it is
    missing or was not finished. A manifest.yaml without ``labels`` (written before any appliance
    could be named) holds the seed's two."""
    needed = [manifests_dir / name for name in (FILES_CSV, WINDOWS_PARQUET, MANIFEST_YAML)]
    missing = [str(p) for p in needed if not p.is_file()]
    if missing:
        raise ManifestError(f"missing manifest file(s) {', '.join(missing)}: run 'humwatch prepare' first")
    files = pd.read_csv(needed[0])
    windows = pd.read_parquet(needed[1])
    meta = read_yaml(needed[2])
    base = Path(meta.get("base_dir", "."))
    files["path"] = [str(base / Path(path).expanduser()) for path in files.path]
    appliances = Appliances.parse(meta.get("labels", SEED.names))
    for path, frame in zip(needed, (files, windows)):
        missing = [name for name in appliances.names if name not in frame.columns]
        if missing:
            raise ManifestError(f"{path}: no column for {', '.join(missing)} (manifest.yaml's labels); "
                                "run 'humwatch prepare' again")
    return Manifests(files, windows, WindowConfig.from_dict(meta["window"]), appliances)
