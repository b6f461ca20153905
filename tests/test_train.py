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
from edge.core.decision import DecisionConfig
from edge.core.labels import AC_ON, SEED, Appliances
from train.evaluate import evaluate_files
from train.manifests import ManifestError, load_manifests, prepare
from train.metrics import file_metrics, file_table, metric_columns, metric_rows, selection_score
from train.run import Run, RunConfig, RunError
from train.thresholds import choose_thresholds
from train.trainer import MaskedBCE, SplitError, Trainer, TrainOptions, early_stopping, mean_bce, split_recordings

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
        assert config["labels"] == config["priority"] == ["ac", "fridge"]
        assert list(config["recordings"]["ac-off-fridge-on-night"])[2:] == ["daypart", "ac", "fridge"]
        epochs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        assert epochs and {"f1_ac", "f1_fridge", "state_accuracy", "by_daypart", "window_auc_ac"} <= set(epochs[0])


def test_config_yaml_is_read_and_written_as_one_typed_record(trained_runs, tmp_path):
    written = yaml.safe_load((trained_runs["night"] / "config.yaml").read_text())
    config = Run.open(trained_runs["night"]).config
    assert config.to_yaml() == written  # the record reads every field and writes the same file
    assert config.split.val_daypart == "night" and config.options.views == 2 and config.window.window_samples == 96_000
    assert config.recordings[config.split.val_recordings[0]].path.is_absolute()
    assert config.recordings["ac-on-fridge-off-night"].labels == {"ac": True, "fridge": False}
    assert Run.open(trained_runs["night"]).appliances == SEED
    older = {key: value for key, value in written.items() if key not in ("labels", "priority")}
    assert RunConfig.from_yaml(older) == config  # a run written before labels and priority: the seed's
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
    assert set(thresholds) == {"levels", "median_sec", "debounce_sec", "validation_metrics"}
    assert list(thresholds["levels"]) == ["ac", "fridge"]
    ac = thresholds["levels"]["ac"]
    assert ac["off"] < ac["threshold"] < ac["on"]
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
        split_recordings(files[files.daypart == "day"], "night", (), SEED.names)
    with pytest.raises(SplitError, match=r"--val-recordings \['nope'\] not in files.csv"):
        split_recordings(files, "night", ("nope",), SEED.names)
    with pytest.raises(SplitError, match="no training file is left"):
        split_recordings(files, "night", tuple(files.recording_id), SEED.names)
    no_ac = files[(files.ac == 0) | (files.daypart == "night")]
    with pytest.raises(SplitError, match="no recording with ac on"):
        split_recordings(no_ac, "night", (), SEED.names)
    training, validation = split_recordings(files, "day", (), SEED.names)
    assert set(training).isdisjoint(validation) and len(validation) == 4


def test_split_error_comes_before_any_encoding(project, tiny_checkpoint, tmp_path):
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    files, windows, *_ = load_manifests(project / "data" / "manifests")
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


THREE = Appliances(("ac", "fridge", "dehumidifier"))


def test_the_masked_loss_ignores_a_label_the_recording_does_not_name():
    nan = float("nan")
    labels = np.array([[1, 0, 1], [0, 1, 0], [1, 1, nan], [0, 0, nan]], np.float32)  # the last two: no dehumidifier
    loss_fn = MaskedBCE(labels)
    assert loss_fn.pos_weight.tolist() == [1.0, 1.0, 1.0]  # dehumidifier: 1 on, 1 off among the naming rows
    logits = torch.randn(4, 3, generator=torch.Generator().manual_seed(0), requires_grad=True)
    loss = loss_fn(logits, torch.from_numpy(labels))
    loss.backward()
    assert torch.all(logits.grad[2:, 2] == 0) and torch.all(logits.grad[:, :2] != 0) and torch.all(logits.grad[:2, 2] != 0)
    named = ~np.isnan(labels)
    each = torch.nn.functional.binary_cross_entropy_with_logits(logits.detach(), torch.from_numpy(np.nan_to_num(labels)),
                                                                reduction="none")
    assert torch.isclose(loss, each[torch.from_numpy(named)].mean())  # the mean over the 10 named labels
    seed_labels = labels[:, :2]  # nothing masked: the seed's loss, as before
    expected = torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor([1.0, 1.0]))(logits[:, :2], torch.from_numpy(seed_labels))
    assert torch.isclose(MaskedBCE(seed_labels)(logits[:, :2], torch.from_numpy(seed_labels)), expected)
    assert mean_bce(np.full((4, 3), 0.5), labels) == pytest.approx(np.log(2))


