import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from click.testing import CliRunner

from conftest import train_options
from edge.cli import main
from edge.core.labels import AC_ON
from train.evaluate import evaluate_files
from train.manifests import ManifestError, load_manifests, prepare
from train.run import Run, RunError
from train.trainer import SplitError, Trainer, TrainOptions, early_stopping, split_recordings

RUN_FILES = ["model.pt", "config.yaml", "metrics.jsonl", "best_metrics.json", "val_predictions.parquet"]
QUIET = {"log": lambda *_: None}


def test_runs_have_every_artifact(trained_runs):
    for daypart, run in trained_runs.items():
        assert all((run / name).is_file() for name in RUN_FILES + ["thresholds.yaml"]), run
        config = yaml.safe_load((run / "config.yaml").read_text())
        assert config["split"]["val_daypart"] == daypart
        assert all(r.endswith(daypart) for r in config["split"]["val_recordings"])
        assert len(config["beats_checkpoint"]["sha256"]) == 64
        assert config["window"]["window_samples"] == 96_000
        epochs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        assert epochs and {"f1_ac", "f1_fridge", "state_accuracy", "by_daypart", "window_auc_ac"} <= set(epochs[0])


def test_config_yaml_is_read_and_written_as_one_typed_record(trained_runs, tmp_path):
    written = yaml.safe_load((trained_runs["night"] / "config.yaml").read_text())
    config = Run.open(trained_runs["night"]).config
    assert config.to_yaml() == written  # the record reads every field and writes the same file
    assert config.split.val_daypart == "night" and config.options.views == 2 and config.window.window_samples == 96_000
    assert config.recordings[config.split.val_recordings[0]].path.is_absolute()
    broken = tmp_path / "broken"
    shutil.copytree(trained_runs["night"], broken)
    (broken / "config.yaml").write_text(yaml.safe_dump({**written, "split": {"val_daypart": "night"}}))
    with pytest.raises(RunError, match=r"broken/config.yaml: not a config.yaml this humwatch reads .*val_recordings"):
        Run.open(broken).recordings("validation")


def test_early_stopping_keeps_the_best_epoch_and_stops_after_patience():
    module = torch.nn.Linear(1, 1, bias=False)
    losses = [3.0, 1.0, 2.0, 0.5, 0.9, 0.8, 0.7, 0.1]

    def epoch(number: int) -> dict:
        module.weight.data.fill_(number)  # the weights tell which epoch they come from
        return {"epoch": number, "val_loss": losses[number - 1]}

    best, epochs_run = early_stopping(module, len(losses), 3, epoch, lambda record, best: record["val_loss"] < best["val_loss"])
    assert (best["epoch"], epochs_run) == (4, 7)  # three epochs without a better loss after epoch 4
    assert module.weight.item() == 4.0


def test_ac_is_detected_on_every_file(trained_runs, project):
    """Both splits: the AC state is right on all eight recordings (fridge: reported, not asserted)."""
    paths = sorted((project / "samples").glob("*.m4a"))
    for run in trained_runs.values():
        table, metrics = evaluate_files(Run.open(run), paths)
        assert ((table.predicted_state == AC_ON) == (table.true_state == AC_ON)).all(), table
        assert metrics["f1_ac"] == 1.0
        assert metrics["window_auc_ac"] > 0.99


def test_thresholds_file(trained_runs):
    thresholds = yaml.safe_load((trained_runs["night"] / "thresholds.yaml").read_text())
    assert {"t_ac", "t_fridge", "ac_on", "ac_off", "fridge_on", "fridge_off", "median_sec", "debounce_sec",
            "validation_metrics"} <= set(thresholds)
    assert thresholds["ac_off"] < thresholds["t_ac"] < thresholds["ac_on"]
    assert thresholds["validation_metrics"]["f1_ac"] == 1.0


