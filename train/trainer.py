"""Training: file-level split, stage 1 on cached frozen-BEATs embeddings, optional stage 2.

One output per appliance of the project (manifest.yaml's labels); a recording that does not name
an appliance leaves that label masked (NaN): it adds nothing to the loss (:class:`MaskedBCE`) nor
to that appliance's metrics.

A run is built beside ``models/<run_id>`` and renamed into place only when every artifact is
written (train.run), so an interrupted run leaves nothing and runs never overwrite each other.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm import tqdm

from edge.core.audio import load_windows
from edge.core.decision import DecisionConfig
from edge.core.files import DirectoryBuild, sha256_file
from edge.core.labels import DAYPARTS, Appliances, LabelError
from edge.core.window import WindowConfig
from train.augment import AugmentConfig, augment_waveform, background_ids, spec_augment
from train.beats import load_beats
from train.cache import EmbeddingCache, Recording
from train.cluster_cache import cluster_fill
from train.device import resolve_device
from train.head import AttentionPoolHead, HumwatchModel, predict_model
from train.manifests import ManifestError, load_manifests, named_labels
from train.metrics import file_metrics, probability_columns, selection_score
from train.run import CacheUse, Run, RunConfig, RunRecording, Split, Stage2, TrainOptions

EVAL_BATCH = 64


class SplitError(ValueError):
    """A validation split that cannot be made from the recordings at hand."""


def split_recordings(files: pd.DataFrame, val_daypart: str, val_recordings: tuple[str, ...],
                     names: Sequence[str]) -> tuple[list[str], list[str]]:
    """(training ids, validation ids), file level only; each appliance of `names` needs a training
    recording that names it on and one that names it off; errors say what is missing."""
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
    for name in names:
        values = set(train_files[name].dropna())
        missing = [state for state, value in (("on", 1), ("off", 0)) if value not in values]
        if missing:
            raise SplitError(f"the training files have no recording with {name} {' or '.join(missing)}: "
                             f"the {name} detector cannot learn")
    return training, validation


def new_run_id(options: TrainOptions) -> str:
    tag = "custom" if options.val_recordings else options.val_daypart
    return f"{time.strftime('%Y%m%d-%H%M%S')}-val-{tag}"


def cosine_with_warmup(optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    warmup_steps = max(1, min(warmup_steps, total_steps // 5))

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


class MaskedBCE(nn.Module):
    """The training loss for labels [n, appliances]: BCE with logits over the labels that are there. A
    NaN label (the recording does not name that appliance) contributes nothing, and the mean divides by
    the count of the others. Each label's pos_weight is its negatives / positives, counted where it is
    there."""

    def __init__(self, labels: np.ndarray) -> None:
        super().__init__()
        positives = np.nansum(labels, axis=0)
        negatives = (~np.isnan(labels)).sum(axis=0) - positives
        self.register_buffer("pos_weight", torch.tensor(negatives / positives, dtype=torch.float32))

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        there = ~torch.isnan(labels)
        losses = nn.functional.binary_cross_entropy_with_logits(
            logits, torch.where(there, labels, torch.zeros_like(labels)), pos_weight=self.pos_weight, reduction="none")
        return (losses * there).sum() / there.sum().clamp(min=1)


def train_head_epoch(head: AttentionPoolHead, optimizer, scheduler, loss_fn, inputs: torch.Tensor,
                     labels: torch.Tensor, rng: np.random.Generator, steps: int) -> float:
    """One pass over cached float16 embeddings in `steps` shuffled batches (on the head's device);
    returns the mean loss."""
    head.train()
    device = next(head.parameters()).device
    losses = []
    for batch in np.array_split(rng.permutation(len(inputs)), steps):
        batch = torch.from_numpy(np.sort(batch))
        loss = loss_fn(head(inputs[batch].to(device).float()), labels[batch].to(device))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())
    return float(np.mean(losses))


def early_stopping(module: nn.Module, epochs: int, patience: int, epoch: Callable[[int], dict],
                   better: Callable[[dict, dict], bool]) -> tuple[dict, int]:
    """Run ``epoch(n)`` for n = 1 .. epochs (each trains once and returns its validation record), stop
    once `patience` epochs in a row brought no `better` record, and load the best epoch's weights back
    into `module`: (the best record, the epochs run)."""
    best, best_state, since_best = None, None, 0
    for number in range(1, epochs + 1):
        record = epoch(number)
        if best is None or better(record, best):
            best, best_state, since_best = record, {k: v.clone() for k, v in module.state_dict().items()}, 0
        else:
            since_best += 1
        if since_best >= patience:
            break
    module.load_state_dict(best_state)
    return best, number


def predict_head(head: AttentionPoolHead, embeddings: torch.Tensor) -> np.ndarray:
    head.eval()
    device = next(head.parameters()).device
    with torch.inference_mode():
        return np.concatenate([torch.sigmoid(head(embeddings[i : i + EVAL_BATCH].to(device).float())).cpu().numpy()
                               for i in range(0, len(embeddings), EVAL_BATCH)])


def mean_bce(probs: np.ndarray, labels: np.ndarray) -> float:
    """Binary cross-entropy of probabilities against (soft) labels, averaged over the labels that are
    there (a NaN label is masked)."""
    there = ~np.isnan(labels)
    probs, labels = np.clip(probs[there], 1e-7, 1 - 1e-7), labels[there]
    return float(-np.mean(labels * np.log(probs) + (1 - labels) * np.log(1 - probs)))


@dataclasses.dataclass
class Dataset:
    """Windows of one split with their labels (and embeddings or waveforms as needed)."""

    windows: pd.DataFrame  # recording_id, window_index, one column per appliance (1.0 / 0.0 / NaN), daypart
    inputs: torch.Tensor | np.ndarray  # float16 embeddings [n, T, D] (stage 1) or waveforms [n, N]
    names: tuple[str, ...]  # the appliances, in the model's output order

    @property
    def labels(self) -> np.ndarray:
        """[n, appliances] float32, NaN where the recording does not name the appliance."""
        return self.windows[list(self.names)].to_numpy(dtype=np.float32)


class Trainer:
    def __init__(self, options: TrainOptions, log=print) -> None:
        self.options = options
        self.log = log

    def run(self) -> Path:
        options = self.options
        files, windows, window, project = load_manifests(options.manifests_dir)
        try:
            appliances = Appliances(project.names, options.priority)
        except LabelError as error:
            raise LabelError(f"--{error}") from error
        self.decision = DecisionConfig(appliances)
        names = appliances.names
        training_ids, validation_ids = split_recordings(files, options.val_daypart, options.val_recordings, names)
        self.log(f"training on {len(training_ids)} recordings, validating on {validation_ids}")
        self.device = device = resolve_device(options.device)
        self.log(f"device: {device}")
        encoder = load_beats(options.beats_checkpoint).to(device)
        checkpoint_sha = sha256_file(options.beats_checkpoint)
        torch.manual_seed(options.seed)
        recordings = self._recordings(files)
        labels = {row["recording_id"]: named_labels(row, names) for row in files.to_dict("records")}
        pool = [recordings[r] for r in background_ids({r: labels[r] for r in training_ids}, names)]
        cache = EmbeddingCache(options.cache_dir, checkpoint_sha, window, options.seed, pool, AugmentConfig(), device)
        with cluster_fill(options.cluster, options.worker_cpus, cache, options.beats_checkpoint) as cluster:
            stats = cache.build(encoder, [recordings[r] for r in training_ids], options.views, cluster)
            val_stats = cache.build(encoder, [recordings[r] for r in validation_ids], 0, cluster)
        self.log(f"embedding cache: encoded {stats.encoded_windows + val_stats.encoded_windows} windows, "
                 f"reused {stats.reused_windows + val_stats.reused_windows}")

        windows = windows.merge(files[["recording_id", "daypart"]], on="recording_id")
        train_windows = windows[windows.recording_id.isin(training_ids) & ~windows.outlier]
        val_windows = windows[windows.recording_id.isin(validation_ids)].reset_index(drop=True)
        train_set = self._cached_dataset(cache, recordings, train_windows, range(options.views + 1), names)
        val_set = self._cached_dataset(cache, recordings, val_windows, [0], names)

        run_id = new_run_id(options)
        with DirectoryBuild(options.models_dir / run_id, numbered=True) as build:
            run = Run(build.path)
            head, best = self._stage1(encoder.embed_dim, train_set, val_set, run)
            model = HumwatchModel(encoder, head)
            stage2 = None
            val_probs = predict_head(head, val_set.inputs)
            if options.unfreeze_blocks:
                model, best, stage2, val_probs = self._stage2(model, best, recordings, train_windows, val_windows, window,
                                                              pool, run, val_probs, names)
            config = RunConfig(
                run_id=build.destination.name, created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                beats_checkpoint=options.beats_checkpoint, beats_checkpoint_sha256=checkpoint_sha,
                beats_cfg=encoder.config, window=window,
                split=Split(None if options.val_recordings else options.val_daypart, tuple(validation_ids),
                            tuple(training_ids)),
                recordings={row.recording_id: RunRecording(row.recording_id, recordings[row.recording_id].path, row.sha256,
                                                           row.daypart, labels[row.recording_id])
                            for row in files.itertuples()},
                options=options,
                cache=CacheUse(cache.directory, stats.encoded_windows + val_stats.encoded_windows,
                               stats.reused_windows + val_stats.reused_windows),
                stage2=stage2, decision=self.decision,
            )
            predictions = val_windows[["recording_id", "window_index", "daypart", *names]].copy()
            predictions[probability_columns(names)] = val_probs
            self._save(run, model.cpu(), config, best, predictions)
        self.log(f"run written to {build.final}")
        return build.final

    def _recordings(self, files: pd.DataFrame) -> dict[str, Recording]:
        recordings = {}
        for row in files.itertuples():
            path = Path(row.path)
            if not path.is_file():
                raise ManifestError(f"{path}: listed in files.csv but missing; run 'humwatch prepare' again")
            if sha256_file(path) != row.sha256:  # the cache is keyed by this checksum
                raise ManifestError(f"{path}: changed since 'humwatch prepare' (sha256 differs); run it again")
            recordings[row.recording_id] = Recording(row.recording_id, path, row.sha256)
        return recordings

    @staticmethod
    def _cached_dataset(cache: EmbeddingCache, recordings: dict[str, Recording], windows: pd.DataFrame, views,
                        names: tuple[str, ...]) -> Dataset:
        parts, rows = [], []
        for view in views:
            for recording_id, group in windows.groupby("recording_id", sort=False):
                embeddings = cache.load(recordings[recording_id], view)
                parts.append(np.asarray(embeddings[group.window_index.to_numpy()]))
                rows.append(group)
        return Dataset(pd.concat(rows, ignore_index=True), torch.from_numpy(np.concatenate(parts)), names)

    def _stage1(self, dim: int, train_set: Dataset, val_set: Dataset, run: Run) -> tuple[AttentionPoolHead, dict]:
        options = self.options
        generator = np.random.default_rng(options.seed)
        head = AttentionPoolHead(dim, len(train_set.names)).to(self.device)
        optimizer = torch.optim.AdamW(head.parameters(), lr=options.lr, weight_decay=options.weight_decay)
        steps_per_epoch = math.ceil(len(train_set.inputs) / options.batch_size)
        scheduler = cosine_with_warmup(optimizer, options.epochs * steps_per_epoch, options.warmup_steps)
        loss_fn = MaskedBCE(train_set.labels).to(self.device)
        labels = torch.from_numpy(train_set.labels.copy())

        def epoch(number: int) -> dict:
            train_loss = train_head_epoch(head, optimizer, scheduler, loss_fn, train_set.inputs, labels, generator,
                                          steps_per_epoch)
            return self._evaluate("stage1", number, train_loss, val_set, predict_head(head, val_set.inputs), run)

        best, epochs_run = early_stopping(head, options.epochs, options.patience, epoch, _better)
        if epochs_run < options.epochs:
            self.log(f"early stop after epoch {epochs_run} (best: epoch {best['epoch']})")
        return head.eval(), best

    def _evaluate(self, stage: str, epoch: int, train_loss: float, val_set: Dataset, probs: np.ndarray, run: Run) -> dict:
        metrics = file_metrics(val_set.windows, probs, self.decision)
        record = {"stage": stage, "epoch": epoch, "train_loss": train_loss,
                  "val_loss": mean_bce(probs, val_set.labels), "score": selection_score(metrics), **metrics}
        run.append_epoch(record)
        figures = [(f"F1 {name}", metrics[f"f1_{name}"]) for name in val_set.names]
        self.log(f"{stage} epoch {epoch}: train loss {train_loss:.4f}, val loss {record['val_loss']:.4f}, "
                 + ", ".join(f"{label} {'-' if value is None else f'{value:.2f}'}"
                             for label, value in [*figures, ("state acc", metrics["state_accuracy"])]))
        return record

    def _stage2(self, model: HumwatchModel, stage1_best: dict, recordings, train_windows: pd.DataFrame,
                val_windows: pd.DataFrame, window: WindowConfig, pool, run: Run, stage1_probs: np.ndarray,
                names: tuple[str, ...]):
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
        val_set = Dataset(val_windows, val_audio, names)
        labels = torch.tensor(train_windows[list(names)].to_numpy(dtype=np.float32))
        loss_fn = MaskedBCE(labels.numpy()).to(self.device)
        steps_per_epoch = math.ceil(len(train_audio) / options.batch_size)
        scheduler = cosine_with_warmup(optimizer, options.stage2_epochs * steps_per_epoch, options.warmup_steps)
        rng = np.random.default_rng([options.seed, 2])
        augment = AugmentConfig()
        best, best_state, best_probs = stage1_best, None, stage1_probs
        for epoch in range(1, options.stage2_epochs + 1):
            model.train()
            losses = []
            batches = np.array_split(rng.permutation(len(train_audio)), steps_per_epoch)
            for batch in tqdm(batches, desc=f"stage 2 epoch {epoch}", unit="batch", leave=False):
                fbank = torch.stack([
                    spec_augment(model.encoder.fbank(torch.from_numpy(
                        augment_waveform(train_audio[i], rng, pool_audio, augment))[None].to(self.device))[0], rng, augment)
                    for i in batch
                ])
                loss = loss_fn(model.head(model.encoder.encode_fbank(fbank)), labels[batch].to(self.device))
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                scheduler.step()
                losses.append(loss.item())
            probs = predict_model(model, val_audio)
            record = self._evaluate("stage2", epoch, float(np.mean(losses)), val_set, probs, run)
            if _better(record, best):
                best, best_state, best_probs = record, {k: v.clone() for k, v in model.state_dict().items()}, probs
        kept = best_state is not None
        model.load_state_dict(best_state if kept else stage1_state)
        for parameter in model.parameters():
            parameter.requires_grad_(True)
        verdict = "kept: validation improved" if kept else "discarded: validation did not improve on stage 1"
        self.log(f"stage 2 ({blocks} block(s)) {verdict}")
        return model.eval(), best, Stage2(blocks, kept, verdict, stage1_best["score"], best["score"]), best_probs

    @staticmethod
    def _waveforms(recordings, windows: pd.DataFrame, window: WindowConfig) -> np.ndarray:
        """The waveform of every row of `windows`, in row order (each recording decoded once)."""
        decoded = {r: load_windows(recordings[r].path, window)[0] for r in windows.recording_id.unique()}
        rows = zip(windows.recording_id, windows.window_index)
        return np.stack([decoded[r][i] for r, i in rows]) if len(windows) else np.zeros((0, window.window_samples), np.float32)

    @staticmethod
    def _save(run: Run, model: HumwatchModel, config: RunConfig, best: dict, predictions: pd.DataFrame) -> None:
        run.save(model, config, best, predictions)


def _better(record: dict, best: dict) -> bool:
    """Higher file-level score wins; at equal score, the lower validation loss."""
    if record["score"] != best["score"]:
        return record["score"] > best["score"]
    return record["val_loss"] < best["val_loss"]
