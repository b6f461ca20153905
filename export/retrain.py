"""`humwatch retrain`: prepare -> train -> thresholds -> distill -> export in one command, on the
grown samples folder, with a previous run's settings (its train options, window and split; its
student's distill options when it had one).

The home's clips kept for judging (edge.core.labels.kept_for_judging) are left out: training sees
the samples folder through ``<manifests>/../retrain-samples/``, a mirror of links to every other
file. Every window already in the embedding cache is reused (the cache is keyed by recording
content, window and checkpoint), so adding a few clips encodes only theirs; the run's config.yaml
and the summary say how many windows were encoded and reused.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from pathlib import Path

from edge.core.labels import kept_for_judging
from export.exporter import export_run
from train.manifests import find_samples, prepare
from train.run import Run
from train.student import Distiller, StudentRun
from train.thresholds import choose_thresholds
from train.trainer import Trainer


@dataclasses.dataclass(frozen=True)
class Retrained:
    """What a retrain made and what it cost."""

    run: Path
    bundle: Path
    training_files: int
    judging_files: tuple[Path, ...]  # kept out, for `humwatch judge`
    encoded_windows: int
    reused_windows: int
    seconds: dict[str, float]  # per step


def split_for_judging(samples_dir: Path) -> tuple[list[Path], list[Path]]:
    """(files to train on, the home's clips kept for judging), each sorted."""
    samples, _ = find_samples(samples_dir)
    judging = [path for path, named in samples.items() if kept_for_judging(named)]
    return sorted(set(samples) - set(judging)), sorted(judging)


def mirror(files: list[Path], samples_dir: Path, target: Path) -> None:
    """`target` made afresh: a link to each of `files` at its place below `samples_dir`."""
    shutil.rmtree(target, ignore_errors=True)
    for path in files:
        link = target / path.relative_to(samples_dir)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(path.resolve())


def retrain(previous: Path, samples_dir: Path, bundle_out: Path | None = None, int8: bool = False,
            cache_dir: Path | None = None, log=print) -> Retrained:
    """The whole chain on `samples_dir` with the settings of the run at `previous` (`cache_dir`: another
    embedding cache than its own, e.g. an empty one to measure what the cache saves)."""
    seconds: dict[str, float] = {}

    def step(name: str, work):
        started = time.perf_counter()
        result = work()
        seconds[name] = round(time.perf_counter() - started, 2)
        return result

    before = Run.open(previous)
    options = before.config.options
    if cache_dir is not None:
        options = dataclasses.replace(options, cache_dir=cache_dir)
    training, judging = split_for_judging(samples_dir)
    log(f"retrain: {len(training)} recordings to train on, {len(judging)} of the home's clips kept for judging")
    staging = options.manifests_dir.parent / "retrain-samples"
    mirror(training, samples_dir, staging)
    step("prepare", lambda: prepare(staging, options.manifests_dir, before.window))
    run_dir = step("train", lambda: Trainer(options, log=log).run())
    step("thresholds", lambda: choose_thresholds(Run.open(run_dir)))
    if before.students():
        student_options = StudentRun.open(before.students()[-1]).config.options
        step("distill", lambda: Distiller(run_dir, student_options, log=log).run_distillation())
    bundle = step("export", lambda: export_run(run_dir, bundle_out, int8=int8, log=log))
    cache = Run.open(run_dir).config.cache
    return Retrained(run_dir, bundle, len(training), tuple(judging), cache.encoded_windows, cache.reused_windows,
                     seconds)