def test_evaluate_command_prints_table_and_cross_split(trained_runs):
    result = CliRunner().invoke(main, ["evaluate", "--run", str(trained_runs["night"])])
    assert result.exit_code == 0, result.output
    assert "ac-on-fridge-on-night" in result.output and "predicted_state" in result.output
    assert "cross-split" in result.output and "validated_on" in result.output


def test_second_run_encodes_nothing_and_does_not_overwrite(trained_runs, project, tiny_checkpoint):
    run = Trainer(train_options(project, tiny_checkpoint, val_daypart="night", epochs=2), **QUIET).run()
    assert run != trained_runs["night"] and run.name.startswith(trained_runs["night"].name[:4])
    cache = yaml.safe_load((run / "config.yaml").read_text())["cache"]
    assert cache["encoded_windows"] == 0 and cache["reused_windows"] > 0
    assert (trained_runs["night"] / "model.pt").is_file()


def test_same_seed_reproduces_the_run(project, tiny_checkpoint):
    runs = [Trainer(train_options(project, tiny_checkpoint, epochs=3, seed=5), **QUIET).run() for _ in range(2)]
    heads = [torch.load(r / "model.pt", weights_only=True)["head"] for r in runs]
    assert runs[0] != runs[1]
    assert all(torch.equal(heads[0][k], heads[1][k]) for k in heads[0])


def test_interrupted_run_leaves_nothing(project, tiny_checkpoint, monkeypatch, tmp_path):
    models = tmp_path / "models"

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "_save", crash)
    with pytest.raises(KeyboardInterrupt):
        Trainer(train_options(project, tiny_checkpoint, models_dir=models, epochs=1), **QUIET).run()
    assert list(models.iterdir()) == []  # not even a partial directory
    (models / "half").mkdir()
    result = CliRunner().invoke(main, ["export", "--run", str(models / "half")])
    assert result.exit_code != 0 and "not a finished training run" in result.output


def test_a_run_works_from_any_directory(project, tiny_checkpoint, tmp_path, monkeypatch):
    """Prepared and trained with relative paths in one directory; thresholds, evaluate, export from another."""
    workspace, elsewhere = tmp_path / "workspace", tmp_path / "elsewhere"
    shutil.copytree(project / "samples", workspace / "samples")
    elsewhere.mkdir()
    monkeypatch.chdir(workspace)
    prepare(Path("samples"), Path("data/manifests"))
    relative = TrainOptions(beats_checkpoint=tiny_checkpoint, epochs=2, batch_size=16, warmup_steps=4)
    run = (workspace / Trainer(relative, **QUIET).run()).resolve()
    monkeypatch.chdir(elsewhere)
    for command in (["thresholds", "--run", str(run)], ["evaluate", "--run", str(run)],
                    ["export", "--run", str(run), "--out", str(elsewhere / "bundle"), "--parity-windows", "2"]):
        result = CliRunner().invoke(main, command)
        assert result.exit_code == 0, (command, result.output)
    assert (elsewhere / "bundle" / "bundle.json").is_file()


def test_stage2_reports_whether_it_was_kept(project, tiny_checkpoint, tmp_path):
    options = train_options(project, tiny_checkpoint, models_dir=tmp_path, epochs=3, unfreeze_blocks=1, stage2_epochs=1)
    run = Trainer(options, **QUIET).run()
    stage2 = yaml.safe_load((run / "config.yaml").read_text())["stage2"]
    assert stage2["unfreeze_blocks"] == 1 and isinstance(stage2["kept"], bool)
    assert stage2["verdict"].startswith("kept" if stage2["kept"] else "discarded")
    epochs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [e["stage"] for e in epochs][-1] == "stage2"


def _files(project):
    return load_manifests(project / "data" / "manifests")[0]


