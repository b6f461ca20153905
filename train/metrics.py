"""File-level metrics (median of window probabilities) and window-level AUCs."""

from __future__ import annotations

import numpy as np
import pandas as pd

from edge.core.decision import decide_file
from edge.core.defaults import DecisionConfig
from edge.core.labels import state_of


def f1(truth: np.ndarray, predicted: np.ndarray) -> float:
    truth, predicted = np.asarray(truth, bool), np.asarray(predicted, bool)
    true_positive = np.sum(truth & predicted)
    denominator = 2 * true_positive + np.sum(truth != predicted)
    return 1.0 if denominator == 0 else float(2 * true_positive / denominator)


def roc_auc(truth: np.ndarray, scores: np.ndarray) -> float | None:
    """Rank AUC (ties averaged); None when only one class is present."""
    truth = np.asarray(truth, bool)
    positives, negatives = int(truth.sum()), int((~truth).sum())
    if positives == 0 or negatives == 0:
        return None
    ranks = pd.Series(scores).rank().to_numpy()
    return float((ranks[truth].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def file_table(windows: pd.DataFrame, probs: np.ndarray, decision: DecisionConfig) -> pd.DataFrame:
    """One row per recording: true and predicted state, median p_ac / p_fridge.

    windows needs recording_id, ac, fridge and daypart columns, aligned with probs [n, 2].
    """
    frame = windows[["recording_id", "ac", "fridge", "daypart"]].reset_index(drop=True).copy()
    rows = []
    for recording_id, group in frame.groupby("recording_id", sort=True):
        result = decide_file(probs[group.index.to_numpy()], decision)
        first = group.iloc[0]
        rows.append({
            "recording_id": recording_id,
            "daypart": first.daypart,
            "ac": int(first.ac),
            "fridge": int(first.fridge),
            "true_state": state_of(bool(first.ac), bool(first.fridge)),
            "predicted_state": result.status,
            "p_ac": result.p_ac,
            "p_fridge": result.p_fridge,
            "windows": len(group),
        })
    return pd.DataFrame(rows)


def _summary(table: pd.DataFrame, decision: DecisionConfig) -> dict:
    return {
        "files": len(table),
        "f1_ac": f1(table.ac, table.p_ac >= decision.t_ac),
        "f1_fridge": f1(table.fridge, table.p_fridge >= decision.t_fridge),
        "state_accuracy": float(np.mean(table.true_state == table.predicted_state)),
    }


def file_metrics(windows: pd.DataFrame, probs: np.ndarray, decision: DecisionConfig) -> dict:
    """File-level F1 (ac), F1 (fridge), 3-state accuracy, overall and per daypart; window AUCs."""
    table = file_table(windows, probs, decision)
    metrics = _summary(table, decision)
    metrics["by_daypart"] = {daypart: _summary(group, decision) for daypart, group in table.groupby("daypart")}
    metrics["window_auc_ac"] = roc_auc(windows.ac.to_numpy(), probs[:, 0])
    metrics["window_auc_fridge"] = roc_auc(windows.fridge.to_numpy(), probs[:, 1])
    return metrics


METRIC_COLUMNS = ["split", "files", "f1_ac", "f1_fridge", "state_accuracy"]


def metric_rows(metrics: dict) -> list[dict]:
    """:func:`file_metrics` as table rows (METRIC_COLUMNS): all files, then each daypart."""
    rows = [{"split": "all", **{key: metrics[key] for key in METRIC_COLUMNS[1:]}}]
    return rows + [{"split": daypart, **values} for daypart, values in sorted(metrics["by_daypart"].items())]


def selection_score(metrics: dict) -> float:
    """What early stopping maximises: the mean of the three file-level figures."""
    return (metrics["f1_ac"] + metrics["f1_fridge"] + metrics["state_accuracy"]) / 3
