"""On-disk cache of frozen-BEATs frame embeddings, so stage 1 never encodes a window twice.

One float16 array [windows, T, D] per (recording, view). The clean view (0) is keyed by the
checkpoint's sha256, the window config and the recording's sha256; augmented views (1..K) also by
the augmentation seed and the background pool they mix from (train.augment.background_ids). Files are written atomically, so an
interrupted build leaves nothing that looks complete, and a later run reuses every finished file.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from tqdm import tqdm

from edge.core.audio import load_windows
from edge.core.files import atomic_path
from edge.core.window import WindowConfig
from train.augment import AugmentConfig, augment_waveform, spec_augment
from train.beats import BEATs
from train.device import NUMERICS, encode_batch

if TYPE_CHECKING:
    from train.cluster_cache import ClusterFill


@dataclasses.dataclass(frozen=True)
class Recording:
    """What the cache needs to know of one recording."""

    recording_id: str
    path: Path
    sha256: str


@dataclasses.dataclass
class CacheStats:
    encoded_windows: int = 0
    reused_windows: int = 0


def pool_digest(pool_recordings: list[Recording]) -> str:
    return hashlib.sha256("\n".join(sorted(r.sha256 for r in pool_recordings)).encode()).hexdigest()[:12]


def progress_bar(total: int) -> tqdm:
    """The one progress bar of a cache fill, local or on a cluster."""
    return tqdm(total=total, desc="encoding windows", unit="win")


@dataclasses.dataclass(eq=False)
class Views:
    """How the windows of a recording become its cached views: view 0 clean, views 1..K augmented,
    each window's draws from a generator seeded by (seed, view, recording, window index)."""

    seed: int
    augment: AugmentConfig
    pool: np.ndarray  # the background windows mixed in (train.augment.background_ids), all in one array

    def waveform(self, recording_sha256: str, window: np.ndarray, index: int, view: int) -> tuple[np.ndarray, np.random.Generator]:
        """Window `index` of a recording as augmented view `view` (>= 1) sees it, and the generator
        to draw that view's SpecAugment from: the same audio every time, for the cache and the student."""
        rng = np.random.default_rng([self.seed, view, int(recording_sha256[:12], 16), index])
        return augment_waveform(window, rng, self.pool, self.augment), rng

    def encode(self, encoder: BEATs, recording_sha256: str, windows: np.ndarray, view: int, device: torch.device,
               progress: Callable[[int], object]) -> np.ndarray:
        """Frame embeddings [windows, T, D] (float16) of one view, `progress(n)` after each encoder call."""
        outputs, size = [], encode_batch(device)
        for start in range(0, len(windows), size):
            batch = windows[start : start + size]
            with torch.inference_mode():
                if view == 0:
                    fbank = encoder.fbank(torch.tensor(batch).to(device))
                else:
                    fbank = self._augmented_fbank(encoder, recording_sha256, batch, start, view, device)
                outputs.append(encoder.encode_fbank(fbank).to(torch.float16).cpu().numpy())
            progress(len(batch))
        return np.concatenate(outputs)

    def _augmented_fbank(self, encoder: BEATs, recording_sha256: str, batch: np.ndarray, start: int, view: int,
                         device: torch.device) -> torch.Tensor:
        fbanks = []
        for offset, window in enumerate(batch):
            waveform, rng = self.waveform(recording_sha256, window, start + offset, view)
            fbank = encoder.fbank(torch.from_numpy(waveform)[None].to(device))[0]
            fbanks.append(spec_augment(fbank, rng, self.augment))
        return torch.stack(fbanks)


class EmbeddingCache:
    def __init__(self, root: Path, checkpoint_sha256: str, window: WindowConfig, seed: int,
                 pool: list[Recording], augment: AugmentConfig = AugmentConfig(), device: torch.device | None = None) -> None:
        # Keyed by the numeric mode, not the device: see train.device for why cpu / cuda / mps share it.
        self.directory = (Path(root) / checkpoint_sha256[:16] /
                          f"{NUMERICS}-sr{window.sample_rate}-w{window.window_samples}-h{window.hop_samples}")
        self.checkpoint_sha256 = checkpoint_sha256
        self.device = device or torch.device("cpu")
        self.window = window
        self.seed = seed
        self.pool = pool
        self.augment = augment
        self._pool_tag = f"seed{seed}-pool{pool_digest(pool)}"

    def path(self, recording: Recording, view: int) -> Path:
        name = "clean.npy" if view == 0 else f"{self._pool_tag}-view{view}.npy"
        return self.directory / recording.sha256[:16] / name

    def load(self, recording: Recording, view: int) -> np.ndarray:
        return np.load(self.path(recording, view), mmap_mode="r")

    def store(self, recording: Recording, view: int, embeddings: np.ndarray) -> None:
        """Write one view atomically: an interrupted write leaves nothing that looks complete."""
        with atomic_path(self.path(recording, view)) as temporary:
            with open(temporary, "wb") as handle:
                np.save(handle, embeddings)

    def missing(self, recordings: list[Recording], views: int) -> tuple[list[tuple[Recording, int]], CacheStats]:
        """The (recording, view) not cached yet, views of a recording together, and the windows reused."""
        stats, todo = CacheStats(), []
        for recording in recordings:
            for view in range(views + 1):
                if self.path(recording, view).is_file():
                    stats.reused_windows += len(self.load(recording, view))
                else:
                    todo.append((recording, view))
        return todo, stats

    def build(self, encoder: BEATs, recordings: list[Recording], views: int, cluster: ClusterFill | None = None) -> CacheStats:
        """Encode every (recording, view) not cached yet: view 0 clean, views 1..views augmented; here,
        or on the Ray workers of `cluster` (train.cluster_cache), which write the same files."""
        todo, stats = self.missing(recordings, views)
        if todo:
            stats.encoded_windows = cluster.fill(todo) if cluster else self._fill(encoder, todo)
        return stats

    def _fill(self, encoder: BEATs, todo: list[tuple[Recording, int]]) -> int:
        audio = {r.recording_id: self.windows(r) for r in {r for r, _ in todo}}
        total = sum(len(audio[r.recording_id]) for r, _ in todo)
        with progress_bar(total) as progress:
            for recording, view in todo:
                self.store(recording, view, self.views.encode(encoder, recording.sha256, audio[recording.recording_id], view,
                                                              self.device, progress.update))
        return total

    def windows(self, recording: Recording) -> np.ndarray:
        """Every window of a recording, as the cache encodes them."""
        return load_windows(recording.path, self.window)[0]

    @functools.cached_property
    def views(self) -> Views:
        """The views of this cache (its pool decoded once, when first needed)."""
        pool = np.concatenate([self.windows(r) for r in self.pool]) if self.pool else np.zeros((0, 1))
        return Views(self.seed, self.augment, pool)

    def augmented_waveform(self, recording: Recording, window: np.ndarray, index: int, view: int) -> tuple[np.ndarray, np.random.Generator]:
        """Window `index` of `recording` as augmented view `view` (>= 1) sees it (see Views.waveform)."""
        return self.views.waveform(recording.sha256, window, index, view)
