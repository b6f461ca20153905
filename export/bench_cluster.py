"""`humwatch bench-cluster`: the local path and a real Ray cluster on this machine, side by side in one run.

A head and `workers` worker nodes start with `ray start` (edge.cluster.local), sharing the cores
evenly, so the cluster has the CPUs the local path uses. Over the same synthetic recordings:

- the embedding cache: windows per second filled locally, then on the cluster (the two caches compared byte for byte);
- batch: windows per second, locally then on the cluster (the lines compared);
- a small folder (one short recording): each path's wall time; the difference is Ray's overhead
  (connecting, starting the workers, loading the model there, shipping it); and each path's rate
  beyond its fixed cost: the larger folder's extra windows over its extra seconds;
- each Ray worker's peak resident memory (VmHWM from /proc, read while it runs).

Writes <workdir>/bench-cluster.json.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import threading
import time
from pathlib import Path

import click

from edge.cluster.batch import cluster_batch
from edge.cluster.local import LocalCluster, actor_processes
from edge.core.files import sha256_file
from edge.core.window import WindowConfig
from edge.engine.batch import run_batch
from edge.engine.bench import check_quiet
from edge.engine.detector import Detector
from edge.engine.settings import DetectorSettings
from train.beats import load_beats
from train.cache import EmbeddingCache, Recording
from train.cluster_cache import cluster_fill
from train.synth import write_recordings

VIEWS = 1  # the clean view and one augmented view of each window


class PeakMemory:
    """Per Ray actor of class `name`, sampled from /proc while the block runs: its peak resident memory
    (VmHWM, MB; it counts the object store's shared pages the worker read) and the largest private
    memory seen (Private_* of smaps_rollup, MB: what the worker alone holds)."""

    def __init__(self, name: str) -> None:
        self.name, self.rss, self.private, self._stop = name, {}, {}, threading.Event()

    def _sample(self) -> None:
        while not self._stop.wait(0.2):
            for pid, folder in actor_processes(self.name).items():
                try:
                    rss = int(re.search(r"VmHWM:\s+(\d+) kB", (folder / "status").read_text()).group(1))
                    private = sum(int(kb) for kb in re.findall(r"Private_\w+:\s+(\d+) kB", (folder / "smaps_rollup").read_text()))
                except (OSError, AttributeError):  # it ended meanwhile
                    continue
                self.rss[pid] = max(self.rss.get(pid, 0.0), rss / 1024)
                self.private[pid] = max(self.private.get(pid, 0.0), private / 1024)

    def figures(self) -> dict:
        return {"peak_rss_mb": [round(mb) for mb in sorted(self.rss.values())],
                "peak_private_mb": [round(mb) for mb in sorted(self.private.values())]}

    def __enter__(self) -> PeakMemory:
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *_) -> None:
        self._stop.set()
        self._thread.join()


def timed_sec(function) -> tuple[object, float]:
    start = time.perf_counter()
    result = function()
    return result, time.perf_counter() - start


def fill_cache(root: Path, checkpoint: Path, recordings: list[Recording], cluster: str, cpus: int) -> tuple[float, int]:
    """(seconds, windows encoded) filling a fresh cache of `recordings` here (cluster 'local') or on
    the cluster, the encoder's load included (training loads it either way)."""
    def fill():
        cache = EmbeddingCache(root, sha256_file(checkpoint), WindowConfig(), 0, [])
        encoder = load_beats(checkpoint)
        with cluster_fill(cluster, cpus, cache, checkpoint) as on_cluster:
            return cache.build(encoder, recordings, VIEWS, on_cluster)

    stats, seconds = timed_sec(fill)
    return seconds, stats.encoded_windows


def batch_lines(bundle_dir: Path, folder: Path, cluster: str, cpus: int) -> tuple[list[dict], float]:
    """The batch lines of `folder` computed here or on the cluster, and the seconds they took (the bundle's load included)."""
    settings = DetectorSettings(bundle=bundle_dir)

    def run():
        detector = Detector.from_bundle(bundle_dir, hop=None)
        if cluster == "local":
            return list(run_batch(detector, [folder]))
        return list(cluster_batch(cluster, cpus, settings, detector.classifier.bundle, [folder]))

    return timed_sec(run)


def same_files(first: Path, second: Path) -> bool:
    files = sorted(path.relative_to(first) for path in first.rglob("*.npy"))
    return files == sorted(path.relative_to(second) for path in second.rglob("*.npy")) and all(
        (first / name).read_bytes() == (second / name).read_bytes() for name in files)


def run_bench_cluster(checkpoint: Path, bundle_dir: Path, workdir: Path, recordings: int, seconds: float,
                      small_seconds: float, workers: int) -> dict:
    """Measure what the module docstring lists; print a table and write <workdir>/bench-cluster.json."""
    checkpoint, bundle_dir = checkpoint.resolve(), bundle_dir.resolve()
    cores = os.cpu_count() or 1
    cpus = max(1, cores // (workers + 1))
    names = re.findall(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), flags=re.M)
    report = {"cpu": names[0] if names else platform.machine(), "cores": cores, "busy": check_quiet(allow_busy=True),
              "nodes": {"head": 1, "workers": workers, "cpus_per_node": cpus}, "recordings": recordings,
              "seconds": seconds, "views": VIEWS + 1}
    folder, small = workdir / "recordings", workdir / "small"
    for made in workdir.glob("*"):  # what an earlier run left
        shutil.rmtree(made) if made.is_dir() else made.unlink()
    for target, length, count in ((folder, seconds, recordings), (small, small_seconds, 1)):
        target.mkdir(parents=True)
        for path in write_recordings(workdir / f"synth-{length:g}", seconds=length, seed=0)[:count]:
            os.replace(path, target / path.name)
    recorded = [Recording(path.stem, path, sha256_file(path)) for path in sorted(folder.iterdir())]
    short = [Recording(path.stem, path, sha256_file(path)) for path in sorted(small.iterdir())]

    with LocalCluster(workers=workers, cpus=cpus) as cluster:
        rows = {}
        for name, cluster_address in (("local", "local"), ("ray", cluster.address)):
            with PeakMemory("CacheWorker") as cache_memory:
                cache_sec, windows = fill_cache(workdir / f"cache-{name}", checkpoint, recorded, cluster_address, cpus)
            with PeakMemory("BatchWorker") as batch_memory:
                lines, batch_sec = batch_lines(bundle_dir, folder, cluster_address, cpus)
            small_cache_sec, _ = fill_cache(workdir / f"small-cache-{name}", checkpoint, short, cluster_address, cpus)
            small_lines, small_batch_sec = batch_lines(bundle_dir, small, cluster_address, cpus)
            batch_windows, small_windows = (sum(line["windows"] for line in found) for found in (lines, small_lines))
            rows[name] = {"cache_windows": windows, "cache_sec": cache_sec, "cache_windows_per_sec": windows / cache_sec,
                          "batch_windows": batch_windows, "batch_sec": batch_sec, "batch_windows_per_sec": batch_windows / batch_sec,
                          "small_cache_windows": small_windows * (VIEWS + 1), "small_cache_sec": small_cache_sec,
                          "small_batch_windows": small_windows, "small_batch_sec": small_batch_sec, "lines": lines,
                          # the rate beyond the fixed cost of a run: the extra windows over the extra time of the larger folder
                          "cache_marginal_windows_per_sec": (windows - small_windows * (VIEWS + 1)) / (cache_sec - small_cache_sec),
                          "batch_marginal_windows_per_sec": (batch_windows - small_windows) / (batch_sec - small_batch_sec),
                          "cache_worker": cache_memory.figures(), "batch_worker": batch_memory.figures()}
    local, ray = rows["local"], rows["ray"]
    report.update({
        "local": {key: value for key, value in local.items() if key != "lines"},
        "ray": {key: value for key, value in ray.items() if key != "lines"},
        "same_cache": same_files(workdir / "cache-local", workdir / "cache-ray"),
        "same_batch_lines": local["lines"] == ray["lines"],
        "ray_over_local": {key: ray[key] / local[key] for key in ("cache_windows_per_sec", "batch_windows_per_sec",
                                                                   "cache_marginal_windows_per_sec", "batch_marginal_windows_per_sec")},
        "ray_overhead_small_folder_sec": {"cache": ray["small_cache_sec"] - local["small_cache_sec"],
                                          "batch": ray["small_batch_sec"] - local["small_batch_sec"]},
    })
    (workdir / "bench-cluster.json").write_text(json.dumps(report, indent=2))
    return report


def print_report(report: dict) -> None:
    local, ray, ratio = report["local"], report["ray"], report["ray_over_local"]
    click.echo(f"{report['cpu']}, {report['cores']} cores; cluster: a head and {report['nodes']['workers']} worker node(s), "
               f"{report['nodes']['cpus_per_node']} CPU(s) each; {report['recordings']} recordings of {report['seconds']:g} s")
    if report["busy"]:
        click.secho(f"WARNING: {report['busy']}: the timings are not clean", fg="yellow")
    click.echo(f"{'':40}{'local':>10}{'ray':>10}{'ray/local':>11}")
    for key, what in (("cache_windows_per_sec", "cache fill, windows/s"), ("cache_marginal_windows_per_sec", "  beyond a run's fixed cost"),
                      ("batch_windows_per_sec", "batch, windows/s"), ("batch_marginal_windows_per_sec", "  beyond a run's fixed cost")):
        click.echo(f"{what:40}{local[key]:>10.3f}{ray[key]:>10.3f}{ratio[key]:>11.2f}")
    click.echo(f"{'small folder: cache fill, s':40}{local['small_cache_sec']:>10.1f}{ray['small_cache_sec']:>10.1f}"
               f"{'+' + format(report['ray_overhead_small_folder_sec']['cache'], '.1f') + ' s':>11}")
    click.echo(f"{'small folder: batch, s':40}{local['small_batch_sec']:>10.1f}{ray['small_batch_sec']:>10.1f}"
               f"{'+' + format(report['ray_overhead_small_folder_sec']['batch'], '.1f') + ' s':>11}")
    for name in ("cache", "batch"):
        memory = ray[f"{name}_worker"]
        click.echo(f"{name} workers, MB each: peak RSS {memory['peak_rss_mb']}, of it private at most {memory['peak_private_mb']}")
    click.echo(f"same cache files: {report['same_cache']}; same batch lines: {report['same_batch_lines']}")
