"""Choose t_ac and t_fridge on a run's validation files (grid search maximising file-level F1)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from edge.core.defaults import DecisionConfig
from edge.core.files import read_yaml, write_yaml_atomic
from train.metrics import f1, file_metrics

GRID = np.round(np.arange(0.05, 0.951, 0.01), 2)
HYSTERESIS_ABOVE = 0.05
HYSTERESIS_BELOW = 0.15


def hysteresis_on(threshold: float) -> float:
    """Streaming 'on' level for a file threshold (the defaults: 0.75 -> 0.80)."""
    return round(min(0.99, threshold + HYSTERESIS_ABOVE), 2)


def hysteresis_off(threshold: float) -> float:
    """Streaming 'off' level for a file threshold (the defaults: 0.75 -> 0.60)."""
    return round(max(0.01, threshold - HYSTERESIS_BELOW), 2)


def best_threshold(truth: np.ndarray, scores: np.ndarray, start: float) -> float:
    """The middle of the widest run of grid values with the best F1 (the largest margin on both
    sides); among equally wide runs, the one nearest `start`, the design's starting value."""
    f1s = np.array([f1(truth, scores >= t) for t in GRID])
    best = np.isclose(f1s, f1s.max())
    runs, first = [], None
    for index, flag in enumerate([*best, False]):
        if flag and first is None:
            first = index
        elif not flag and first is not None:
            runs.append((first, index - 1))
            first = None
    low, high = max(runs, key=lambda run: (run[1] - run[0], -abs(GRID[(run[0] + run[1]) // 2] - start)))
    return float(GRID[(low + high) // 2])


def load_val_predictions(run_dir: Path) -> pd.DataFrame:
    path = Path(run_dir) / "val_predictions.parquet"
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir}: no val_predictions.parquet; is this a finished 'humwatch train' run?")
    return pd.read_parquet(path)


def choose_thresholds(run_dir: Path) -> dict:
    """Grid-search thresholds on the run's validation files and write thresholds.yaml."""
    predictions = load_val_predictions(run_dir)
    files = predictions.groupby("recording_id").agg(ac=("ac", "first"), fridge=("fridge", "first"),
                                                    p_ac=("p_ac", "median"), p_fridge=("p_fridge", "median"))
    defaults = DecisionConfig()
    t_ac = best_threshold(files.ac.to_numpy(), files.p_ac.to_numpy(), defaults.t_ac)
    t_fridge = best_threshold(files.fridge.to_numpy(), files.p_fridge.to_numpy(), defaults.t_fridge)
    decision = defaults.replace(
        t_ac=t_ac, t_fridge=t_fridge,
        ac_on=hysteresis_on(t_ac), ac_off=hysteresis_off(t_ac),
        fridge_on=hysteresis_on(t_fridge), fridge_off=hysteresis_off(t_fridge),
    )
    probs = predictions[["p_ac", "p_fridge"]].to_numpy()
    result = {**decision.to_dict(), "validation_metrics": file_metrics(predictions, probs, decision)}
    write_yaml_atomic(Path(run_dir) / "thresholds.yaml", result)
    return result


def load_decision(run_dir: Path) -> DecisionConfig:
    """The run's thresholds.yaml, or the defaults when thresholds were not chosen yet."""
    path = Path(run_dir) / "thresholds.yaml"
    return DecisionConfig.from_dict(read_yaml(path)) if path.is_file() else DecisionConfig()
