"""File-level metrics (median of window probabilities) and window-level AUCs, per appliance.

A recording that does not name an appliance (its label is NaN) is masked: it counts in none of
that appliance's figures (``files_<name>`` says how many do), and in the state accuracy only when
the appliances it names decide its state (``state_files``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from edge.core.decision import DecisionConfig, decide_file, per_appliance
from edge.core.labels import SEED
from train.manifests import named_labels


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


def probability_columns(names: Sequence[str]) -> list[str]:
    """p_<name> for each appliance: the probability columns of predictions and file tables."""
    return list(per_appliance("p_{}", dict.fromkeys(names)))


def file_table(windows: pd.DataFrame, probs: np.ndarray, decision: DecisionConfig) -> pd.DataFrame:
    """One row per recording: recording_id, daypart, one label column per appliance (1 / 0, NaN where
    the recording does not name it), true_state (None when the named appliances cannot decide it),
    predicted_state, p_<name> (the median probability) per appliance, windows.

    windows needs recording_id, daypart and one label column per appliance of `decision`, aligned with
    probs [n, appliances]."""
    names = decision.appliances.names
    frame = windows[["recording_id", "daypart", *names]].reset_index(drop=True)
    rows = []
    for recording_id, group in frame.groupby("recording_id", sort=True):
        result = decide_file(probs[group.index.to_numpy()], decision)
        first = group.iloc[0]
        labels = named_labels(first, names)
        rows.append({
            "recording_id": recording_id,
            "daypart": first.daypart,
            **{name: int(labels[name]) if name in labels else np.nan for name in names},
            "true_state": decision.appliances.status(labels),
            "predicted_state": result.status,
            **per_appliance("p_{}", result.probabilities),
            "windows": len(group),
        })
    columns = ["recording_id", "daypart", *names, "true_state", "predicted_state", *probability_columns(names), "windows"]
    return pd.DataFrame(rows, columns=columns)


def _summary(table: pd.DataFrame, decision: DecisionConfig) -> dict:
    """files; per appliance its F1 over the recordings that name it (None when none does) and their
    count; the state accuracy over the recordings whose state is decided, and their count."""
    names = decision.appliances.names
    named = {name: table[name].notna() for name in names}
    decided = table.true_state.notna()
    return {
        "files": len(table),
        **{f"f1_{name}": f1(table[name][named[name]], table[f"p_{name}"][named[name]] >= decision.levels[name].threshold)
           if named[name].any() else None for name in names},
        "state_accuracy": float(np.mean(table.true_state[decided] == table.predicted_state[decided]))
        if decided.any() else None,
        **{f"files_{name}": int(named[name].sum()) for name in names},
        "state_files": int(decided.sum()),
    }


def file_metrics(windows: pd.DataFrame, probs: np.ndarray, decision: DecisionConfig) -> dict:
    """``labels`` (the appliances), then :func:`_summary` overall and per daypart (``by_daypart``), and
    each appliance's window AUC over the windows whose recording names it (``window_auc_<name>``)."""
    table = file_table(windows, probs, decision)
    names = decision.appliances.names
    metrics = {"labels": list(names), **_summary(table, decision)}
    metrics["by_daypart"] = {daypart: _summary(group, decision) for daypart, group in table.groupby("daypart")}
    for index, name in enumerate(names):
        truth = windows[name].to_numpy(dtype=float)
        named = ~np.isnan(truth)
        metrics[f"window_auc_{name}"] = roc_auc(truth[named], probs[named, index])
    return metrics


def metric_columns(metrics: dict) -> list[str]:
    """The columns of :func:`metric_rows`: split, files, f1_<name> per appliance, state_accuracy (the
    seed's: split, files, f1_ac, f1_fridge, state_accuracy); a count of its own after a figure that
    counts fewer recordings than ``files`` (files_<name>, state_files)."""
    files, columns = metrics["files"], ["split", "files"]
    for name in metrics.get("labels", SEED.names):
        columns += [f"f1_{name}"] + ([f"files_{name}"] if metrics.get(f"files_{name}", files) != files else [])
    return columns + ["state_accuracy"] + (["state_files"] if metrics.get("state_files", files) != files else [])


def metric_rows(metrics: dict) -> list[dict]:
    """:func:`file_metrics` as table rows (:func:`metric_columns`): all files, then each daypart."""
    rows = [{"split": "all", **{key: metrics[key] for key in metric_columns(metrics)[1:]}}]
    return rows + [{"split": daypart, **values} for daypart, values in sorted(metrics["by_daypart"].items())]


def selection_score(metrics: dict) -> float:
    """What early stopping maximises: the mean of the appliances' file-level F1s and the state
    accuracy (for the seed (f1_ac + f1_fridge + state_accuracy) / 3); a figure no validation
    recording counts in (None) is left out."""
    figures = [metrics[f"f1_{name}"] for name in metrics["labels"]] + [metrics["state_accuracy"]]
    present = [figure for figure in figures if figure is not None]
    return sum(present) / len(present)
