"""Per-file predictions and metrics of a run, and the day/night cross-split summary."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from edge.core.audio import load_windows
from edge.core.decision import decide_file, per_appliance
from edge.core.labels import Appliances, parse_sample_name
from train.device import resolve_device
from train.head import predict_model
from train.metrics import file_metrics, file_table, metric_columns, probability_columns
from train.run import Run, RunError


def table_columns(appliances: Appliances) -> list[str]:
    """The per-file table's columns: recording_id, daypart, true_state, predicted_state, p_<name>..., windows."""
    return ["recording_id", "daypart", "true_state", "predicted_state", *probability_columns(appliances.names), "windows"]


def evaluate_validation(run: Run) -> tuple[pd.DataFrame, dict]:
    """The run's validation files, from the predictions saved at training time."""
    predictions = run.val_predictions()
    decision = run.decision
    probs = predictions[probability_columns(decision.appliances.names)].to_numpy()
    return file_table(predictions, probs, decision), file_metrics(predictions, probs, decision)


def evaluate_files(run: Run, paths: list[Path], device: str = "auto") -> tuple[pd.DataFrame, dict | None]:
    """Run the run's torch model over audio files (on `device`); metrics over the files whose names
    mention any of the run's appliances (one they do not mention is masked, as in training)."""
    model, decision, window = run.load_model().to(resolve_device(device)), run.decision, run.window
    appliances = decision.appliances
    rows, labelled, labelled_probs = [], [], []
    for path in paths:
        windows, _ = load_windows(path, window)
        probs = predict_model(model, windows)
        result = decide_file(probs, decision)
        sample = parse_sample_name(path)
        labels = {name: on for name, on in sample.labels.items() if name in appliances.names} if sample else {}
        rows.append({"recording_id": path.stem, "daypart": sample.daypart if sample else None,
                     "true_state": appliances.status(labels) if labels else None, "predicted_state": result.status,
                     **per_appliance("p_{}", result.probabilities), "windows": len(windows)})
        if labels:
            labelled.append(pd.DataFrame({"recording_id": path.stem, "daypart": sample.daypart,
                                          **{name: float(labels.get(name, np.nan)) for name in appliances.names}},
                                         index=range(len(probs))))
            labelled_probs.append(probs)
    metrics = None
    if labelled:
        metrics = file_metrics(pd.concat(labelled, ignore_index=True), np.concatenate(labelled_probs), decision)
    return pd.DataFrame(rows), metrics


def cross_split(models_dir: Path) -> dict[str, dict]:
    """The newest finished run validated on each daypart: {daypart: {run, metrics}}."""
    latest: dict[str, tuple[str, Run]] = {}
    for directory in sorted(Path(models_dir).iterdir()):
        try:
            run = Run.open(directory)
        except RunError:
            continue
        daypart, created = run.config.split.val_daypart, run.config.created
        if daypart and (daypart not in latest or created >= latest[daypart][0]):
            latest[daypart] = (created, run)
    return {daypart: {"run": run.path.name, "metrics": evaluate_validation(run)[1]} for daypart, (_, run) in latest.items()}


def cross_split_columns(splits: dict[str, dict]) -> list[str]:
    """validated_on, run, then the figures of :func:`train.metrics.metric_columns` of every split (the
    seed's: f1_ac, f1_fridge, state_accuracy)."""
    figures = [column for split in splits.values() for column in metric_columns(split["metrics"])[2:]]
    return ["validated_on", "run", *dict.fromkeys(figures)]


def cross_split_rows(splits: dict[str, dict]) -> list[dict]:
    """:func:`cross_split` as table rows (:func:`cross_split_columns`), one per daypart."""
    columns = cross_split_columns(splits)[2:]
    return [{"validated_on": daypart, "run": split["run"], **{key: split["metrics"].get(key) for key in columns}}
            for daypart, split in sorted(splits.items())]