def test_split_errors(project):
    files = _files(project)
    with pytest.raises(SplitError, match="no night recording to validate on"):
        split_recordings(files[files.daypart == "day"], "night", ())
    with pytest.raises(SplitError, match=r"--val-recordings \['nope'\] not in files.csv"):
        split_recordings(files, "night", ("nope",))
    with pytest.raises(SplitError, match="no training file is left"):
        split_recordings(files, "night", tuple(files.recording_id))
    no_ac = files[(files.ac == 0) | (files.daypart == "night")]
    with pytest.raises(SplitError, match="no recording with ac on"):
        split_recordings(no_ac, "night", ())
    training, validation = split_recordings(files, "day", ())
    assert set(training).isdisjoint(validation) and len(validation) == 4


def test_split_error_comes_before_any_encoding(project, tiny_checkpoint, tmp_path):
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    files, windows, _ = load_manifests(project / "data" / "manifests")
    files[files.daypart == "day"].to_csv(manifests / "files.csv", index=False)
    windows.to_parquet(manifests / "windows.parquet")
    (manifests / "manifest.yaml").write_text((project / "data" / "manifests" / "manifest.yaml").read_text())
    result = CliRunner().invoke(main, ["train", "--beats-checkpoint", str(tiny_checkpoint), "--manifests", str(manifests),
                                       "--cache-dir", str(tmp_path / "cache"), "--models", str(tmp_path / "models")])
    assert result.exit_code == 1 and "no night recording to validate on" in result.output
    assert not (tmp_path / "cache").exists() and not (tmp_path / "models").exists()


def test_prepare_command_reports_bad_names(tmp_path):
    (tmp_path / "samples").mkdir()
    (tmp_path / "samples" / "fridge.wav").write_bytes(b"RIFF")
    result = CliRunner().invoke(main, ["prepare", "--samples", str(tmp_path / "samples"),
                                       "--manifests", str(tmp_path / "m")])
    assert result.exit_code == 1 and "fridge.wav" in result.output and "Rename them" in result.output


def test_val_predictions_cover_every_validation_window(trained_runs, project):
    predictions = pd.read_parquet(trained_runs["day"] / "val_predictions.parquet")
    windows = pd.read_parquet(project / "data" / "manifests" / "windows.parquet")
    assert len(predictions) == int(windows.recording_id.str.endswith("day").sum())
    assert np.all((predictions[["p_ac", "p_fridge"]].to_numpy() >= 0) & (predictions[["p_ac", "p_fridge"]].to_numpy() <= 1))


def test_a_recording_changed_after_prepare_is_refused(project, tiny_checkpoint, tmp_path):
    samples = tmp_path / "samples"
    shutil.copytree(project / "samples", samples)
    prepare(samples, tmp_path / "manifests")
    (samples / "ac-on-fridge-on-day.m4a").write_bytes((project / "samples" / "ac-off-fridge-off-day.m4a").read_bytes())
    options = train_options(project, tiny_checkpoint, manifests_dir=tmp_path / "manifests", models_dir=tmp_path / "models")
    with pytest.raises(ManifestError, match=r"ac-on-fridge-on-day\.m4a: changed since 'humwatch prepare'"):
        Trainer(options, **QUIET).run()


def test_validation_recordings_by_name(project, tiny_checkpoint, tmp_path):
    result = CliRunner().invoke(main, [
        "train", "--beats-checkpoint", str(tiny_checkpoint), "--manifests", str(project / "data" / "manifests"),
        "--cache-dir", str(project / "data" / "cache"), "--models", str(tmp_path), "--epochs", "1",
        "--val-recordings", "ac-on-fridge-off-day,ac-off-fridge-on-night", "--val-recordings", "ac-off-fridge-off-day"])
    assert result.exit_code == 0, result.output
    config = yaml.safe_load(next(tmp_path.glob("*/config.yaml")).read_text())
    assert config["split"]["val_daypart"] is None and next(tmp_path.iterdir()).name.endswith("val-custom")
    assert sorted(config["split"]["val_recordings"]) == ["ac-off-fridge-off-day", "ac-off-fridge-on-night", "ac-on-fridge-off-day"]
