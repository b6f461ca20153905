"""A student for small boards, distilled from a run's BEATs model + head (`humwatch distill`).

The student reads the same 6-s waveform window and has its front end inside its graph: 1024-point
spectra of 46 frames spread over the window (every other 64 ms), the time-mean of their power and
of their log power on 40 mel bands, then a small MLP with one output per appliance (the run's labels,
in their order). Hum is stationary, so a window's average spectrum carries what the appliances sound
like; the log-power mean tells steady hum from passing transients. About 1.3 MFLOP a window, DFT included: well under 1 % of even the tiny test
teacher, and some 40,000 times less than the full-size BEATs.

It learns the teacher's probabilities on every window and cached augmentation view of the run's
training files (read from the embedding cache, so the teacher costs one head pass), mixed with
the true labels where the recording names the appliance (where it does not, the teacher's alone).
Early stopping on the run's validation files, thresholds chosen per appliance as for the head.

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

from edge.core.agreement import hop_agreement, max_abs_diff_by_appliance, state_agreement
from edge.core.audio import load_windows
from edge.core.decision import DecisionConfig, decide_file, level_name
from edge.core.files import DirectoryBuild, atomic_path
from edge.core.labels import SEED, Appliances
from edge.core.window import WindowConfig
from train.augment import background_ids
from train.beats import encoder_fingerprint
from train.cache import EmbeddingCache, Recording
from train.device import resolve_device
from train.fbank import kaldi_mel_banks
from train.metrics import file_metrics, probability_columns
from train.options import DistillOptions
from train.run import Run, RunError, Split, TrainedDirectory, options_from_yaml, options_to_yaml
from train.thresholds import choose_thresholds
from train.trainer import cosine_with_warmup, early_stopping, mean_bce, predict_head

FRAME = 1024  # 64 ms at 16 kHz: 15.6 Hz bins, fine enough for mains harmonics
STRIDE = 2048  # one frame every 128 ms: half the audio is analysed, the hum is stationary
MELS = 40
HIDDEN = 32
POWER_FLOOR = 1e-6  # about -90 dBFS per bin: keeps float32 rounding in a tone's quiet bins out of the logs
STUDENT_FORMAT, STUDENT_FORMAT_VERSION, STUDENT_WEIGHTS = "humwatch-student", 1, "student.pt"


class StudentNet(nn.Module):
    """waveform [B, N] -> logits [B, labels] (one per appliance); ``features`` is the fixed front end.
    A student.pt saved before issue 24 has no ``labels`` in its config: the seed's two."""

    def __init__(self, window_samples: int, labels: int = len(SEED.names), mels: int = MELS, hidden: int = HIDDEN,
                 dropout: float = 0.1) -> None:
        super().__init__()
        self.config = {"window_samples": window_samples, "labels": labels, "mels": mels, "hidden": hidden,
                       "dropout": dropout}
        self.frames = window_samples // STRIDE
        if self.frames < 2:
            raise ValueError(f"a {window_samples}-sample window is too short for the student (needs {2 * STRIDE})")
        bands = kaldi_mel_banks(FRAME, mels)
        self.register_buffer("window", torch.hann_window(FRAME, periodic=True))
        self.register_buffer("bands", bands)
        self.register_buffer("band_means", bands / bands.sum(0, keepdim=True))
        self.register_buffer("feature_mean", torch.zeros(2 * mels))
        self.register_buffer("feature_std", torch.ones(2 * mels))
        self.mlp = nn.Sequential(nn.Linear(2 * mels, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, labels))

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
        """Front-end features [B, 2 * mels] -> logits [B, labels]."""
        return self.mlp((features - self.feature_mean) / self.feature_std)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        return self.classify(self.features(waveform))

    def probabilities(self, waveform: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self(waveform))


@dataclasses.dataclass(frozen=True)
class TeacherAgreement:
    """The student (its thresholds) against its teacher on the validation files: file states, the
    debounced states of the recordings streamed hop by hop, and the largest |Δp| of a window, overall
    and per appliance. A student distilled before issue 24 recorded the file states only (the rest None)."""

    files: int
    agreeing_files: int
    disagreeing_files: tuple[str, ...]
    streamed_hops: int | None = None
    agreeing_hops: int | None = None
    max_abs_diff: float | None = None
    max_abs_diff_by_appliance: dict[str, float] | None = None

    def to_yaml(self) -> dict:
        return {**dataclasses.asdict(self), "disagreeing_files": list(self.disagreeing_files)}

    @classmethod
    def from_yaml(cls, data: dict) -> TeacherAgreement:
        return cls(**{**data, "disagreeing_files": tuple(data["disagreeing_files"])})


