"""The embedding cache filled on a Ray cluster (`humwatch train --cluster`): the files of the local fill.

Each worker (an actor) loads the frozen encoder once, from the checkpoint's bytes: shipped once by
reference, checked there against the sha256 that keys the cache, read with load_beats as locally.
The driver decodes a recording as the local fill does when its first view goes out and ships its
windows by reference; a worker encodes one (recording, view) with the cache's own code
(train.cache.Views), and the driver stores each result as it comes back, atomically, under the
same progress bar. A worker that dies is started again with its task (edge.cluster.connect); what
was stored stays, so a run stopped for any reason goes on where it stopped.
"""

from __future__ import annotations

import contextlib
import hashlib
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from edge.cluster.connect import LOCAL, actor_pool, connected, finished, worker_count
from edge.core.audio import AudioFile, iter_windows
from train.beats import BEATs, CheckpointError, load_beats
from train.cache import EmbeddingCache, Recording, Views, progress_bar

CPU = torch.device("cpu")


class CacheWorker:
    """A Ray actor: the encoder loaded once (at its first task), then (recording, view) after another.

    Each task carries `shipped`, [the ObjectRefs of the checkpoint's bytes and of the cache's Views],
    fetched only to load: so a worker started again after a crash loads from its retried task."""

    def __init__(self, sha256: str, threads: int) -> None:
        self.sha256, self.threads = sha256, threads
        self.encoder: BEATs | None = None
        self.views: Views | None = None

    def _load(self, shipped: list) -> BEATs:
        import ray

        torch.set_num_threads(self.threads)
        data, self.views = ray.get(shipped)  # data: a view of the object store, not a copy
        if hashlib.sha256(data).hexdigest() != self.sha256:
            raise CheckpointError(f"the BEATs checkpoint reached a worker altered (its sha256 is not {self.sha256}); run again")
        with tempfile.TemporaryDirectory(prefix="humwatch-beats-") as folder:
            path = Path(folder) / "beats.pt"
            path.write_bytes(data)
            del data
            return load_beats(path)

    def encode(self, shipped: list, recording: Recording, windows: np.ndarray, view: int) -> tuple[Recording, int, np.ndarray]:
        """(recording, view, its embeddings) as the local fill computes them."""
        self.encoder = self.encoder or self._load(shipped)
        return recording, view, self.views.encode(self.encoder, recording.sha256, windows, view, CPU, lambda _: None)


def count_windows(recording: Recording, cache: EmbeddingCache) -> int:
    """How many windows the cache holds per view of `recording` (decoded as it streams, not kept)."""
    return sum(1 for _ in iter_windows(AudioFile(recording.path), cache.window))


class ClusterFill:
    """Fills one EmbeddingCache on a Ray cluster's workers: connected and started at the first fill
    with work to do (a complete cache needs no cluster), kept for the next."""

    def __init__(self, address: str, cache: EmbeddingCache, checkpoint: Path, cpus: int, stack: contextlib.ExitStack) -> None:
        self.address, self.cache, self.checkpoint, self.cpus, self.stack = address, cache, checkpoint, cpus, stack
        self.ray, self.pool, self.shipped = None, None, []

    def _start(self, items: int) -> None:
        self.ray = ray = self.stack.enter_context(connected(self.address))
        # bytes as a uint8 array: Ray hands workers arrays without copying them out of its store
        self.shipped = [ray.put(np.frombuffer(self.checkpoint.read_bytes(), np.uint8)), ray.put(self.cache.views)]
        self.pool = self.stack.enter_context(actor_pool(ray, CacheWorker, (self.cache.checkpoint_sha256, self.cpus),
                                                        self.cpus, worker_count(ray, self.cpus, items)))

    def fill(self, todo: list[tuple[Recording, int]]) -> int:
        """Encode and store every (recording, view) of `todo` (views of a recording together); the windows encoded."""
        cache = self.cache
        counts = {recording: count_windows(recording, cache) for recording, _ in todo}
        if self.pool is None:
            self._start(len(todo))
        ray = self.ray
        last = {recording: index for index, (recording, _) in enumerate(todo)}
        shipped = {}

        def submit(actor, item):
            index, (recording, view) = item
            if recording not in shipped:
                shipped[recording] = ray.put(cache.windows(recording))
            windows = shipped.pop(recording) if last[recording] == index else shipped[recording]
            return actor.encode.remote(self.shipped, recording, windows, view)

        with progress_bar(sum(counts[recording] for recording, _ in todo)) as progress:
            for recording, view, embeddings in finished(ray, self.pool, submit, list(enumerate(todo))):
                cache.store(recording, view, embeddings)
                progress.update(len(embeddings))
        return progress.total


@contextlib.contextmanager
def cluster_fill(address: str, cpus: int, cache: EmbeddingCache, checkpoint: Path) -> Iterator[ClusterFill | None]:
    """The ClusterFill of `cache` on the cluster at `address` for the duration (None for `local`)."""
    if address == LOCAL:
        yield None
        return
    with contextlib.ExitStack() as stack:
        yield ClusterFill(address, cache, checkpoint, cpus, stack)