def _windows(rows):
    """Two windows per (recording_id, daypart, ac, fridge, dehumidifier) row."""
    return pd.DataFrame([dict(zip(("recording_id", "daypart", *THREE.names), row)) for row in rows for _ in range(2)])


def test_metrics_count_only_the_recordings_that_name_an_appliance():
    nan = float("nan")
    windows = _windows([("r1", "day", 1, 0, 1), ("r2", "day", 0, 1, 0), ("r3", "night", 1, 1, nan), ("r4", "night", 0, 0, nan)])
    # the AC and the fridge heard right; the dehumidifier "heard" in r3 and r4, which do not name it
    probs = np.repeat([[0.9, 0.1, 0.9], [0.1, 0.9, 0.1], [0.9, 0.9, 0.9], [0.1, 0.8, 0.9]], 2, axis=0)
    decision = DecisionConfig(THREE)
    table = file_table(windows, probs, decision).set_index("recording_id")
    assert np.isnan(table.dehumidifier["r3"]) and table.true_state["r3"] == "ac-on"
    assert pd.isna(table.true_state["r4"])  # off, off and the dehumidifier unknown: its state is not determined
    metrics = file_metrics(windows, probs, decision)
    assert (metrics["files"], metrics["files_ac"], metrics["files_dehumidifier"], metrics["state_files"]) == (4, 4, 2, 3)
    assert metrics["f1_dehumidifier"] == 1.0 and metrics["window_auc_dehumidifier"] == 1.0  # r3, r4 as "off": 0.5
    assert metrics["f1_fridge"] == pytest.approx(0.8) and metrics["state_accuracy"] == 1.0
    assert metrics["by_daypart"]["night"]["files_dehumidifier"] == 0 and metrics["by_daypart"]["night"]["f1_dehumidifier"] is None
    assert selection_score(metrics) == pytest.approx((1 + 0.8 + 1 + 1) / 4)
    assert metric_columns(metrics) == ["split", "files", "f1_ac", "f1_fridge", "f1_dehumidifier", "files_dehumidifier",
                                       "state_accuracy", "state_files"]
    assert [row["files_dehumidifier"] for row in metric_rows(metrics)] == [2, 2, 0]
    seed = file_metrics(windows.drop(columns="dehumidifier"), probs[:, :2], DecisionConfig())
    assert metric_columns(seed) == ["split", "files", "f1_ac", "f1_fridge", "state_accuracy"]  # the seed's, as before
    assert selection_score(seed) == (seed["f1_ac"] + seed["f1_fridge"] + seed["state_accuracy"]) / 3


def _three_appliance_project(project, root):
    """The seed's recordings, half of them renamed to name a dehumidifier too (on with both, off with neither)."""
    renamed = {"ac-on-fridge-on": "ac-on-fridge-on-dehumidifier-on", "ac-off-fridge-off": "ac-off-fridge-off-dehumidifier-off"}
    (root / "samples").mkdir(parents=True)
    for path in sorted((project / "samples").glob("*.m4a")):
        condition, daypart = path.stem.rsplit("-", 1)
        shutil.copy(path, root / "samples" / f"{renamed.get(condition, condition)}-{daypart}.m4a")
    prepare(root / "samples", root / "manifests")
    return root / "manifests"


