"""A training run directory, written and read here and nowhere else.

    models/<run_id>/
      model.pt                 encoder + head weights (torch, loaded with weights_only=True)
      config.yaml              run id, checkpoint, BEATs cfg, window, labels (the appliances, in the
                               model's output order) and priority, split, every recording with its
                               absolute path, sha256 and the appliances it names (1 on / 0 off),
                               options, cache, stage 2, default decision (flat: t_<name>, ...)
      metrics.jsonl            one line per epoch (stage 1 and stage 2)
      best_metrics.json        the epoch that was kept
      val_predictions.parquet  the validation windows' probabilities
      thresholds.yaml          the chosen decision settings and their metrics (humwatch thresholds)
      student[-N]/             students distilled from the run (humwatch distill): student.pt,
                               config.yaml and the same metrics / predictions / thresholds files

Paths inside a run are absolute, so thresholds, evaluate and export work from any directory.
A run is built beside its destination and renamed into place when complete (edge.core.files).
:class:`RunConfig` is config.yaml as a typed record: built by the trainer, written and read here.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from pathlib import Path

import pandas as pd
import torch

from edge.core.decision import DecisionConfig
from edge.core.files import atomic_path, write_json_atomic
from edge.core.labels import SEED, Appliances
from edge.core.window import WindowConfig
from train.beats import BeatsConfig, build_beats
from train.head import AttentionPoolHead, HumwatchModel
from train.options import TrainOptions
from train.yamlfile import read_yaml, write_yaml_atomic

MODEL_FORMAT = "humwatch-model"
MODEL_FORMAT_VERSION = 1
MODEL, CONFIG, METRICS, BEST, PREDICTIONS, THRESHOLDS = (
    "model.pt", "config.yaml", "metrics.jsonl", "best_metrics.json", "val_predictions.parquet", "thresholds.yaml")


class RunError(ValueError):
    """A run directory that cannot be used; the message names it and the fix."""


def options_to_yaml(options) -> dict:
    """An options record as YAML values: paths absolute, tuples as lists."""
    return {k: (str(Path(v).resolve()) if isinstance(v, Path) else list(v) if isinstance(v, tuple) else v)
            for k, v in dataclasses.asdict(options).items()}


def options_from_yaml(cls, data: dict):
    """The options record `cls` from :func:`options_to_yaml`'s values."""
    def typed(field: dataclasses.Field, value):
        return Path(value) if field.type == "Path" else tuple(value) if field.type.startswith("tuple") else value
    return cls(**{field.name: typed(field, data[field.name]) for field in dataclasses.fields(cls) if field.name in data})


@dataclasses.dataclass(frozen=True)
class RunRecording:
    """A recording as the run saw it: where it was, its checksum, its labels (the appliances its name
    mentions, on or off; one it does not mention is masked)."""

    recording_id: str
    path: Path
    sha256: str
    daypart: str
    labels: dict[str, bool]


@dataclasses.dataclass(frozen=True)
class Split:
    """The file-level split: validated on a daypart (or, when None, on named recordings)."""

    val_daypart: str | None
    val_recordings: tuple[str, ...]
    train_recordings: tuple[str, ...]

    def to_yaml(self) -> dict:
        return {"val_daypart": self.val_daypart, "val_recordings": list(self.val_recordings),
                "train_recordings": list(self.train_recordings)}

    @classmethod
    def from_yaml(cls, data: dict) -> Split:
        return cls(data["val_daypart"], tuple(data["val_recordings"]), tuple(data["train_recordings"]))


@dataclasses.dataclass(frozen=True)
class Stage2:
    """Stage 2's outcome: blocks fine-tuned, whether it was kept (validation improved) and why."""

    unfreeze_blocks: int
    kept: bool
    verdict: str
    stage1_score: float
    best_score: float


