"""The workstation's options records: `humwatch train`'s (kept in a run's config.yaml) and `humwatch
distill`'s (kept in a student's). Each field made by edge.core.options.setting is a command-line
option, with its one default and help; the others keep their defaults. No torch here: the command
line is made from these records whenever `humwatch` starts."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import click

from edge.cluster.connect import cluster_setting, worker_cpus_setting
from edge.core.labels import DAYPARTS
from edge.core.options import setting

DEVICES = ("auto", "cpu", "cuda", "mps")
PATH = click.Path(path_type=Path)


def device_setting() -> Any:
    """--device: where torch runs the encoder."""
    return setting("auto", "Where torch runs the encoder (auto: cuda, then mps, then cpu).", click.Choice(DEVICES),
                   show_default=True)


def seed_setting() -> Any:
    """--seed: of the shuffles, the augmentation and the initial weights."""
    return setting(0, "Random seed: the same seed, samples and machine train the same model.", click.INT,
                   show_default=True)


def names(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> tuple[str, ...]:
    """A repeated option's names, each value one name or several separated by commas."""
    return tuple(name.strip() for value in values for name in value.split(",") if name.strip())


@dataclasses.dataclass(frozen=True)
class TrainOptions:
    """How `humwatch train` was asked to train (config.yaml ``options``)."""

    beats_checkpoint: Path = setting(dataclasses.MISSING, "BEATs_iter3_plus_AS2M.pt (or another official-format "
                                                          "BEATs checkpoint).", click.Path(path_type=Path, dir_okay=False))
    manifests_dir: Path = setting(Path("data/manifests"), "Where prepare wrote files.csv and windows.parquet.", PATH, flag="manifests", show_default=True)
    models_dir: Path = setting(Path("models"), "Each run goes into a new folder here, named by its run id.", PATH, flag="models", show_default=True)
    cache_dir: Path = setting(Path("data/cache"), "The embedding cache: windows encoded once, reused by later runs.", PATH, show_default=True)
    val_daypart: str = setting("night", "Validate on the recordings of this daypart (train on the rest).", click.Choice(DAYPARTS), show_default=True)
    val_recordings: tuple[str, ...] = setting((), "Validate on these recordings instead of a daypart (repeat the "
                                                  "option or separate with commas).", multiple=True,
                                              metavar="ID[,ID...]", callback=names)
    priority: tuple[str, ...] = setting((), "The summary state's order: the first running appliance wins (a partial "
                                            "list puts those first; default: the order in which the recordings first "
                                            "name them).", multiple=True, metavar="NAME[,NAME...]", callback=names)
    views: int = setting(2, "Augmented views cached per window.", click.IntRange(min=1), show_default=True)
    epochs: int = setting(30, "Stage 1 epochs over the cached embeddings.", click.IntRange(min=1), show_default=True)
    patience: int = 8
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-2
    warmup_steps: int = 200
    unfreeze_blocks: int = setting(0, "Stage 2: fine-tune the last N blocks.", click.IntRange(0, 2), show_default=True)
    stage2_epochs: int = setting(3, "Stage 2 epochs (with --unfreeze-blocks).", click.IntRange(min=1), show_default=True)
    stage2_encoder_lr: float = 2e-5
    stage2_head_lr: float = 3e-4
    seed: int = seed_setting()
    device: str = device_setting()
    cluster: str = cluster_setting()  # where the embedding cache is filled (edge.cluster.connect)
    worker_cpus: int = worker_cpus_setting()


@dataclasses.dataclass(frozen=True)
class DistillOptions:
    """How `humwatch distill` was asked to distill (a student's config.yaml ``options``)."""

    label_weight: float = setting(0.1, "Share of each target taken from the true label; the rest is the teacher's "
                                       "probability.", click.FloatRange(0, 1), show_default=True)
    epochs: int = setting(300, "Student training epochs.", click.IntRange(min=1), show_default=True)
    patience: int = 60
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-3
    seed: int = seed_setting()
    device: str = device_setting()
