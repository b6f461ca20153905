"""Parity of the ONNX graphs with the torch model: validation windows plus edge cases."""

from __future__ import annotations

import numpy as np
import pandas as pd

from edge.core.decision import decide_file
from edge.core.defaults import SAMPLE_RATE, DecisionConfig
from edge.monitor.runtime import Classifier
from train.head import HumwatchModel, predict_model

FLOAT_TOLERANCE = 1e-4


def edge_case_windows(window_samples: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Silence, full-scale clipping and white noise: inputs real audio rarely reaches."""
    rng = np.random.default_rng(seed)
    t = np.arange(window_samples) / SAMPLE_RATE
    return {
        "silence": np.zeros(window_samples, np.float32),
        "full-scale clipping": np.clip(4 * np.sin(2 * np.pi * 220 * t), -1, 1).astype(np.float32),
        "white noise": rng.uniform(-1, 1, window_samples).astype(np.float32),
    }


def file_states(windows: pd.DataFrame, probs: np.ndarray, decision: DecisionConfig) -> dict[str, str]:
    return {recording_id: decide_file(probs[group.index.to_numpy()], decision).status
            for recording_id, group in windows.reset_index(drop=True).groupby("recording_id")}


def compare(reference: np.ndarray, candidate: np.ndarray, windows: pd.DataFrame, decision: DecisionConfig,
            n_validation: int) -> dict:
    """Max / mean |Δprob| over all windows; file-level state agreement on the validation ones."""
    difference = np.abs(reference - candidate)
    reference_states = file_states(windows, reference[:n_validation], decision)
    candidate_states = file_states(windows, candidate[:n_validation], decision)
    agreeing = sum(reference_states[r] == candidate_states[r] for r in reference_states)
    return {
        "windows": int(len(reference)),
        "max_abs_diff": float(difference.max()),
        "mean_abs_diff": float(difference.mean()),
        "files": len(reference_states),
        "state_agreement": agreeing / len(reference_states) if reference_states else 1.0,
        "disagreeing_files": sorted(r for r in reference_states if reference_states[r] != candidate_states[r]),
    }


def parity_inputs(validation: np.ndarray, window_samples: int) -> tuple[np.ndarray, list[str]]:
    cases = edge_case_windows(window_samples)
    return np.concatenate([validation, np.stack(list(cases.values()))]), list(cases)


def check_float_parity(model: HumwatchModel, classifier: Classifier, validation: np.ndarray,
                       windows: pd.DataFrame, decision: DecisionConfig) -> tuple[dict, np.ndarray, np.ndarray]:
    """(report, torch probs, onnx probs) for validation windows + edge cases."""
    inputs, cases = parity_inputs(validation, classifier.window_samples)
    torch_probs = predict_model(model, inputs)
    onnx_probs = classifier.predict(inputs)
    report = compare(torch_probs, onnx_probs, windows, decision, len(validation))
    report["edge_cases"] = cases
    report["tolerance"] = FLOAT_TOLERANCE
    report["passed"] = report["max_abs_diff"] <= FLOAT_TOLERANCE and report["state_agreement"] == 1.0
    return report, torch_probs, onnx_probs
