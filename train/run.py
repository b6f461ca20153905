"""A training run directory, written and read here and nowhere else.

    models/<run_id>/
      model.pt                 encoder + head weights (torch, loaded with weights_only=True)
      config.yaml              run id, checkpoint, BEATs cfg, window, split, every recording with its
                               absolute path and sha256, options, cache, stage 2, default decision
      metrics.jsonl            one line per epoch (stage 1 and stage 2)
      best_metrics.json        the epoch that was kept
      val_predictions.parquet  the validation windows' probabilities
      thresholds.yaml          the chosen decision settings and their metrics (humwatch thresholds)
      student[-N]/             students distilled from the run (humwatch distill): student.pt,
                               config.yaml and the same metrics / predictions / thresholds files

Paths inside a run are absolute, so thresholds, evaluate and export work from any directory.
A run is built beside its destination and renamed into place when complete (edge.core.files).
"""

from __future__ import annotations

import dataclasses
import functools
import json
from pathlib import Path

import pandas as pd
import torch

from edge.core.defaults import LABELS, DecisionConfig, WindowConfig
from edge.core.files import atomic_path, write_json_atomic
from train.beats import build_beats
from train.head import AttentionPoolHead, HumwatchModel
from train.yamlfile import read_yaml, write_yaml_atomic

MODEL_FORMAT = "humwatch-model"
MODEL_FORMAT_VERSION = 1
MODEL, CONFIG, METRICS, BEST, PREDICTIONS, THRESHOLDS = (
    "model.pt", "config.yaml", "metrics.jsonl", "best_metrics.json", "val_predictions.parquet", "thresholds.yaml")


class RunError(ValueError):
    """A run directory that cannot be used; the message names it and the fix."""


@dataclasses.dataclass(frozen=True)
class RunRecording:
    """A recording as the run saw it: where it was, its checksum, its labels."""

    recording_id: str
    path: Path
    sha256: str
    daypart: str
    ac: int
    fridge: int


class TrainedDirectory:
    """What a training run and a student share: config.yaml, the epochs, the validation predictions
    and the chosen thresholds. ``open`` checks the directory is finished."""

    KIND, WEIGHTS, MAKE = "training run", MODEL, "train one with 'humwatch train'"

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).resolve()

    @classmethod
    def open(cls, path: str | Path):
        opened = cls(path)
        if not (opened.path / cls.WEIGHTS).is_file() or not (opened.path / CONFIG).is_file():
            raise RunError(f"{path}: not a finished {cls.KIND} (no {cls.WEIGHTS} / {CONFIG}); {cls.MAKE}")
        return opened

    # -- reading ---------------------------------------------------------------------------------
    @functools.cached_property
    def config(self) -> dict:
        return read_yaml(self.path / CONFIG)

    @property
    def thresholds(self) -> dict | None:
        """thresholds.yaml (decision settings + validation metrics), or None before 'humwatch thresholds'."""
        path = self.path / THRESHOLDS
        return read_yaml(path) if path.is_file() else None

    @property
    def decision(self) -> DecisionConfig:
        """The chosen decision settings, or the run's defaults when thresholds were not chosen yet."""
        return DecisionConfig.from_dict(self.thresholds or self.config["decision"])

    def val_predictions(self) -> pd.DataFrame:
        """recording_id, window_index, daypart, ac, fridge, p_ac, p_fridge of every validation window."""
        return pd.read_parquet(self.path / PREDICTIONS)

    def best_metrics(self) -> dict:
        return json.loads((self.path / BEST).read_text(encoding="utf-8"))

    def epochs(self) -> list[dict]:
        """metrics.jsonl: one record per epoch."""
        return [json.loads(line) for line in (self.path / METRICS).read_text(encoding="utf-8").splitlines() if line]

    # -- writing ---------------------------------------------------------------------------------
    def append_epoch(self, record: dict) -> None:
        with open(self.path / METRICS, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")

    def write_thresholds(self, decision: DecisionConfig, validation_metrics: dict) -> None:
        write_yaml_atomic(self.path / THRESHOLDS, {**decision.to_dict(), "validation_metrics": validation_metrics})

    def update_config(self, **values) -> None:
        """Add or replace top-level entries of config.yaml."""
        write_yaml_atomic(self.path / CONFIG, {**self.config, **values})
        self.__dict__.pop("config", None)

    def _save_common(self, config: dict, best: dict, predictions: pd.DataFrame) -> None:
        with atomic_path(self.path / PREDICTIONS) as temporary:
            predictions.to_parquet(temporary, index=False)
        write_yaml_atomic(self.path / CONFIG, config)
        write_json_atomic(self.path / BEST, best)
        self.__dict__.pop("config", None)


class Run(TrainedDirectory):
    """One training run. ``Run.open`` checks it is finished; ``Run(path)`` is for the trainer writing it."""

    @property
    def run_id(self) -> str:
        return self.config["run_id"]

    @property
    def window(self) -> WindowConfig:
        return WindowConfig.from_dict(self.config["window"])

    def recordings(self, split: str) -> list[RunRecording]:
        """The run's 'validation' or 'training' recordings, in the order training used them."""
        ids = self.config["split"]["val_recordings" if split == "validation" else "train_recordings"]
        known = self.config["recordings"]
        return [RunRecording(r, Path(known[r]["path"]), known[r]["sha256"], known[r]["daypart"], known[r]["ac"],
                             known[r]["fridge"]) for r in ids]

    def students(self) -> list[Path]:
        """The run's finished student directories, oldest first."""
        found = [p for p in self.path.glob("student*") if (p / "student.pt").is_file()]
        return sorted(found, key=lambda p: p.stat().st_mtime)

    def load_model(self) -> HumwatchModel:
        """The run's model, rebuilt from model.pt (weights_only)."""
        saved = torch.load(self.path / MODEL, map_location="cpu", weights_only=True)
        if saved.get("format") != MODEL_FORMAT or saved.get("format_version") != MODEL_FORMAT_VERSION:
            raise RunError(f"{self.path / MODEL}: not a humwatch model (format {saved.get('format')!r} "
                           f"v{saved.get('format_version')!r}); train again with this humwatch")
        encoder = build_beats(saved["beats_cfg"])
        encoder.load_state_dict(saved["encoder"], strict=True)
        head = AttentionPoolHead(**saved["head_config"])
        head.load_state_dict(saved["head"], strict=True)
        return HumwatchModel(encoder, head).eval()

    def save(self, model: HumwatchModel, config: dict, best: dict, predictions: pd.DataFrame) -> None:
        """Everything training leaves, each file written atomically."""
        with atomic_path(self.path / MODEL) as temporary:
            torch.save({
                "format": MODEL_FORMAT, "format_version": MODEL_FORMAT_VERSION,
                "beats_cfg": config["beats_cfg"], "head_config": model.head.config,
                "window": config["window"], "labels": list(LABELS),
                "encoder": model.encoder.state_dict(), "head": model.head.state_dict(),
            }, temporary)
        self._save_common(config, best, predictions)
