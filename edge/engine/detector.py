"""The front door: a bundle's model with the decision settings in force.

    detector = Detector.from_bundle("bundles/kitchen")
    for line in detector.feed(samples, 48_000):   # any chunk size, any rate, mono or (frames, channels)
        print(line.status, line.debounced_status)

`batch`, `stream`, `live`, the audit fallback and the benchmarks are built on this one object, so
the settings that decide (the bundle's, with the caller's overrides) have one source, also after
an audited student falls back to its teacher.

A window quieter than the signal floor (edge.core.hearing) is not decided: its line says
``no-signal`` and why, and the decisions start afresh after it, as after any hop that decided
nothing (:meth:`Detector.undecided`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import numbers
from pathlib import Path
from typing import Iterator

import numpy as np

from edge.core.audio import RATE_RANGE, AudioError, AudioFile, StreamResampler, Windower, as_mono, iter_windows
from edge.core.decision import DecisionConfig, DecisionOverrides, StreamDecider, decide_file
from edge.core.hearing import NO_SIGNAL, SIGNAL_FLOOR_DBFS, no_signal_reason, window_level_dbfs
from edge.core.labels import control_characters_error
from edge.core.proc import timed
from edge.core.window import SAMPLE_RATE
from edge.engine.audit import Auditor
from edge.engine.classifier import Classifier, ModelOutputError, open_classifier
from edge.engine.hop import HopLine
from edge.engine.pacing import HopPlanner, plan_hop
from edge.engine.results import FileResult


class Detector:
    """Audio in (chunks of any size and rate), one :class:`HopLine` out per hop.

    Inside: resampling to the bundle's rate, the windows, the hop planner (a fixed hop or the
    shortest one that fits a CPU budget), inference, the running median, hysteresis and debounce,
    and (with a student deciding) the teacher's audit. `recent_sec` of audio is kept for clips.
    Windows below `signal_floor_dbfs` are not decided (``no-signal``).
    """

    def __init__(self, classifier: Classifier, planner: HopPlanner | None = None,
                 overrides: DecisionOverrides | None = None,
                 auditor: Auditor | None = None, recent_sec: float = 0.0,
                 signal_floor_dbfs: float = SIGNAL_FLOOR_DBFS) -> None:
        window = classifier.bundle.window
        self.classifier, self.auditor, self.signal_floor_dbfs = classifier, auditor, signal_floor_dbfs
        self.planner = planner or HopPlanner(window.hop_sec, cpu_sec=0.0)
        self.overrides = overrides or DecisionOverrides()
        self.windower = Windower(window.window_samples, round(self.planner.hop_sec * window.sample_rate),
                                 window.sample_rate, int(recent_sec * window.sample_rate))
        self._decider = StreamDecider(self.decision, self.planner.hop_sec)
        self._resample: StreamResampler | None = None
        self._rate: int | None = None
        self._status: str | None = None  # the last line's debounced status

    @classmethod
    def from_bundle(cls, path: str | Path, precision: str | None = None, hop: str | float | None = "auto",
                    cpu_budget: float = 0.5, threads: int | None = None, signal_floor_dbfs: float = SIGNAL_FLOOR_DBFS,
                    overrides: DecisionOverrides | None = None, **changes) -> Detector:
        """A detector over a checked bundle (every field, every file, one test window).

        `hop`: seconds, "auto" (the shortest hop whose measured cost fits `cpu_budget`, a share of all
        cores) or None (the bundle's hop, nothing measured: for whole files). `overrides`, or as
        keywords `changes`, change the bundle's decision settings: levels={"fridge": {"on": 0.8}},
        median_sec=6, debounce_sec=3. BundleError or ValueError say what is wrong."""
        classifier = open_classifier(path, precision, threads)
        overrides = overrides or DecisionOverrides.of(changes, classifier.decision.appliances.names)
        overrides.apply(classifier.decision)  # an unknown appliance or a bad value fails here, before the warm-up
        planner = None if hop is None else plan_hop(classifier, str(hop), cpu_budget)
        return cls(classifier, planner, overrides, signal_floor_dbfs=signal_floor_dbfs)

    @property
    def decision(self) -> DecisionConfig:
        """The deciding model's settings from the bundle, with the overrides applied."""
        return self.overrides.apply(self.classifier.decision)

    @property
    def sample_rate(self) -> int:
        """The rate the model hears (audio at any other rate is resampled to it)."""
        return self.classifier.bundle.window.sample_rate

    def __repr__(self) -> str:
        bundle, window = self.classifier.bundle, self.classifier.bundle.window
        return (f"Detector(bundle={str(bundle.path)!r}, precision={self.classifier.precision!r}, "
                f"appliances={list(self.decision.appliances.names)}, window_sec={window.window_sec:g}, "
                f"hop_sec={self.planner.hop_sec:g}, sample_rate={self.sample_rate})")

    def feed(self, samples: np.ndarray, sample_rate: int) -> list[HopLine]:
        """Push audio at `sample_rate`; the lines of every hop it completes. `samples`: 1-D mono or 2-D
        (frames, channels), mixed down; float in [-1, 1], or integer PCM scaled by its full scale
        (:func:`edge.core.audio.as_mono`). AudioError names anything else and the fix."""
        low, high = RATE_RANGE
        if not (isinstance(sample_rate, numbers.Integral) and low <= sample_rate <= high):
            raise AudioError(f"sample_rate {sample_rate!r}: pass the audio's rate in Hz, an integer in {low}-{high}")
        self.push(as_mono(samples), int(sample_rate))
        return list(self.decide())

    def flush(self) -> list[HopLine]:
        """At the end of the audio: the resampler's tail, and the lines of the hops it completes."""
        if self._resample is not None:
            self.windower.push(self._resample.flush())
            self._resample = self._rate = None
        return list(self.decide())

    def push(self, samples: np.ndarray, sample_rate: int) -> None:
        """Queue mono float32 audio without deciding (see :meth:`decide`): the sources' path, whose
        audio is decoded and checked already; :meth:`feed` takes and checks any array."""
        if sample_rate != self._rate:
            self._resample, self._rate = StreamResampler(int(sample_rate), self.sample_rate), sample_rate
        self.windower.push(self._resample(np.asarray(samples, dtype=np.float32).reshape(-1)))

    def decide(self) -> Iterator[HopLine]:
        """One line for every window the queued audio completes. A window whose inference raised is
        used up all the same, so the next call goes on with the next window."""
        with contextlib.closing(self.windower.windows()) as windows:
            for t, window in windows:
                try:
                    line = self.decide_window(t, window)
                except ModelOutputError as error:
                    error.t = t
                    raise
                yield line

    def decide_window(self, t: float, window: np.ndarray) -> HopLine:
        """One window -> one line: inference, the decision, the audit, and the planner kept up to date;
        a window below the signal floor decides nothing."""
        level = window_level_dbfs(window, SAMPLE_RATE)
        if level < self.signal_floor_dbfs:
            return self.undecided(t, NO_SIGNAL, no_signal_reason(level, self.signal_floor_dbfs), level_dbfs=level,
                                  hop_sec=self.planner.hop_sec)
        probs, wall_sec, cpu_sec = timed(self.classifier.predict, window[None])
        update = self._decider.update(probs[0])
        line = HopLine.build(t, probs[0], update, wall_sec * 1000, hop_sec=self.planner.hop_sec,
                             cpu_share=round(self.planner.cpu_share, 4))
        if self.auditor is not None:
            deciding = self.classifier.precision
            self.auditor(window, line, self.decision)
            if self.auditor.fallback is not None and self.classifier is not self.auditor.fallback:
                self.classifier = self.auditor.fallback
                self._decider = StreamDecider(self.decision, self.planner.hop_sec)
            line = dataclasses.replace(line, precision=deciding, audits=self.auditor.audits,
                                       audit_disagreements=self.auditor.disagreements)
        if self.planner.observe(cpu_sec):
            self._decider.retime(self.planner.hop_sec)
            self.windower.retime(self.planner.hop_sec)
        self._status = line.debounced_status
        return line

    def fits(self, classifier: Classifier) -> None:
        """ValueError unless another bundle's model can take over this detector's audio (the same window)."""
        new, running = classifier.bundle.window, self.classifier.bundle.window
        if new.window_samples != running.window_samples:
            raise ValueError(f"{classifier.bundle.path}: its window is {new.window_sec:g} s, the running bundle's "
                             f"{running.window_sec:g} s, which the audio in flight is cut to; restart the monitor "
                             "with this bundle instead")

    def swap(self, classifier: Classifier, auditor: Auditor | None = None) -> None:
        """Decide the next window with another bundle's model (one that :meth:`fits`): the audio
        queued goes on, the decisions start afresh with its settings, as after a gap."""
        self.fits(classifier)
        self.classifier, self.auditor = classifier, auditor
        self._decider = StreamDecider(self.decision, self.planner.hop_sec)
        self._status = None

    def undecided(self, t: float, status: str, reason: str, **fields) -> HopLine:
        """A hop that decided nothing (`status`: no-signal or no-audio, and why): its line, and the
        decisions start afresh after it (the running median and the debounce hold no audio from before)."""
        line = HopLine.undecided(t, status, reason, changed=status != self._status, **fields)
        self._decider = StreamDecider(self.decision, self.planner.hop_sec)
        self._status = status
        return line

    def gap(self, seconds: float) -> None:
        """Audio was lost (or a source reopened): time moves on by `seconds`, the next window and the
        resampler start afresh."""
        self.windower.gap(seconds)
        self._resample = self._rate = None

    def classify_file(self, path: str | Path) -> FileResult:
        """One decision for a whole file, the line `humwatch batch` prints: the median over its windows
        that carry a signal (the others are counted); no-signal when none does. AudioError for
        unusable audio or a name with control characters."""
        path = Path(path)
        if refusal := control_characters_error(path):
            raise AudioError(refusal)
        audio = AudioFile(path)
        probs, silent = [], []
        for _, window in iter_windows(audio, self.classifier.bundle.window):
            level = window_level_dbfs(window, SAMPLE_RATE)
            if level < self.signal_floor_dbfs:
                silent.append(level)
            else:
                probs.append(self.classifier.predict(window[None]))
        if not probs:
            return FileResult(str(path), None, 0, audio.duration_sec, len(silent),
                              no_signal_reason(max(silent), self.signal_floor_dbfs))
        return FileResult(str(path), decide_file(np.concatenate(probs), self.decision), len(probs), audio.duration_sec,
                          len(silent))
