"""A student for small boards, distilled from a run's BEATs model + head (`humwatch distill`).

The student reads the same 6-s waveform window and has its front end inside its graph: 1024-point
spectra of 46 frames spread over the window (every other 64 ms), the time-mean of their power and
of their log power on 40 mel bands, then a small MLP. Hum is stationary, so a window's average
spectrum carries what the AC and the fridge sound like; the log-power mean tells steady hum from
passing transients. About 1.3 MFLOP a window, DFT included: well under 1 % of even the tiny test
teacher, and some 40,000 times less than the full-size BEATs.

It learns the teacher's probabilities on every window and cached augmentation view of the run's
training files (read from the embedding cache, so the teacher costs one head pass), mixed with
the true labels. Early stopping on the run's validation files, thresholds chosen as for the head.

    models/<run_id>/student[-N]/
      student.pt, config.yaml, metrics.jsonl, best_metrics.json, val_predictions.parquet, thresholds.yaml
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from edge.core.agreement import state_agreement
from edge.core.audio import load_windows
from edge.core.decision import decide_file
from edge.core.defaults import LABELS, DecisionConfig
from edge.core.files import DirectoryBuild, atomic_path
from edge.core.labels import BOTH_OFF, state_of
from train.beats import encoder_fingerprint
from train.cache import EmbeddingCache, Recording
from train.device import resolve_device
from train.fbank import kaldi_mel_banks
from train.metrics import file_metrics
from train.run import RunError, Run, TrainedDirectory
from train.thresholds import choose_thresholds
from train.trainer import cosine_with_warmup, mean_bce, predict_head

FRAME = 1024  # 64 ms at 16 kHz: 15.6 Hz bins, fine enough for mains harmonics
STRIDE = 2048  # one frame every 128 ms: half the audio is analysed, the hum is stationary
MELS = 40
HIDDEN = 32
POWER_FLOOR = 1e-6  # about -90 dBFS per bin: keeps float32 rounding in a tone's quiet bins out of the logs
STUDENT_FORMAT, STUDENT_FORMAT_VERSION, STUDENT_WEIGHTS = "humwatch-student", 1, "student.pt"


class StudentNet(nn.Module):
    """waveform [B, N] -> logits [B, 2] (ac, fridge); ``features`` is the fixed front end."""

    def __init__(self, window_samples: int, mels: int = MELS, hidden: int = HIDDEN, dropout: float = 0.1) -> None:
        super().__init__()
        self.config = {"window_samples": window_samples, "mels": mels, "hidden": hidden, "dropout": dropout}
        self.frames = window_samples // STRIDE
        if self.frames < 2:
            raise ValueError(f"a {window_samples}-sample window is too short for the student (needs {2 * STRIDE})")
        bands = kaldi_mel_banks(FRAME, mels)
        self.register_buffer("window", torch.hann_window(FRAME, periodic=True))
        self.register_buffer("bands", bands)
        self.register_buffer("band_means", bands / bands.sum(0, keepdim=True))
        self.register_buffer("feature_mean", torch.zeros(2 * mels))
        self.register_buffer("feature_std", torch.ones(2 * mels))
        self.mlp = nn.Sequential(nn.Linear(2 * mels, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, len(LABELS)))

    def features(self, waveform: torch.Tensor) -> torch.Tensor:
        """[B, N] -> [B, 2 * mels]: log of the mean band power, and the mean log power per band."""
        frames = waveform[:, : self.frames * STRIDE].unflatten(1, (self.frames, STRIDE))[:, :, :FRAME]
        frames = (frames - frames.mean(dim=-1, keepdim=True)) * self.window
        spectrum = torch.fft.rfft(frames)[..., : FRAME // 2]
        power = spectrum.real.square() + spectrum.imag.square()
        mean_power = torch.clamp(power.mean(dim=1) @ self.bands, min=POWER_FLOOR).log()
        mean_log = torch.clamp(power, min=POWER_FLOOR).log().mean(dim=1) @ self.band_means
        return torch.cat([mean_power, mean_log], dim=-1)

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        """Front-end features [B, 2 * mels] -> logits [B, 2]."""
        return self.mlp((features - self.feature_mean) / self.feature_std)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        return self.classify(self.features(waveform))

    def probabilities(self, waveform: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self(waveform))


class StudentRun(TrainedDirectory):
    """A student directory inside a run."""

    KIND, WEIGHTS, MAKE = "student", STUDENT_WEIGHTS, "distil one with 'humwatch distill --run models/<run_id>'"

    def load_student(self) -> StudentNet:
        saved = torch.load(self.path / STUDENT_WEIGHTS, map_location="cpu", weights_only=True)
        if saved.get("format") != STUDENT_FORMAT or saved.get("format_version") != STUDENT_FORMAT_VERSION:
            raise RunError(f"{self.path / STUDENT_WEIGHTS}: not a humwatch student; distil again with this humwatch")
        student = StudentNet(**saved["config"])
        student.load_state_dict(saved["weights"], strict=True)
        return student.eval()

    def save(self, student: StudentNet, config: dict, best: dict, predictions: pd.DataFrame) -> None:
        with atomic_path(self.path / STUDENT_WEIGHTS) as temporary:
            torch.save({"format": STUDENT_FORMAT, "format_version": STUDENT_FORMAT_VERSION, "config": student.config,
                        "weights": student.state_dict()}, temporary)
        self._save_common(config, best, predictions)


@dataclasses.dataclass(frozen=True)
class DistillOptions:
    label_weight: float = 0.1  # the rest of each target is the teacher's probability
    epochs: int = 300
    patience: int = 60
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-3
    seed: int = 0
    device: str = "auto"


@dataclasses.dataclass
class Examples:
    """Windows of one split: identity, student features, teacher probabilities, labels."""

    windows: pd.DataFrame  # recording_id, window_index, view, daypart, ac, fridge
    features: np.ndarray
    teacher: np.ndarray

    @property
    def labels(self) -> np.ndarray:
        return self.windows[list(LABELS)].to_numpy(dtype=np.float32)


class Distiller:
    """Teacher probabilities from the run's cache -> a trained student in ``<run>/student[-N]``."""

    def __init__(self, run_dir: Path, options: DistillOptions = DistillOptions(), log=print) -> None:
        self.run = Run.open(run_dir)
        self.options = options
        self.log = log

    def run_distillation(self) -> Path:
        run, options = self.run, self.options
        device = resolve_device(options.device)
        model = run.load_model().to(device)
        cache = self._cache(model, device)
        torch.manual_seed(options.seed)
        student = StudentNet(run.window.window_samples)
        train = self._examples(student, model, cache, run.recordings("training"), run.config["options"]["views"])
        val = self._examples(student, model, cache, run.recordings("validation"), 0)
        self.log(f"distilling: {len(train.features)} training windows (with augmented views), "
                 f"{len(val.features)} validation windows")
        with DirectoryBuild(run.path / "student", numbered=True) as build:
            directory = StudentRun(build.path)
            best = self._fit(student, train, val, directory)
            probs = _predict(student, val.features)
            predictions = val.windows[["recording_id", "window_index", "daypart", *LABELS]].copy()
            predictions["p_ac"], predictions["p_fridge"] = probs[:, 0], probs[:, 1]
            predictions["teacher_p_ac"], predictions["teacher_p_fridge"] = val.teacher[:, 0], val.teacher[:, 1]
            config = {
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "teacher_run_id": run.run_id,
                "student": student.config,
                "window": run.config["window"],
                "split": run.config["split"],
                "options": dataclasses.asdict(options),
                "decision": run.decision.to_dict(),
                "teacher_decision": run.decision.to_dict(),
            }
            directory.save(student, config, best, predictions)
            chosen = choose_thresholds(directory)
            agreement = teacher_agreement(directory)
            directory.update_config(teacher_agreement=agreement)
        self.log(f"student written to {build.final}: t_ac {chosen['t_ac']:.2f}, t_fridge {chosen['t_fridge']:.2f}; "
                 f"file states equal the teacher's on {agreement['agreeing_files']}/{agreement['files']} validation files")
        return build.final

    def _cache(self, model, device) -> EmbeddingCache:
        """The run's embedding cache. A kept stage 2 changed the encoder: its own key, built here."""
        config = self.run.config
        stage2 = config.get("stage2") or {}
        key = encoder_fingerprint(model.encoder.cpu()) if stage2.get("kept") else config["beats_checkpoint"]["sha256"]
        model.to(device)
        pool = [Recording(r.recording_id, r.path, r.sha256) for r in self.run.recordings("training")
                if state_of(r.ac, r.fridge) == BOTH_OFF]
        return EmbeddingCache(Path(config["options"]["cache_dir"]), key, self.run.window, config["options"]["seed"],
                              pool, device=device)

    def _examples(self, student: StudentNet, model, cache: EmbeddingCache, recordings, views: int) -> Examples:
        """Every window of `recordings` in views 0..views: the student's features, the teacher's probabilities."""
        for recording in recordings:
            if not recording.path.is_file():
                raise RunError(f"{recording.path}: a recording of {self.run.path} is gone; distilling needs it")
        cached = [Recording(r.recording_id, r.path, r.sha256) for r in recordings]
        cache.build(model.encoder, cached, views)
        rows, features, teacher = [], [], []
        for recording, key in zip(recordings, cached):
            clean = load_windows(recording.path, self.run.window)[0]
            for view in range(views + 1):
                audio = clean if view == 0 else np.stack([cache.augmented_waveform(key, w, i, view)[0]
                                                          for i, w in enumerate(clean)])
                features.append(_features(student, audio))
                teacher.append(predict_head(model.head, torch.from_numpy(np.array(cache.load(key, view)))))
                rows.append(pd.DataFrame({"recording_id": recording.recording_id, "window_index": np.arange(len(clean)),
                                          "view": view, "daypart": recording.daypart, "ac": recording.ac,
                                          "fridge": recording.fridge}))
        return Examples(pd.concat(rows, ignore_index=True), np.concatenate(features), np.concatenate(teacher))

    def _fit(self, student: StudentNet, train: Examples, val: Examples, directory: StudentRun) -> dict:
        options = self.options
        student.feature_mean.copy_(torch.from_numpy(train.features.mean(0)))
        student.feature_std.copy_(torch.from_numpy(train.features.std(0) + 1e-3))
        inputs, targets = torch.from_numpy(train.features), torch.from_numpy(self._targets(train))
        val_targets = self._targets(val)
        optimizer = torch.optim.AdamW(student.parameters(), lr=options.lr, weight_decay=options.weight_decay)
        steps = math.ceil(len(inputs) / options.batch_size)
        scheduler = cosine_with_warmup(optimizer, options.epochs * steps, steps)
        rng = np.random.default_rng(options.seed)
        best, best_state, since_best = None, None, 0
        for epoch in range(1, options.epochs + 1):
            student.train()
            losses = []
            for batch in np.array_split(rng.permutation(len(inputs)), steps):
                loss = nn.functional.binary_cross_entropy_with_logits(student.classify(inputs[batch]), targets[batch])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                scheduler.step()
                losses.append(loss.item())
            probs = _predict(student, val.features)
            record = {"stage": "student", "epoch": epoch, "train_loss": float(np.mean(losses)),
                      "val_loss": mean_bce(probs, val_targets), "val_max_abs_diff_teacher": float(np.abs(probs - val.teacher).max()),
                      **file_metrics(val.windows, probs, self.run.decision)}
            directory.append_epoch(record)
            if best is None or record["val_loss"] < best["val_loss"]:
                best, best_state, since_best = record, {k: v.clone() for k, v in student.state_dict().items()}, 0
            else:
                since_best += 1
            if since_best >= options.patience:
                break
        student.load_state_dict(best_state)
        self.log(f"student: best epoch {best['epoch']} of {epoch}, validation loss {best['val_loss']:.4f}, "
                 f"max |p - teacher| {best['val_max_abs_diff_teacher']:.3f}")
        return best

    def _targets(self, examples: Examples) -> np.ndarray:
        weight = self.options.label_weight
        return ((1 - weight) * examples.teacher + weight * examples.labels).astype(np.float32)


