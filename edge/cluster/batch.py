"""`humwatch batch --cluster`: the files classified by Ray workers, the lines as local batch prints them.

The driver finds the files as local batch does and opens each one far enough to refuse what local
batch refuses before decoding (a missing, unreadable, empty or non-audio file: the same error
line). It ships the bundle's files once, by reference; each worker (an actor) writes them into a
temporary folder and opens them there as `batch` does (bundle.json field by field, every file
against its sha256, one test window), once. A file goes out as its bytes when a worker is free; the
lines come back in the order the files were found, a file that fails as one error line.
"""

from __future__ import annotations

import dataclasses
import itertools
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np

from edge.cluster.connect import actor_pool, connected, finished, in_order, worker_count
from edge.core.audio import AudioError, AudioFile
from edge.core.bundle import MANIFEST, Bundle
from edge.core.labels import control_characters_error
from edge.engine.batch import expand_paths
from edge.engine.detector import Detector
from edge.engine.results import FileFailure, FileResult
from edge.engine.settings import DetectorSettings


def bundle_files(bundle: Bundle) -> dict[str, np.ndarray]:
    """{name: its bytes} of bundle.json and every file it lists, as this machine holds them; uint8
    arrays, which Ray hands workers without copying them out of its store."""
    paths = {MANIFEST: bundle.path / MANIFEST, **{name: bundle.graph_file(name) for name in bundle.manifest.files}}
    return {name: np.frombuffer(path.read_bytes(), np.uint8) for name, path in paths.items()}


def unpack(files: list, folder: Path) -> None:
    """Write the shipped bundle ([the ObjectRef of bundle_files()]) into `folder`. On return nothing
    holds the shipped arrays, so the object store's pages they occupy leave this worker's memory."""
    import ray

    for name, data in ray.get(files[0]).items():
        (folder / name).write_bytes(data)


def refusal(path: Path) -> AudioError | None:
    """What local batch refuses before decoding `path` (its name, or a file that is not audio), or None."""
    if text := control_characters_error(path):
        return AudioError(text)
    try:
        AudioFile(path)
    except AudioError as error:
        return error
    return None


class BatchWorker:
    """A Ray actor: the shipped bundle opened once (at its first file), then file after file -> its line.

    Each task carries `files`, [the ObjectRef of bundle_files()], fetched only to open the bundle: so
    a worker started again after a crash opens it from its retried task."""

    def __init__(self, settings: DetectorSettings, threads: int) -> None:
        self.settings, self.threads = settings, threads
        self.detector: Detector | None = None

    def _open(self, files: list) -> Detector:
        with tempfile.TemporaryDirectory(prefix="humwatch-bundle-") as folder:
            unpack(files, Path(folder))
            return Detector.from_bundle(folder, self.settings.precision, hop=None, threads=self.threads,
                                        overrides=self.settings.decision_overrides())

    def classify(self, files: list, index: int, path: str, data: bytes) -> tuple[int, FileResult | FileFailure]:
        """(index, the batch result of the file `path` from its bytes): it names `path`, as locally."""
        self.detector = self.detector or self._open(files)
        with tempfile.TemporaryDirectory(prefix="humwatch-audio-") as folder:
            local = Path(folder) / f"audio{Path(path).suffix}"  # the suffix picks the decoder, as locally
            local.write_bytes(data)
            try:
                result = self.detector.classify_file(local)
            except AudioError as error:
                return index, FileFailure(path, str(error).replace(str(local), path))
        return index, dataclasses.replace(result, path=path)


def cluster_batch(address: str, cpus: int, settings: DetectorSettings, bundle: Bundle,
                  paths: list[Path]) -> Iterator[FileResult | FileFailure]:
    """The results of `run_batch`, computed by workers of the Ray cluster at `address` (`cpus` each; the
    model's threads are --threads or those CPUs). `bundle` is the checked bundle of `settings`."""
    found, unreadable = expand_paths(paths)
    for folder, error in unreadable.items():
        yield FileFailure(str(folder), error)
    refused, shipped = {}, []
    for index, path in enumerate(found):
        if (error := refusal(path)) is not None:
            refused[index] = FileFailure(str(path), str(error))
        else:
            shipped.append((index, path))
    if not shipped:
        yield from refused.values()
        return
    with connected(address) as ray:
        files = [ray.put(bundle_files(bundle))]
        args = (dataclasses.replace(settings, bundle=None), settings.threads or cpus)
        with actor_pool(ray, BatchWorker, args, cpus, worker_count(ray, cpus, len(shipped))) as pool:
            lines = finished(ray, pool, lambda actor, item: actor.classify.remote(files, item[0], str(item[1]),
                                                                                  item[1].read_bytes()), shipped)
            yield from in_order(itertools.chain(refused.items(), lines))
