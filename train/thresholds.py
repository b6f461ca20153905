"""Choose each appliance's threshold on a run's validation files: a grid search maximising its
file-level F1 over the validation recordings that name it."""

from __future__ import annotations

import numpy as np
import pandas as pd

from edge.core.decision import DecisionConfig, level_name
from train.metrics import f1, file_metrics, file_table, probability_columns
from train.run import TrainedDirectory

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


def unseparated(files: pd.DataFrame, decision: DecisionConfig) -> dict[str, str]:
    """{appliance: why} for each appliance whose validation files no GRID level separates (every 'on'
    file's median p at or above it, every 'off' file's below): the medians' ranges and what its
    threshold in `decision` then calls wrong. `files`: a :func:`file_table`."""
    notes = {}
    for name in decision.appliances.names:
        named = files[files[name].notna()]
        truth, scores = named[name].to_numpy() == 1, named[f"p_{name}"].to_numpy()
        on, off = scores[truth], scores[~truth]
        if not len(on) or not len(off) or any(np.array_equal(scores >= t, truth) for t in GRID):
            continue
        threshold = decision.levels[name].threshold
        notes[name] = (f"no level separates {name}'s validation files ('on' medians {on.min():.2f}-{on.max():.2f}, "
                       f"'off' {off.min():.2f}-{off.max():.2f}): at {level_name(name, 'threshold')} {threshold:.2f} "
                       f"{int((off >= threshold).sum())}/{len(off)} 'off' files come out on and "
                       f"{int((on < threshold).sum())}/{len(on)} 'on' files off; the model does not hear {name} "
                       "apart yet (record it longer or closer, or use a real BEATs checkpoint)")
    return notes


def choose_thresholds(run: TrainedDirectory) -> dict:
    """Grid-search each appliance's threshold (and set its hysteresis) on the run's validation files
    that name it, and write thresholds.yaml (the levels keyed by appliance, the spans, the
    validation metrics). An appliance no validation file names keeps the run's default levels.
    The result's ``unseparated`` says which appliances no level separates, and why (:func:`unseparated`)."""
    predictions = run.val_predictions()
    defaults = run.config.decision
    probs = predictions[probability_columns(defaults.appliances.names)].to_numpy()
    files = file_table(predictions, probs, defaults)
    levels = {}
    for name, level in defaults.levels.items():
        named = files[name].notna()
        if named.any():
            threshold = best_threshold(files[name][named].to_numpy(), files[f"p_{name}"][named].to_numpy(), level.threshold)
            levels[name] = {"threshold": threshold, "on": hysteresis_on(threshold), "off": hysteresis_off(threshold)}
    decision = defaults.replace(levels=levels)
    metrics = file_metrics(predictions, probs, decision)
    run.write_thresholds(decision, metrics)
    return {**decision.to_dict(), "validation_metrics": metrics, "unseparated": unseparated(files, decision)}
