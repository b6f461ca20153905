"""Training: file-level split, stage 1 on cached frozen-BEATs embeddings, optional stage 2.

A run is written to ``models/.partial-<run_id>`` and renamed to ``models/<run_id>`` only when
every artifact is in place, so an interrupted run never looks complete and runs never overwrite
each other.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from edge.core.defaults import LABELS, DecisionConfig, WindowConfig
from edge.core.audio import load_windows
from edge.core.files import atomic_path, read_yaml, sha256_file, write_json_atomic, write_yaml_atomic
from edge.core.labels import DAYPARTS
from train.augment import AugmentConfig, augment_waveform, spec_augment
from train.beats import build_beats, load_beats
from train.cache import EmbeddingCache, Recording
from train.head import AttentionPoolHead, HumwatchModel
from train.manifests import ManifestError, load_manifests, resolve
from train.metrics import file_metrics, selection_score

MODEL_FORMAT = "humwatch-model"
MODEL_FORMAT_VERSION = 1
EVAL_BATCH = 64


@dataclasses.dataclass(frozen=True)
class TrainOptions:
    beats_checkpoint: Path
    manifests_dir: Path = Path("data/manifests")
    models_dir: Path = Path("models")
    cache_dir: Path = Path("data/cache")
    val_daypart: str = "night"
    val_recordings: tuple[str, ...] = ()
    views: int = 2
    epochs: int = 30
    patience: int = 8
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-2
    warmup_steps: int = 200
    unfreeze_blocks: int = 0
    stage2_epochs: int = 3
    stage2_encoder_lr: float = 2e-5
    stage2_head_lr: float = 3e-4
    seed: int = 0


class SplitError(ValueError):
    """A validation split that cannot be made from the recordings at hand."""


def split_recordings(files: pd.DataFrame, val_daypart: str, val_recordings: tuple[str, ...]) -> tuple[list[str], list[str]]:
    """(training ids, validation ids), file level only; errors say what is missing."""
    known = list(files.recording_id)
    if val_recordings:
        unknown = sorted(set(val_recordings) - set(known))
        if unknown:
            raise SplitError(f"--val-recordings {unknown} not in files.csv; known recordings: {known}")
        validation = [r for r in known if r in val_recordings]
    else:
        if val_daypart not in DAYPARTS:
            raise SplitError(f"--val-daypart {val_daypart!r}: must be one of {DAYPARTS}")
        validation = list(files.loc[files.daypart == val_daypart, "recording_id"])
        if not validation:
            raise SplitError(
                f"no {val_daypart} recording to validate on (recordings: {known}); record one, "
                "pick the other --val-daypart, or name files with --val-recordings"
            )
    training = [r for r in known if r not in validation]
    if not training:
        raise SplitError(f"every recording is in the validation split ({validation}); no training file is left")
    train_files = files[files.recording_id.isin(training)]
    for label in LABELS:
        values = set(train_files[label])
        if values != {0, 1}:
            state = "on" if 1 not in values else "off"
            raise SplitError(f"the training files have no recording with {label} {state}: the {label} detector cannot learn")
    return training, validation


def new_run_id(options: TrainOptions) -> str:
    tag = "custom" if options.val_recordings else options.val_daypart
    return f"{time.strftime('%Y%m%d-%H%M%S')}-val-{tag}"


def _finish_run(partial: Path, models_dir: Path, run_id: str) -> Path:
    """Rename the finished partial directory to a run directory no other run has."""
    for attempt in range(1, 1000):
        final = models_dir / (run_id if attempt == 1 else f"{run_id}-{attempt}")
        if not final.exists():
            os.rename(partial, final)
            return final
    raise RuntimeError(f"could not find a free run directory name for {run_id} in {models_dir}")


def cosine_with_warmup(optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    warmup_steps = max(1, min(warmup_steps, total_steps // 5))

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def bce_loss(labels: np.ndarray) -> nn.BCEWithLogitsLoss:
    """BCE with pos_weight = negatives / positives for each label."""
    positives = labels.sum(axis=0)
    return nn.BCEWithLogitsLoss(pos_weight=torch.tensor((len(labels) - positives) / positives, dtype=torch.float32))


def train_head_epoch(head: AttentionPoolHead, optimizer, scheduler, loss_fn, inputs: torch.Tensor,
                     labels: torch.Tensor, rng: np.random.Generator, steps: int) -> float:
    """One pass over cached float16 embeddings in `steps` shuffled batches; returns the mean loss."""
    head.train()
    losses = []
    for batch in np.array_split(rng.permutation(len(inputs)), steps):
        batch = torch.from_numpy(np.sort(batch))
        loss = loss_fn(head(inputs[batch].float()), labels[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())
    return float(np.mean(losses))


def predict_head(head: AttentionPoolHead, embeddings: torch.Tensor) -> np.ndarray:
    head.eval()
    with torch.inference_mode():
        return np.concatenate([torch.sigmoid(head(embeddings[i : i + EVAL_BATCH].float())).numpy()
                               for i in range(0, len(embeddings), EVAL_BATCH)])


def predict_model(model: HumwatchModel, windows: np.ndarray) -> np.ndarray:
    model.eval()
    with torch.inference_mode():
        return np.concatenate([
            model.probabilities(torch.tensor(windows[i : i + 8])).numpy()
            for i in range(0, len(windows), 8)
        ])


def _bce(probs: np.ndarray, labels: np.ndarray) -> float:
    probs = np.clip(probs, 1e-7, 1 - 1e-7)
    return float(-np.mean(labels * np.log(probs) + (1 - labels) * np.log(1 - probs)))


@dataclasses.dataclass
class Dataset:
    """Windows of one split with their labels (and embeddings or waveforms as needed)."""

    windows: pd.DataFrame  # recording_id, window_index, ac, fridge, daypart
    inputs: torch.Tensor | np.ndarray  # float16 embeddings [n, T, D] (stage 1) or waveforms [n, N]

    @property
    def labels(self) -> np.ndarray:
        return self.windows[list(LABELS)].to_numpy(dtype=np.float32)


class Trainer:
    def __init__(self, options: TrainOptions, log=print) -> None:
        self.options = options
        self.log = log

    def run(self) -> Path:
        options = self.options
        files, windows, window = load_manifests(options.manifests_dir)
        training_ids, validation_ids = split_recordings(files, options.val_daypart, options.val_recordings)
        self.log(f"training on {len(training_ids)} recordings, validating on {validation_ids}")
        encoder = load_beats(options.beats_checkpoint)
        checkpoint_sha = sha256_file(options.beats_checkpoint)
        torch.manual_seed(options.seed)
        recordings = self._recordings(files)
        states = files.set_index("recording_id").state
        pool = [recordings[r] for r in training_ids if states[r] == "both-off"]
        cache = EmbeddingCache(options.cache_dir, checkpoint_sha, window, options.seed, pool, AugmentConfig())
        stats = cache.build(encoder, [recordings[r] for r in training_ids], options.views)
        val_stats = cache.build(encoder, [recordings[r] for r in validation_ids], 0)
        self.log(f"embedding cache: encoded {stats.encoded_windows + val_stats.encoded_windows} windows, "
                 f"reused {stats.reused_windows + val_stats.reused_windows}")

        windows = windows.merge(files[["recording_id", "daypart"]], on="recording_id")
        train_windows = windows[windows.recording_id.isin(training_ids) & ~windows.outlier]
        val_windows = windows[windows.recording_id.isin(validation_ids)].reset_index(drop=True)
        train_set = self._cached_dataset(cache, recordings, train_windows, range(options.views + 1))
        val_set = self._cached_dataset(cache, recordings, val_windows, [0])

        run_id = new_run_id(options)
        options.models_dir.mkdir(parents=True, exist_ok=True)
        partial = options.models_dir / f".partial-{run_id}-{os.getpid()}"
        partial.mkdir()
        history = partial / "metrics.jsonl"
        head, best = self._stage1(encoder.embed_dim, train_set, val_set, history)
        model = HumwatchModel(encoder, head)
        stage2 = None
        val_probs = predict_head(head, val_set.inputs)
        if options.unfreeze_blocks:
            model, best, stage2, val_probs = self._stage2(model, best, recordings, train_windows, val_windows, window, pool, history, val_probs)

        config = {
            "run_id": run_id,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "beats_checkpoint": {"path": str(options.beats_checkpoint), "sha256": checkpoint_sha},
            "beats_cfg": dataclasses.asdict(encoder.config),
            "window": window.to_dict(),
            "labels": list(LABELS),
            "split": {"val_daypart": None if options.val_recordings else options.val_daypart,
                      "val_recordings": validation_ids, "train_recordings": training_ids},
            "options": {k: (str(v) if isinstance(v, Path) else list(v) if isinstance(v, tuple) else v)
                        for k, v in dataclasses.asdict(options).items()},
            "cache": {"directory": str(cache.directory), "encoded_windows": stats.encoded_windows + val_stats.encoded_windows,
                      "reused_windows": stats.reused_windows + val_stats.reused_windows},
            "stage2": stage2,
            "decision": DecisionConfig().to_dict(),
        }
        self._save(partial, model, window, config, best, val_windows, val_probs)
        final = _finish_run(partial, options.models_dir, run_id)
        self.log(f"run written to {final}")
        return final

    def _recordings(self, files: pd.DataFrame) -> dict[str, Recording]:
        recordings = {}
        for row in files.itertuples():
            path = resolve(row.path)
            if not path.is_file():
                raise ManifestError(f"{path}: listed in files.csv but missing; run 'humwatch prepare' again")
            if sha256_file(path) != row.sha256:  # the cache is keyed by this checksum
                raise ManifestError(f"{path}: changed since 'humwatch prepare' (sha256 differs); run it again")
            recordings[row.recording_id] = Recording(row.recording_id, path, row.sha256)
        return recordings

    @staticmethod
    def _cached_dataset(cache: EmbeddingCache, recordings: dict[str, Recording], windows: pd.DataFrame, views) -> Dataset:
        parts, rows = [], []
        for view in views:
            for recording_id, group in windows.groupby("recording_id", sort=False):
                embeddings = cache.load(recordings[recording_id], view)
                parts.append(np.asarray(embeddings[group.window_index.to_numpy()]))
                rows.append(group)
        return Dataset(pd.concat(rows, ignore_index=True), torch.from_numpy(np.concatenate(parts)))

    def _stage1(self, dim: int, train_set: Dataset, val_set: Dataset, history: Path) -> tuple[AttentionPoolHead, dict]:
        options = self.options
        generator = np.random.default_rng(options.seed)
        head = AttentionPoolHead(dim)
        optimizer = torch.optim.AdamW(head.parameters(), lr=options.lr, weight_decay=options.weight_decay)
        steps_per_epoch = math.ceil(len(train_set.inputs) / options.batch_size)
        scheduler = cosine_with_warmup(optimizer, options.epochs * steps_per_epoch, options.warmup_steps)
        loss_fn = bce_loss(train_set.labels)
        labels = torch.from_numpy(train_set.labels.copy())
        best, best_state, since_best = None, None, 0
        for epoch in range(1, options.epochs + 1):
            train_loss = train_head_epoch(head, optimizer, scheduler, loss_fn, train_set.inputs, labels, generator,
                                          steps_per_epoch)
            probs = predict_head(head, val_set.inputs)
            record = self._evaluate("stage1", epoch, train_loss, val_set, probs, history)
            if best is None or _better(record, best):
                best, best_state, since_best = record, {k: v.clone() for k, v in head.state_dict().items()}, 0
            else:
                since_best += 1
            if since_best >= options.patience:
                self.log(f"early stop after epoch {epoch} (best: epoch {best['epoch']})")
                break
        head.load_state_dict(best_state)
        return head.eval(), best

    def _evaluate(self, stage: str, epoch: int, train_loss: float, val_set: Dataset, probs: np.ndarray, history: Path) -> dict:
        metrics = file_metrics(val_set.windows, probs, DecisionConfig())
        record = {"stage": stage, "epoch": epoch, "train_loss": train_loss,
                  "val_loss": _bce(probs, val_set.labels), "score": selection_score(metrics), **metrics}
        with open(history, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        self.log(f"{stage} epoch {epoch}: train loss {train_loss:.4f}, val loss {record['val_loss']:.4f}, "
                 f"F1 ac {metrics['f1_ac']:.2f}, F1 fridge {metrics['f1_fridge']:.2f}, "
                 f"state acc {metrics['state_accuracy']:.2f}")
        return record

    def _stage2(self, model: HumwatchModel, stage1_best: dict, recordings, train_windows: pd.DataFrame,
                val_windows: pd.DataFrame, window: WindowConfig, pool, history: Path, stage1_probs: np.ndarray):
        """Fine-tune the last N encoder blocks with on-the-fly augmentation; keep only if better."""
        options = self.options
        blocks = options.unfreeze_blocks
        if not 1 <= blocks <= len(model.encoder.encoder.layers):
            raise ValueError(f"--unfreeze-blocks {blocks}: must be between 1 and {len(model.encoder.encoder.layers)}")
        stage1_state = {k: v.clone() for k, v in model.state_dict().items()}
        for parameter in model.encoder.parameters():
            parameter.requires_grad_(False)
        tuned = [p for layer in model.encoder.encoder.layers[-blocks:] for p in layer.parameters()]
        for parameter in tuned:
            parameter.requires_grad_(True)
        optimizer = torch.optim.AdamW([
            {"params": tuned, "lr": options.stage2_encoder_lr},
            {"params": model.head.parameters(), "lr": options.stage2_head_lr},
        ], weight_decay=options.weight_decay)
        train_audio = self._waveforms(recordings, train_windows, window)
        val_audio = self._waveforms(recordings, val_windows, window)
        pool_audio = train_audio[train_windows.recording_id.isin([r.recording_id for r in pool]).to_numpy()]
        val_set = Dataset(val_windows, val_audio)
        labels = torch.tensor(train_windows[list(LABELS)].to_numpy(dtype=np.float32))
        loss_fn = bce_loss(labels.numpy())
        steps_per_epoch = math.ceil(len(train_audio) / options.batch_size)
        scheduler = cosine_with_warmup(optimizer, options.stage2_epochs * steps_per_epoch, options.warmup_steps)
        rng = np.random.default_rng([options.seed, 2])
        augment = AugmentConfig()
        best, best_state, best_probs = stage1_best, None, stage1_probs
        for epoch in range(1, options.stage2_epochs + 1):
            model.train()
            losses = []
            for batch in np.array_split(rng.permutation(len(train_audio)), steps_per_epoch):
                fbank = torch.stack([
                    spec_augment(model.encoder.fbank(torch.from_numpy(augment_waveform(train_audio[i], rng, pool_audio, augment))[None])[0], rng, augment)
                    for i in batch
                ])
                loss = loss_fn(model.head(model.encoder.encode_fbank(fbank)), labels[batch])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                scheduler.step()
                losses.append(loss.item())
            probs = predict_model(model, val_audio)
            record = self._evaluate("stage2", epoch, float(np.mean(losses)), val_set, probs, history)
            if _better(record, best):
                best, best_state, best_probs = record, {k: v.clone() for k, v in model.state_dict().items()}, probs
        kept = best_state is not None
        model.load_state_dict(best_state if kept else stage1_state)
        for parameter in model.parameters():
            parameter.requires_grad_(True)
        verdict = "kept: validation improved" if kept else "discarded: validation did not improve on stage 1"
        self.log(f"stage 2 ({blocks} block(s)) {verdict}")
        summary = {"unfreeze_blocks": blocks, "kept": kept, "verdict": verdict,
                   "stage1_score": stage1_best["score"], "best_score": best["score"]}
        return model.eval(), best, summary, best_probs

    @staticmethod
    def _waveforms(recordings, windows: pd.DataFrame, window: WindowConfig) -> np.ndarray:
        """The waveform of every row of `windows`, in row order (each recording decoded once)."""
        decoded = {r: load_windows(recordings[r].path, window)[0] for r in windows.recording_id.unique()}
        rows = zip(windows.recording_id, windows.window_index)
        return np.stack([decoded[r][i] for r, i in rows]) if len(windows) else np.zeros((0, window.window_samples), np.float32)

    def _save(self, directory: Path, model: HumwatchModel, window: WindowConfig, config: dict, best: dict,
              val_windows: pd.DataFrame, val_probs: np.ndarray) -> None:
        with atomic_path(directory / "model.pt") as temporary:
            torch.save({
                "format": MODEL_FORMAT, "format_version": MODEL_FORMAT_VERSION,
                "beats_cfg": config["beats_cfg"], "head_config": model.head.config,
                "window": window.to_dict(), "labels": list(LABELS),
                "encoder": model.encoder.state_dict(), "head": model.head.state_dict(),
            }, temporary)
        with atomic_path(directory / "head.pt") as temporary:
            torch.save({"format": "humwatch-head", "head_config": model.head.config, "head": model.head.state_dict()}, temporary)
        predictions = val_windows[["recording_id", "window_index", "daypart", "ac", "fridge"]].copy()
        predictions["p_ac"], predictions["p_fridge"] = val_probs[:, 0], val_probs[:, 1]
        with atomic_path(directory / "val_predictions.parquet") as temporary:
            predictions.to_parquet(temporary, index=False)
        write_yaml_atomic(directory / "config.yaml", config)
        write_json_atomic(directory / "best_metrics.json", best)


def _better(record: dict, best: dict) -> bool:
    """Higher file-level score wins; at equal score, the lower validation loss."""
    if record["score"] != best["score"]:
        return record["score"] > best["score"]
    return record["val_loss"] < best["val_loss"]


def load_run_model(run_dir: Path) -> tuple[HumwatchModel, dict]:
    """Rebuild a run's model from model.pt (weights_only) and return it with its config.yaml."""
    run_dir = Path(run_dir)
    model_path, config_path = run_dir / "model.pt", run_dir / "config.yaml"
    if not model_path.is_file() or not config_path.is_file():
        raise FileNotFoundError(f"{run_dir}: not a finished training run (no model.pt / config.yaml); train one with 'humwatch train'")
    saved = torch.load(model_path, map_location="cpu", weights_only=True)
    if saved.get("format") != MODEL_FORMAT or saved.get("format_version") != MODEL_FORMAT_VERSION:
        raise ValueError(f"{model_path}: not a humwatch model (format {saved.get('format')!r} v{saved.get('format_version')!r})")
    encoder = build_beats(saved["beats_cfg"])
    encoder.load_state_dict(saved["encoder"], strict=True)
    head = AttentionPoolHead(**saved["head_config"])
    head.load_state_dict(saved["head"], strict=True)
    return HumwatchModel(encoder, head).eval(), read_yaml(config_path)