@dataclasses.dataclass(frozen=True)
class StudentConfig:
    """A student's config.yaml: its teacher run, network, window, split, options, its default and its
    teacher's decision settings (over the teacher's appliances, written beside them as ``labels`` and
    ``priority``), and (once measured) its agreement with the teacher."""

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
                "window": self.window.to_dict(), **self.decision.appliances.to_dict(), "split": self.split.to_yaml(),
                "options": options_to_yaml(self.options), "decision": self.decision.to_dict(),
                "teacher_decision": self.teacher_decision.to_dict()}
        if self.teacher_agreement:
            data["teacher_agreement"] = self.teacher_agreement.to_yaml()
        return data

    @classmethod
    def from_yaml(cls, data: dict) -> StudentConfig:
        """config.yaml's record; one written before issue 24 (no labels) is the seed's."""
        agreement = data.get("teacher_agreement")
        appliances = Appliances.parse(data.get("labels", SEED.names), data.get("priority", ()))
        return cls(
            created=data["created"], teacher_run_id=data["teacher_run_id"], student=data["student"],
            window=WindowConfig.from_dict(data["window"], "window"), split=Split.from_yaml(data["split"]),
            options=options_from_yaml(DistillOptions, data["options"]),
            decision=DecisionConfig.from_dict(data["decision"], "decision", appliances),
            teacher_decision=DecisionConfig.from_dict(data["teacher_decision"], "teacher_decision", appliances),
            teacher_agreement=TeacherAgreement.from_yaml(agreement) if agreement else None,
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
        self.save_results(config, best, predictions)


@dataclasses.dataclass
class Examples:
    """Windows of one split: identity, student features, teacher probabilities, labels."""

    windows: pd.DataFrame  # recording_id, window_index, view, daypart, one label column per appliance (NaN: masked)
    features: np.ndarray
    teacher: np.ndarray
    names: tuple[str, ...]  # the appliances, in the order of the outputs

    @property
    def labels(self) -> np.ndarray:
        return self.windows[list(self.names)].to_numpy(dtype=np.float32)


def distillation_targets(teacher: np.ndarray, labels: np.ndarray, label_weight: float) -> np.ndarray:
    """What the student learns: the teacher's probabilities mixed with the true labels, `label_weight`
    of each target; where a recording does not name the appliance (its label NaN) the teacher's alone."""
    mixed = (1 - label_weight) * teacher + label_weight * labels
    return np.where(np.isnan(labels), teacher, mixed).astype(np.float32)


def teacher_columns(names: tuple[str, ...]) -> list[str]:
    """teacher_p_<name> per appliance: the teacher's probabilities in a student's predictions."""
    return [f"teacher_{column}" for column in probability_columns(names)]


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
        names = run.appliances.names
        torch.manual_seed(options.seed)
        student = StudentNet(run.window.window_samples, len(names))
        train = self._examples(student, model, cache, run.recordings("training"), run.config.options.views)
        val = self._examples(student, model, cache, run.recordings("validation"), 0)
        self.log(f"distilling: {len(train.features)} training windows (with augmented views), "
                 f"{len(val.features)} validation windows")
        with DirectoryBuild(run.path / "student", numbered=True) as build:
            directory = StudentRun(build.path)
            best = self._fit(student, train, val, directory)
            probs = _predict(student, val.features)
            predictions = val.windows[["recording_id", "window_index", "daypart", *names]].copy()
            predictions[probability_columns(names)] = probs
            predictions[teacher_columns(names)] = val.teacher
            config = StudentConfig(created=time.strftime("%Y-%m-%dT%H:%M:%S%z"), teacher_run_id=run.run_id,
                                   student=student.config, window=run.window, split=run.config.split, options=options,
                                   decision=run.decision, teacher_decision=run.decision)
            directory.save(student, config, best, predictions)
            choose_thresholds(directory)
            agreement = teacher_agreement(directory)
            directory.update_config(teacher_agreement=agreement)
            thresholds = ", ".join(f"{level_name(name, 'threshold')} {level.threshold:.2f}"
                                   for name, level in directory.decision.levels.items())
        self.log(f"student written to {build.final}: {thresholds}; file states equal the teacher's on "
                 f"{agreement.agreeing_files}/{agreement.files} validation files, streamed debounced states on "
                 f"{agreement.agreeing_hops}/{agreement.streamed_hops} hops; max |p - teacher| "
                 + ", ".join(f"{name} {value:.3f}" for name, value in agreement.max_abs_diff_by_appliance.items()))
        return build.final

    def _cache(self, model, device) -> EmbeddingCache:
        """The run's embedding cache. A kept stage 2 changed the encoder: its own key, built here."""
        config = self.run.config
        key = encoder_fingerprint(model.encoder.cpu()) if config.stage2 and config.stage2.kept else config.beats_checkpoint_sha256
        model.to(device)
        training = {r.recording_id: r for r in self.run.recordings("training")}
        quiet = background_ids({r: recording.labels for r, recording in training.items()}, self.run.appliances.names)
        pool = [Recording(r, training[r].path, training[r].sha256) for r in quiet]
        return EmbeddingCache(config.options.cache_dir, key, self.run.window, config.options.seed,
                              pool, device=device)

    def _examples(self, student: StudentNet, model, cache: EmbeddingCache, recordings, views: int) -> Examples:
        """Every window of `recordings` in views 0..views: the student's features, the teacher's probabilities."""
        for recording in recordings:
            if not recording.path.is_file():
                raise RunError(f"{recording.path}: a recording of {self.run.path} is gone; distilling needs it")
        cached = [Recording(r.recording_id, r.path, r.sha256) for r in recordings]
        cache.build(model.encoder, cached, views)
        names = self.run.appliances.names
        rows, features, teacher = [], [], []
        for recording, key in zip(recordings, cached):
            clean = load_windows(recording.path, self.run.window)[0]
            for view in range(views + 1):
                audio = clean if view == 0 else np.stack([cache.augmented_waveform(key, w, i, view)[0]
                                                          for i, w in enumerate(clean)])
                features.append(_features(student, audio))
                teacher.append(predict_head(model.head, torch.from_numpy(np.array(cache.load(key, view)))))
                rows.append(pd.DataFrame({"recording_id": recording.recording_id, "window_index": np.arange(len(clean)),
                                          "view": view, "daypart": recording.daypart,
                                          **{name: float(recording.labels.get(name, np.nan)) for name in names}}))
        return Examples(pd.concat(rows, ignore_index=True), np.concatenate(features), np.concatenate(teacher), names)

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
            by_appliance = max_abs_diff_by_appliance(val.teacher, probs, val.names)
            record = {"stage": "student", "epoch": number, "train_loss": float(np.mean(losses)),
                      "val_loss": mean_bce(probs, val_targets), "val_max_abs_diff_teacher": max(by_appliance.values()),
                      "val_max_abs_diff_teacher_by_appliance": by_appliance,
                      **file_metrics(val.windows, probs, self.run.decision)}
            directory.append_epoch(record)
            return record

        best, epochs_run = early_stopping(student, options.epochs, options.patience, epoch,
                                          lambda record, best: record["val_loss"] < best["val_loss"])
        self.log(f"student: best epoch {best['epoch']} of {epochs_run}, validation loss {best['val_loss']:.4f}, "
                 f"max |p - teacher| {best['val_max_abs_diff_teacher']:.3f}")
        return best

    def _targets(self, examples: Examples) -> np.ndarray:
        return distillation_targets(examples.teacher, examples.labels, self.options.label_weight)


def teacher_agreement(directory: StudentRun) -> TeacherAgreement:
    """The student (its thresholds) against the teacher (the run's) on the validation recordings: file
    states, debounced states streamed hop by hop, and the largest |Δp| per appliance."""
    config, names = directory.config, directory.appliances.names
    files = {r: group.sort_values("window_index") for r, group in directory.val_predictions().groupby("recording_id")}
    teacher = {r: group[teacher_columns(names)].to_numpy() for r, group in files.items()}
    student = {r: group[probability_columns(names)].to_numpy() for r, group in files.items()}
    states = state_agreement({r: decide_file(p, config.teacher_decision).status for r, p in teacher.items()},
                             {r: decide_file(p, directory.decision).status for r, p in student.items()})
    hops, agreeing_hops = hop_agreement(teacher, student, config.teacher_decision, directory.decision, config.window.hop_sec)
    by_appliance = max_abs_diff_by_appliance(np.concatenate(list(teacher.values())),
                                             np.concatenate(list(student.values())), names)
    disagreeing = states.disagreeing_files
    return TeacherAgreement(len(files), len(files) - len(disagreeing), disagreeing, hops, agreeing_hops,
                            max(by_appliance.values()), by_appliance)


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
