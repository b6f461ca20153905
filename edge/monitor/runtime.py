"""onnxruntime inference for a bundle: waveform windows -> probabilities (ac, fridge).

Every window runs alone (batch 1), whatever the precision: dynamic int8 quantization scales
activations per tensor, so in a batch one window's result would depend on its batch mates. On
this workstation fp32 costs the same per window at batch 1 and 8. Intra-op threads do not spin
between runs, so a monitor idles at near zero CPU between hops.
"""

from __future__ import annotations

import os

import numpy as np
import onnxruntime as ort

from edge.core.bundle import Bundle, BundleError
from edge.core.defaults import DecisionConfig

def session_options(threads: int | None = None) -> ort.SessionOptions:
    """Full graph optimisation; intra-op threads default to the machine's cores and never spin."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads or os.cpu_count() or 1
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def _input_shape(session: ort.InferenceSession) -> list:
    return session.get_inputs()[0].shape


class Classifier:
    """A precision's graphs in onnxruntime sessions, run one after the other: BEATs' encoder then
    head, or the student's single graph. Each waveform window -> probabilities (ac, fridge)."""

    def __init__(self, bundle: Bundle, precision: str | None = None, threads: int | None = None) -> None:
        self.bundle = bundle
        self.precision = precision or bundle.default_precision
        paths = bundle.graph_paths(self.precision)
        options = session_options(threads)
        try:
            self.sessions = [ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
                             for path in paths.values()]
        except Exception as error:  # onnxruntime raises its own Fail/InvalidGraph types
            raise BundleError(f"{bundle.path}: onnxruntime cannot load the {self.precision} graphs ({error})") from error
        expected = bundle.window.window_samples
        shape = _input_shape(self.sessions[0])
        if len(shape) != 2 or shape[1] != expected:
            raise BundleError(
                f"{next(iter(paths.values()))}: input shape {shape} does not match bundle.json's "
                f"window_samples {expected}; re-export the bundle"
            )
        self._inputs = [session.get_inputs()[0].name for session in self.sessions]

    @property
    def decision(self) -> DecisionConfig:
        """This precision's decision settings from the bundle."""
        return self.bundle.decision_for(self.precision)

    @property
    def window_samples(self) -> int:
        return self.bundle.window.window_samples

    def predict(self, windows: np.ndarray) -> np.ndarray:
        """windows [n, window_samples] float32 -> probabilities [n, 2], each window run alone."""
        windows = np.asarray(windows, dtype=np.float32)
        if windows.ndim != 2 or windows.shape[1] != self.window_samples:
            raise ValueError(f"expected windows of shape [n, {self.window_samples}], got {list(windows.shape)}")
        outputs = [self._run(window[None]) for window in np.ascontiguousarray(windows)]
        return np.concatenate(outputs) if outputs else np.zeros((0, 2), dtype=np.float32)

    def _run(self, value: np.ndarray) -> np.ndarray:
        for session, name in zip(self.sessions, self._inputs):
            value = session.run(None, {name: value})[0]
        return value