def teacher_agreement(directory: StudentRun) -> dict:
    """File states of the student (its thresholds) against the teacher's (the run's) on validation."""
    predictions = directory.val_predictions()
    teacher_decision = DecisionConfig.from_dict(directory.config["teacher_decision"])
    files = dict(list(predictions.groupby("recording_id")))
    agreement = state_agreement(
        {r: decide_file(group[["teacher_p_ac", "teacher_p_fridge"]].to_numpy(), teacher_decision).status for r, group in files.items()},
        {r: decide_file(group[["p_ac", "p_fridge"]].to_numpy(), directory.decision).status for r, group in files.items()})
    disagreeing = agreement["disagreeing_files"]
    return {"files": len(files), "agreeing_files": len(files) - len(disagreeing), "disagreeing_files": disagreeing}


def _features(student: StudentNet, audio: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return np.concatenate([student.features(torch.from_numpy(np.ascontiguousarray(audio[i : i + 256]))).numpy()
                               for i in range(0, len(audio), 256)])


def _predict(student: StudentNet, features: np.ndarray) -> np.ndarray:
    student.eval()
    with torch.inference_mode():
        return torch.sigmoid(student.classify(torch.from_numpy(features))).numpy()


def latest_student(run: Run) -> StudentRun | None:
    """The newest finished student of a run, or None."""
    found = run.students()
    return StudentRun.open(found[-1]) if found else None
