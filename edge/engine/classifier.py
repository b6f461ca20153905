"""onnxruntime inference for a bundle: waveform windows -> one probability per appliance (bundle.json's labels).

Every window runs alone (batch 1), whatever the precision: dynamic int8 quantization scales
activations per tensor, so in a batch one window's result would depend on its batch mates. On
this workstation fp32 costs the same per window at batch 1 and 8. Intra-op threads do not spin
between runs, so a monitor idles at near zero CPU between hops.
"""

from __future__ import annotations

import os

import numpy as np
import onnxruntime as ort

from edge.core.bundle import Bundle, BundleError, load_bundle, verify_files
from edge.core.decision import DecisionConfig
from edge.engine import cpu


class ModelOutputError(BundleError):
    """A precision's graphs gave something other than one probability in [0, 1] per label for a
    window (NaN, infinity, another shape): raised by :meth:`Classifier.predict`, mid-run too.
    `t`: the audio time of the window's end, where a Detector knows it."""

    t: float | None = None


def session_options(threads: int | None = None) -> ort.SessionOptions:
    """Every session's options, here only: full graph optimisation; intra-op threads default to the
    machine's cores and never spin; int8 products exact on every CPU, as an ARM board computes them."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # onnxruntime's memory arena stays on: without it a live monitor's fp32 and int8 sessions held
    # 86 and 90 MB more (the C library keeps freed buffers in per-thread heaps); see
    # docs/performance.md, "Peaks that repeat".
    options.intra_op_num_threads = threads or os.cpu_count() or 1
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    # int8 as an ARM board computes it: exact kernels on x86 without VNNI (see edge.engine.cpu)
    options.add_session_config_entry(cpu.PRECISE_INT8, "1" if cpu.precise_int8() else "0")
    return options


def noise_window(window_samples: int) -> np.ndarray:
    """The test window: quiet Gaussian noise, the same every time."""
    return (np.random.default_rng(0).standard_normal(window_samples) * 0.05).astype(np.float32)


class Classifier:
    """A precision's graphs in onnxruntime sessions, run one after the other: BEATs' encoder then
    head, or the student's single graph. Each waveform window -> a probability per label.

    Loading checks what will run: each graph's bytes against bundle.json (the bytes hashed are
    the bytes loaded), one input and one output per graph, the first taking [batch,
    window_samples] and the last giving [batch, labels], and one test window through them all
    (`check`; the audit's teacher process, which checks what it computes, skips it).
    """

    def __init__(self, bundle: Bundle, precision: str | None = None, threads: int | None = None,
                 check: bool = True) -> None:
        self.bundle = bundle
        self.precision = precision or bundle.default_precision
        self.labels = len(bundle.manifest.labels)
        options = session_options(threads)
        self.sessions = []
        for role, name in bundle.graph_names(self.precision).items():
            with bundle.checked_graph(name) as graph:
                try:
                    session = ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
                except Exception as error:  # onnxruntime raises its own Fail/InvalidGraph types
                    raise BundleError(f"{bundle.path / name}: onnxruntime cannot load the {self.precision} {role} "
                                      f"graph ({error}); re-export the bundle") from error
            self._check_graph(session, bundle.path / name, first=not self.sessions)
            self.sessions.append(session)
        self._check_output(self.sessions[-1], bundle.path / name)
        self._inputs = [session.get_inputs()[0].name for session in self.sessions]
        if check:
            self.check()

    def _check_graph(self, session: ort.InferenceSession, path, first: bool) -> None:
        inputs, outputs = session.get_inputs(), session.get_outputs()
        if len(inputs) != 1 or len(outputs) != 1:
            raise BundleError(f"{path}: {len(inputs)} inputs and {len(outputs)} outputs; a bundle's graphs take one "
                              "and give one; re-export the bundle")
        expected = self.window_samples
        if first and (len(inputs[0].shape) != 2 or inputs[0].shape[1] != expected):
            raise BundleError(f"{path}: input shape {inputs[0].shape} does not match bundle.json's "
                              f"window_samples {expected}; re-export the bundle")

    def _check_output(self, session: ort.InferenceSession, path) -> None:
        shape = session.get_outputs()[0].shape
        if len(shape) != 2 or (isinstance(shape[1], int) and shape[1] != self.labels):
            raise BundleError(f"{path}: output shape {shape}, expected [batch, {self.labels}] (one probability per "
                              f"label: {', '.join(self.bundle.manifest.labels)}); re-export the bundle")

    def check(self) -> np.ndarray:
        """Probabilities [labels] of the test window (:func:`noise_window`); ModelOutputError if unusable."""
        return self.predict(noise_window(self.window_samples)[None])[0]

    @property
    def decision(self) -> DecisionConfig:
        """This precision's decision settings from the bundle."""
        return self.bundle.decision_for(self.precision)

    @property
    def window_samples(self) -> int:
        return self.bundle.window.window_samples

    def predict(self, windows: np.ndarray) -> np.ndarray:
        """windows [n, window_samples] float32 -> probabilities [n, labels], each window run alone.

        Raises ModelOutputError when the graphs give anything but finite probabilities in [0, 1].
        """
        windows = np.asarray(windows, dtype=np.float32)
        if windows.ndim != 2 or windows.shape[1] != self.window_samples:
            raise ValueError(f"expected windows of shape [n, {self.window_samples}], got {list(windows.shape)}")
        outputs = [self._run(window[None]) for window in np.ascontiguousarray(windows)]
        return np.concatenate(outputs) if outputs else np.zeros((0, self.labels), dtype=np.float32)

    def _run(self, window: np.ndarray) -> np.ndarray:
        value = window
        for session, name in zip(self.sessions, self._inputs):
            value = session.run(None, {name: value})[0]
        if value.shape != (1, self.labels) or not np.all((value >= 0) & (value <= 1)):  # NaN fails both
            audio = "finite audio" if np.isfinite(window).all() else "audio holding NaN or infinite samples"
            raise ModelOutputError(
                f"{self.bundle.path}: the {self.precision} graphs gave {np.round(value, 4).tolist()} for a window of "
                f"{audio}, not {self.labels} probabilities in [0, 1]; re-export the bundle or pick another --precision"
            )
        return value


def open_classifier(bundle_dir, precision: str | None = None, threads: int | None = None) -> Classifier:
    """The start-up check of batch, stream and live: bundle.json validated field by field, every file
    verified, the precision's graphs loaded and one test window run. BundleError says what is wrong."""
    bundle = load_bundle(bundle_dir)
    verify_files(bundle)
    return Classifier(bundle, precision, threads)
