"""Choose t_ac and t_fridge on a run's validation files (grid search maximising file-level F1)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from edge.defaults import DecisionConfig
from edge.files import read_yaml, write_yaml_atomic
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
    """The grid value with the highest F1; among ties, the one closest to `start`."""
    scored = [(f1(truth, scores >= t), -abs(t - start), float(t)) for t in GRID]
    return max(scored)[2]


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
