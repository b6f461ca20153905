"""Per-file predictions and metrics of a run, and the day/night cross-split summary."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from edge.core.audio import load_windows
from edge.core.decision import decide_file
from edge.core.labels import parse_sample_name
from train.head import predict_model
from train.metrics import file_metrics, file_table
from train.device import resolve_device
from train.run import Run, RunError

TABLE_COLUMNS = ["recording_id", "daypart", "true_state", "predicted_state", "p_ac", "p_fridge", "windows"]
CROSS_SPLIT_COLUMNS = ["validated_on", "run", "f1_ac", "f1_fridge", "state_accuracy"]


def evaluate_validation(run: Run) -> tuple[pd.DataFrame, dict]:
    """The run's validation files, from the predictions saved at training time."""
    predictions = run.val_predictions()
    decision = run.decision
    probs = predictions[["p_ac", "p_fridge"]].to_numpy()
    return file_table(predictions, probs, decision), file_metrics(predictions, probs, decision)


def evaluate_files(run: Run, paths: list[Path], device: str = "auto") -> tuple[pd.DataFrame, dict | None]:
    """Run the run's torch model over audio files (on `device`); metrics over the files whose names carry labels."""
    model, decision, window = run.load_model().to(resolve_device(device)), run.decision, run.window
    rows, labelled, labelled_probs = [], [], []
    for path in paths:
        windows, _ = load_windows(path, window)
        probs = predict_model(model, windows)
        result = decide_file(probs, decision)
        labels = parse_sample_name(path)
        rows.append({"recording_id": path.stem, "daypart": labels.daypart if labels else None,
                     "true_state": labels.state if labels else None, "predicted_state": result.status,
                     "p_ac": result.p_ac, "p_fridge": result.p_fridge, "windows": len(windows)})
        if labels:
            labelled.append(pd.DataFrame({"recording_id": path.stem, "ac": int(labels.ac), "fridge": int(labels.fridge),
                                          "daypart": labels.daypart}, index=range(len(probs))))
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


def cross_split_rows(splits: dict[str, dict]) -> list[dict]:
    """:func:`cross_split` as table rows (CROSS_SPLIT_COLUMNS), one per daypart."""
    return [{"validated_on": daypart, "run": split["run"], **{key: split["metrics"][key] for key in CROSS_SPLIT_COLUMNS[2:]}}
            for daypart, split in sorted(splits.items())]