def test_a_third_appliance_named_by_half_the_recordings_trains(project, tiny_checkpoint, tmp_path):
    manifests = _three_appliance_project(project, tmp_path)
    train = ["train", "--beats-checkpoint", str(tiny_checkpoint), "--manifests", str(manifests),
             "--cache-dir", str(project / "data" / "cache"), "--models", str(tmp_path / "models"), "--epochs", "2"]
    refused = CliRunner().invoke(main, [*train, "--priority", "dehumidifier,heater"])
    assert refused.exit_code == 1 and "--priority dehumidifier,heater" in refused.output and "heater is not one" in refused.output
    assert not (tmp_path / "models").exists()
    result = CliRunner().invoke(main, [*train, "--priority", "dehumidifier"])
    assert result.exit_code == 0, result.output
    assert "F1 dehumidifier" in result.output
    run = Run.open(next((tmp_path / "models").iterdir()))
    config = yaml.safe_load((run.path / "config.yaml").read_text())
    assert config["labels"] == ["ac", "fridge", "dehumidifier"] and config["priority"] == ["dehumidifier", "ac", "fridge"]
    assert config["options"]["priority"] == ["dehumidifier"]
    assert "dehumidifier" not in config["recordings"]["ac-on-fridge-off-night"]  # masked, not "off"
    assert config["recordings"]["ac-on-fridge-on-dehumidifier-on-night"]["dehumidifier"] == 1
    assert run.appliances == Appliances(THREE.names, ("dehumidifier",)) and run.config.decision.appliances == run.appliances
    assert torch.load(run.path / "model.pt", weights_only=True)["head_config"]["labels"] == 3
    predictions = run.val_predictions()
    assert list(predictions.columns) == ["recording_id", "window_index", "daypart", *THREE.names,
                                         "p_ac", "p_fridge", "p_dehumidifier"]
    named = predictions.groupby("recording_id").dehumidifier.apply(lambda values: values.notna().all())
    assert sorted(named[named].index) == ["ac-off-fridge-off-dehumidifier-off-night", "ac-on-fridge-on-dehumidifier-on-night"]
    best = run.best_metrics()
    assert (best["files"], best["files_dehumidifier"], best["files_ac"]) == (4, 2, 4)
    chosen = choose_thresholds(run)
    written = yaml.safe_load((run.path / "thresholds.yaml").read_text())["levels"]["dehumidifier"]
    assert chosen["levels"]["dehumidifier"] == written and written["off"] < written["threshold"] < written["on"]
    assert run.decision.levels["dehumidifier"].threshold == written["threshold"]
    shown = CliRunner().invoke(main, ["evaluate", "--run", str(run.path)])
    assert shown.exit_code == 0, shown.output
    assert "p_dehumidifier" in shown.output and "files_dehumidifier" in shown.output and "window AUC: ac" in shown.output


def test_the_background_pool_prefers_recordings_that_name_every_appliance_off():
    from train.augment import background_ids

    labels = {"old-quiet": {"ac": False, "fridge": False}, "new-quiet": {"ac": False, "fridge": False, "dehumidifier": False},
              "new-dry": {"ac": False, "fridge": False, "dehumidifier": True}}
    assert background_ids(labels, ("ac", "fridge", "dehumidifier")) == ["new-quiet"]  # old-quiet may hold it running
    del labels["new-quiet"]
    assert background_ids(labels, ("ac", "fridge", "dehumidifier")) == ["old-quiet"]  # nothing better: the named ones off
    assert background_ids(labels, ("ac", "fridge")) == ["old-quiet"]  # a running dehumidifier is never background


def test_a_run_written_before_levels_were_keyed_by_appliance_still_reads(trained_runs, tmp_path):
    """thresholds.yaml (and config.yaml's decision) with the flat keys t_ac, ac_on, ... of the release before."""
    from train.run import Run

    old = tmp_path / "old-run"
    shutil.copytree(trained_runs["night"], old)
    for name in ("thresholds.yaml", "config.yaml"):
        data = yaml.safe_load((old / name).read_text())
        decision = data if name == "thresholds.yaml" else data["decision"]
        levels = decision.pop("levels")
        decision.update({f"t_{appliance}": sides["threshold"] for appliance, sides in levels.items()})
        for appliance, sides in levels.items():
            decision.update({f"{appliance}_on": sides["on"], f"{appliance}_off": sides["off"]})
        (old / name).write_text(yaml.safe_dump(data))
    assert "t_ac" in yaml.safe_load((old / "thresholds.yaml").read_text())
    assert Run.open(old).decision == Run.open(trained_runs["night"]).decision