@dataclasses.dataclass(frozen=True)
class CacheUse:
    """The embedding cache a run read: its directory, windows encoded and reused."""

    directory: Path
    encoded_windows: int
    reused_windows: int


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """A run's config.yaml: its id, checkpoint, BEATs architecture, window, split, every recording
    (absolute path, sha256, labels), options, cache, stage 2 and the default decision settings,
    whose appliances (names and priority) are written beside them as ``labels`` and ``priority``
    (a run written before they were has the seed's)."""

    run_id: str
    created: str
    beats_checkpoint: Path
    beats_checkpoint_sha256: str
    beats_cfg: BeatsConfig
    window: WindowConfig
    split: Split
    recordings: dict[str, RunRecording]
    options: TrainOptions
    cache: CacheUse
    stage2: Stage2 | None
    decision: DecisionConfig

    def to_yaml(self) -> dict:
        return {
            "run_id": self.run_id,
            "created": self.created,
            "beats_checkpoint": {"path": str(self.beats_checkpoint.resolve()), "sha256": self.beats_checkpoint_sha256},
            "beats_cfg": dataclasses.asdict(self.beats_cfg),
            "window": self.window.to_dict(),
            **self.decision.appliances.to_dict(),
            "split": self.split.to_yaml(),
            "recordings": {r.recording_id: {"path": str(r.path), "sha256": r.sha256, "daypart": r.daypart,
                                            **{name: int(on) for name, on in r.labels.items()}}
                           for r in self.recordings.values()},
            "options": options_to_yaml(self.options),
            "cache": {"directory": str(self.cache.directory.resolve()), "encoded_windows": self.cache.encoded_windows,
                      "reused_windows": self.cache.reused_windows},
            "stage2": dataclasses.asdict(self.stage2) if self.stage2 else None,
            "decision": self.decision.to_dict(),
        }

    @classmethod
    def from_yaml(cls, data: dict) -> RunConfig:
        checkpoint, cache, stage2 = data["beats_checkpoint"], data["cache"], data["stage2"]
        appliances = Appliances.parse(data.get("labels", SEED.names), data.get("priority", ()))
        return cls(
            run_id=data["run_id"], created=data["created"],
            beats_checkpoint=Path(checkpoint["path"]), beats_checkpoint_sha256=checkpoint["sha256"],
            beats_cfg=BeatsConfig(**data["beats_cfg"]), window=WindowConfig.from_dict(data["window"], "window"),
            split=Split.from_yaml(data["split"]),
            recordings={r: RunRecording(r, Path(v["path"]), v["sha256"], v["daypart"],
                                        {name: bool(v[name]) for name in appliances.names if name in v})
                        for r, v in data["recordings"].items()},
            options=options_from_yaml(TrainOptions, data["options"]),
            cache=CacheUse(Path(cache["directory"]), cache["encoded_windows"], cache["reused_windows"]),
            stage2=Stage2(**stage2) if stage2 else None,
            decision=DecisionConfig.from_dict(data["decision"], "decision", appliances),
        )


class TrainedDirectory:
    """What a training run and a student share: config.yaml (read as the typed record RECORD), the
    epochs, the validation predictions and the chosen thresholds. ``open`` checks the directory is
    finished."""

    KIND, WEIGHTS, MAKE, RECORD = "training run", MODEL, "train one with 'humwatch train'", RunConfig

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
    def config(self):
        """config.yaml as the typed record RECORD."""
        path = self.path / CONFIG
        try:
            return self.RECORD.from_yaml(read_yaml(path))
        except (KeyError, TypeError, ValueError) as error:
            raise RunError(f"{path}: not a config.yaml this humwatch reads ({type(error).__name__}: {error}); "
                           f"{self.MAKE} again") from error

    @property
    def appliances(self) -> Appliances:
        """The appliances, in the model's output order, and the priority of the summary state."""
        return self.config.decision.appliances

    @property
    def thresholds(self) -> dict | None:
        """thresholds.yaml (decision settings + validation metrics), or None before 'humwatch thresholds'."""
        path = self.path / THRESHOLDS
        return read_yaml(path) if path.is_file() else None

    @property
    def decision(self) -> DecisionConfig:
        """The chosen decision settings, or the run's defaults when thresholds were not chosen yet."""
        thresholds = self.thresholds
        if not thresholds:
            return self.config.decision
        return DecisionConfig.from_dict(thresholds, str(self.path / THRESHOLDS), self.appliances)

    def val_predictions(self) -> pd.DataFrame:
        """recording_id, window_index, daypart, one label column per appliance (1.0 / 0.0 / NaN where
        the recording does not name it), then p_<name> per appliance, of every validation window."""
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
        """Replace fields of config.yaml's record."""
        self._write_config(dataclasses.replace(self.config, **values))

    def _write_config(self, config) -> None:
        write_yaml_atomic(self.path / CONFIG, config.to_yaml())
        self.__dict__.pop("config", None)

    def save_results(self, config, best: dict, predictions: pd.DataFrame) -> None:
        """What the report and the thresholds read: config.yaml, the best metrics, the validation predictions."""
        with atomic_path(self.path / PREDICTIONS) as temporary:
            predictions.to_parquet(temporary, index=False)
        self._write_config(config)
        write_json_atomic(self.path / BEST, best)


class Run(TrainedDirectory):
    """One training run. ``Run.open`` checks it is finished; ``Run(path)`` is for the trainer writing it."""

    @property
    def run_id(self) -> str:
        return self.config.run_id

    @property
    def window(self) -> WindowConfig:
        return self.config.window

    def recordings(self, split: str) -> list[RunRecording]:
        """The run's 'validation' or 'training' recordings, in the order training used them."""
        config = self.config
        ids = config.split.val_recordings if split == "validation" else config.split.train_recordings
        return [config.recordings[r] for r in ids]

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

    def save(self, model: HumwatchModel, config: RunConfig, best: dict, predictions: pd.DataFrame) -> None:
        """Everything training leaves, each file written atomically."""
        with atomic_path(self.path / MODEL) as temporary:
            torch.save({
                "format": MODEL_FORMAT, "format_version": MODEL_FORMAT_VERSION,
                "beats_cfg": dataclasses.asdict(config.beats_cfg), "head_config": model.head.config,
                "window": config.window.to_dict(), "labels": list(config.decision.appliances.names),
                "encoder": model.encoder.state_dict(), "head": model.head.state_dict(),
            }, temporary)
        self.save_results(config, best, predictions)
