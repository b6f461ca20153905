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
from edge.core.defaults import LABELS, DecisionConfig, WindowConfig
from edge.core.files import DirectoryBuild, atomic_path
from edge.core.labels import BOTH_OFF, state_of
from train.beats import encoder_fingerprint
from train.cache import EmbeddingCache, Recording
from train.device import resolve_device
from train.fbank import kaldi_mel_banks
from train.metrics import file_metrics
from train.run import RunError, Run, Split, TrainedDirectory, options_from_yaml, options_to_yaml
from train.thresholds import choose_thresholds
from train.trainer import cosine_with_warmup, early_stopping, mean_bce, predict_head

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


@dataclasses.dataclass(frozen=True)
class TeacherAgreement:
    """The student's file states (its thresholds) against the teacher's on the validation files."""

    files: int
    agreeing_files: int
    disagreeing_files: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class StudentConfig:
    """A student's config.yaml: its teacher run, network, window, split, options, its default and its
    teacher's decision settings, and (once measured) its agreement with the teacher."""

    created: str
    teacher_run_id: str
    student: dict  # StudentNet.config
    window: WindowConfig
    split: Split
    options: DistillOptions
    decision: DecisionConfig
    teacher_decision: DecisionConfig
    teacher_agreement: TeacherAgreement | None = None

    def to_yaml(self) -> dict:
        data = {"created": self.created, "teacher_run_id": self.teacher_run_id, "student": self.student,
                "window": self.window.to_dict(), "split": self.split.to_yaml(), "options": options_to_yaml(self.options),
                "decision": self.decision.to_dict(), "teacher_decision": self.teacher_decision.to_dict()}
        if self.teacher_agreement:
            agreement = self.teacher_agreement
            data["teacher_agreement"] = {"files": agreement.files, "agreeing_files": agreement.agreeing_files,
                                         "disagreeing_files": list(agreement.disagreeing_files)}
        return data

    @classmethod
    def from_yaml(cls, data: dict) -> StudentConfig:
        agreement = data.get("teacher_agreement")
        return cls(
            created=data["created"], teacher_run_id=data["teacher_run_id"], student=data["student"],
            window=WindowConfig.from_dict(data["window"], "window"), split=Split.from_yaml(data["split"]),
            options=options_from_yaml(DistillOptions, data["options"]),
            decision=DecisionConfig.from_dict(data["decision"], "decision"),
            teacher_decision=DecisionConfig.from_dict(data["teacher_decision"], "teacher_decision"),
            teacher_agreement=TeacherAgreement(agreement["files"], agreement["agreeing_files"],
                                               tuple(agreement["disagreeing_files"])) if agreement else None,
        )


class StudentRun(TrainedDirectory):
    """A student directory inside a run."""

    KIND, WEIGHTS, RECORD = "student", STUDENT_WEIGHTS, StudentConfig
    MAKE = "distil one with 'humwatch distill --run models/<run_id>'"

    def load_student(self) -> StudentNet:
        saved = torch.load(self.path / STUDENT_WEIGHTS, map_location="cpu", weights_only=True)
        if saved.get("format") != STUDENT_FORMAT or saved.get("format_version") != STUDENT_FORMAT_VERSION:
            raise RunError(f"{self.path / STUDENT_WEIGHTS}: not a humwatch student; distil again with this humwatch")
        student = StudentNet(**saved["config"])
        student.load_state_dict(saved["weights"], strict=True)
        return student.eval()

    def save(self, student: StudentNet, config: StudentConfig, best: dict, predictions: pd.DataFrame) -> None:
        with atomic_path(self.path / STUDENT_WEIGHTS) as temporary:
            torch.save({"format": STUDENT_FORMAT, "format_version": STUDENT_FORMAT_VERSION, "config": student.config,
                        "weights": student.state_dict()}, temporary)
        self._save_common(config, best, predictions)


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
        train = self._examples(student, model, cache, run.recordings("training"), run.config.options.views)
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
            config = StudentConfig(created=time.strftime("%Y-%m-%dT%H:%M:%S%z"), teacher_run_id=run.run_id,
                                   student=student.config, window=run.window, split=run.config.split, options=options,
                                   decision=run.decision, teacher_decision=run.decision)
            directory.save(student, config, best, predictions)
            chosen = choose_thresholds(directory)
            agreement = teacher_agreement(directory)
            directory.update_config(teacher_agreement=agreement)
        self.log(f"student written to {build.final}: t_ac {chosen['t_ac']:.2f}, t_fridge {chosen['t_fridge']:.2f}; "
                 f"file states equal the teacher's on {agreement.agreeing_files}/{agreement.files} validation files")
        return build.final

    def _cache(self, model, device) -> EmbeddingCache:
        """The run's embedding cache. A kept stage 2 changed the encoder: its own key, built here."""
        config = self.run.config
        key = encoder_fingerprint(model.encoder.cpu()) if config.stage2 and config.stage2.kept else config.beats_checkpoint_sha256
        model.to(device)
        pool = [Recording(r.recording_id, r.path, r.sha256) for r in self.run.recordings("training")
                if state_of(r.ac, r.fridge) == BOTH_OFF]
        return EmbeddingCache(config.options.cache_dir, key, self.run.window, config.options.seed,
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

        def epoch(number: int) -> dict:
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
            record = {"stage": "student", "epoch": number, "train_loss": float(np.mean(losses)),
                      "val_loss": mean_bce(probs, val_targets), "val_max_abs_diff_teacher": float(np.abs(probs - val.teacher).max()),
                      **file_metrics(val.windows, probs, self.run.decision)}
            directory.append_epoch(record)
            return record

        best, epochs_run = early_stopping(student, options.epochs, options.patience, epoch,
                                          lambda record, best: record["val_loss"] < best["val_loss"])
        self.log(f"student: best epoch {best['epoch']} of {epochs_run}, validation loss {best['val_loss']:.4f}, "
                 f"max |p - teacher| {best['val_max_abs_diff_teacher']:.3f}")
        return best

    def _targets(self, examples: Examples) -> np.ndarray:
        weight = self.options.label_weight
        return ((1 - weight) * examples.teacher + weight * examples.labels).astype(np.float32)


def teacher_agreement(directory: StudentRun) -> TeacherAgreement:
    """File states of the student (its thresholds) against the teacher's (the run's) on validation."""
    files = dict(list(directory.val_predictions().groupby("recording_id")))
    agreement = state_agreement(
        {r: decide_file(group[["teacher_p_ac", "teacher_p_fridge"]].to_numpy(), directory.config.teacher_decision).status
         for r, group in files.items()},
        {r: decide_file(group[["p_ac", "p_fridge"]].to_numpy(), directory.decision).status for r, group in files.items()})
    disagreeing = agreement["disagreeing_files"]
    return TeacherAgreement(len(files), len(files) - len(disagreeing), disagreeing)


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
