"""On-disk cache of frozen-BEATs frame embeddings, so stage 1 never encodes a window twice.

One float16 array [windows, T, D] per (recording, view). The clean view (0) is keyed by the
checkpoint's sha256, the window config and the recording's sha256; augmented views (1..K) also by
the augmentation seed and the background pool they mix from (train.augment.background_ids). Files are written atomically, so an
interrupted build leaves nothing that looks complete, and a later run reuses every finished file.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from edge.core.audio import load_windows
from edge.core.defaults import WindowConfig
from edge.core.files import atomic_path
from train.augment import AugmentConfig, augment_waveform, spec_augment
from train.beats import BEATs
from train.device import NUMERICS, encode_batch


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


class EmbeddingCache:
    def __init__(self, root: Path, checkpoint_sha256: str, window: WindowConfig, seed: int,
                 pool: list[Recording], augment: AugmentConfig = AugmentConfig(), device: torch.device | None = None) -> None:
        # Keyed by the numeric mode, not the device: see train.device for why cpu / cuda / mps share it.
        self.directory = (Path(root) / checkpoint_sha256[:16] /
                          f"{NUMERICS}-sr{window.sample_rate}-w{window.window_samples}-h{window.hop_samples}")
        self.device = device or torch.device("cpu")
        self.window = window
        self.seed = seed
        self.pool = pool
        self.augment = augment
        self._pool_tag = f"seed{seed}-pool{pool_digest(pool)}"
        self._pool_windows: np.ndarray | None = None

    def path(self, recording: Recording, view: int) -> Path:
        name = "clean.npy" if view == 0 else f"{self._pool_tag}-view{view}.npy"
        return self.directory / recording.sha256[:16] / name

    def load(self, recording: Recording, view: int) -> np.ndarray:
        return np.load(self.path(recording, view), mmap_mode="r")

    def build(self, encoder: BEATs, recordings: list[Recording], views: int) -> CacheStats:
        """Encode every (recording, view) not cached yet: view 0 clean, views 1..views augmented."""
        stats = CacheStats()
        todo = []
        for recording in recordings:
            for view in range(views + 1):
                if self.path(recording, view).is_file():
                    stats.reused_windows += len(self.load(recording, view))
                else:
                    todo.append((recording, view))
        if not todo:
            return stats
        audio = {r.recording_id: self._windows(r) for r in {r for r, _ in todo}}
        total = sum(len(audio[r.recording_id]) for r, _ in todo)
        with tqdm(total=total, desc="encoding windows", unit="win") as progress:
            for recording, view in todo:
                embeddings = self._encode(encoder, recording, audio[recording.recording_id], view, progress)
                with atomic_path(self.path(recording, view)) as temporary:
                    with open(temporary, "wb") as handle:
                        np.save(handle, embeddings)
                stats.encoded_windows += len(embeddings)
        return stats

    def _windows(self, recording: Recording) -> np.ndarray:
        return load_windows(recording.path, self.window)[0]

    def _pool_array(self) -> np.ndarray:
        if self._pool_windows is None:
            self._pool_windows = np.concatenate([self._windows(r) for r in self.pool]) if self.pool else np.zeros((0, 1))
        return self._pool_windows

    def _encode(self, encoder: BEATs, recording: Recording, windows: np.ndarray, view: int, progress: tqdm) -> np.ndarray:
        outputs, size = [], encode_batch(self.device)
        for start in range(0, len(windows), size):
            batch = windows[start : start + size]
            with torch.inference_mode():
                if view == 0:
                    fbank = encoder.fbank(torch.tensor(batch).to(self.device))
                else:
                    fbank = self._augmented_fbank(encoder, recording, batch, start, view)
                outputs.append(encoder.encode_fbank(fbank).to(torch.float16).cpu().numpy())
            progress.update(len(batch))
        return np.concatenate(outputs)

    def augmented_waveform(self, recording: Recording, window: np.ndarray, index: int, view: int) -> tuple[np.ndarray, np.random.Generator]:
        """Window `index` of `recording` as augmented view `view` (>= 1) sees it, and the generator
        to draw that view's SpecAugment from: the same audio every time, for the cache and the student."""
        rng = np.random.default_rng([self.seed, view, int(recording.sha256[:12], 16), index])
        return augment_waveform(window, rng, self._pool_array(), self.augment), rng

    def _augmented_fbank(self, encoder: BEATs, recording: Recording, batch: np.ndarray, start: int, view: int) -> torch.Tensor:
        fbanks = []
        for offset, window in enumerate(batch):
            waveform, rng = self.augmented_waveform(recording, window, start + offset, view)
            fbank = encoder.fbank(torch.from_numpy(waveform)[None].to(self.device))[0]
            fbanks.append(spec_augment(fbank, rng, self.augment))
        return torch.stack(fbanks)
