"""Choose t_ac and t_fridge on a run's validation files (grid search maximising file-level F1)."""

from __future__ import annotations

import numpy as np

from train.metrics import f1, file_metrics, file_table
from train.run import Run

GRID = np.round(np.arange(0.05, 0.951, 0.01), 2)
HYSTERESIS_ABOVE = 0.05
HYSTERESIS_BELOW = 0.15


def hysteresis_on(threshold: float) -> float:
    """Streaming 'on' level for a file threshold (the defaults: 0.75 -> 0.80)."""
    return round(min(0.99, threshold + HYSTERESIS_ABOVE), 2)


def hysteresis_off(threshold: float) -> float:
    """Streaming 'off' level for a file threshold (the defaults: 0.75 -> 0.60)."""
    return round(max(0.01, threshold - HYSTERESIS_BELOW), 2)


def f1_curve(truth: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """File-level F1 at every GRID threshold."""
    return np.array([f1(truth, scores >= t) for t in GRID])


def best_run(f1s: np.ndarray, start: float) -> tuple[int, int]:
    """GRID indices (low, high) of the widest run of grid values with the best F1; among equally
    wide runs, the one nearest `start`, the design's starting value."""
    best = np.isclose(f1s, f1s.max())
    runs, first = [], None
    for index, flag in enumerate([*best, False]):
        if flag and first is None:
            first = index
        elif not flag and first is not None:
            runs.append((first, index - 1))
            first = None
    return max(runs, key=lambda run: (run[1] - run[0], -abs(GRID[(run[0] + run[1]) // 2] - start)))


def best_threshold(truth: np.ndarray, scores: np.ndarray, start: float) -> float:
    """The middle of :func:`best_run` (the largest margin on both sides)."""
    low, high = best_run(f1_curve(truth, scores), start)
    return float(GRID[(low + high) // 2])


def choose_thresholds(run: Run) -> dict:
    """Grid-search thresholds on the run's validation files and write thresholds.yaml."""
    predictions = run.val_predictions()
    probs = predictions[["p_ac", "p_fridge"]].to_numpy()
    defaults = run.config.decision
    files = file_table(predictions, probs, defaults)
    t_ac = best_threshold(files.ac.to_numpy(), files.p_ac.to_numpy(), defaults.t_ac)
    t_fridge = best_threshold(files.fridge.to_numpy(), files.p_fridge.to_numpy(), defaults.t_fridge)
    decision = defaults.replace(
        t_ac=t_ac, t_fridge=t_fridge,
        ac_on=hysteresis_on(t_ac), ac_off=hysteresis_off(t_ac),
        fridge_on=hysteresis_on(t_fridge), fridge_off=hysteresis_off(t_fridge),
    )
    metrics = file_metrics(predictions, probs, decision)
    run.write_thresholds(decision, metrics)
    return {**decision.to_dict(), "validation_metrics": metrics}
