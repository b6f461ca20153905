"""The workstation's device choice (tested on the CPU) and the run report."""

import html
import re

import pytest
import torch
from click.testing import CliRunner

from edge.cli import main
from train import device as devices
from train.cache import EmbeddingCache
from train.device import DeviceError, encode_batch, resolve_device
from train.report import REPORT, is_stand_in, render_report
from train.run import Run


def test_auto_picks_cuda_then_mps_then_cpu(monkeypatch):
    assert resolve_device("auto") == torch.device("cpu") == resolve_device("cpu")  # this machine has neither
    monkeypatch.setattr(devices, "_available", lambda: {"cuda": False, "mps": True, "cpu": True})
    assert resolve_device("auto").type == "mps"
    monkeypatch.setattr(devices, "_available", lambda: {"cuda": True, "mps": True, "cpu": True})
    torch.backends.cuda.matmul.allow_tf32 = True
    assert resolve_device("auto").type == "cuda"
    assert torch.backends.cuda.matmul.allow_tf32 is False, "float32 everywhere: the cache stays shareable"


def test_a_missing_device_is_an_error_that_says_what_there_is(project, tiny_checkpoint, tmp_path):
    with pytest.raises(DeviceError, match="--device cuda: not available on this machine .available: cpu."):
        resolve_device("cuda")
    result = CliRunner().invoke(main, ["train", "--beats-checkpoint", str(tiny_checkpoint), "--device", "cuda",
                                       "--manifests", str(project / "data" / "manifests"), "--models", str(tmp_path)])
    assert result.exit_code == 1 and "--device cuda: not available" in result.output


def test_batch_sizes_suit_the_device():
    assert encode_batch(torch.device("cpu")) < encode_batch(torch.device("mps")) < encode_batch(torch.device("cuda"))


def test_the_cache_is_keyed_by_numerics_not_by_device(tmp_path):
    from edge.core.window import WindowConfig

    on_cpu = EmbeddingCache(tmp_path, "ab" * 32, WindowConfig(), 0, [], device=torch.device("cpu"))
    on_gpu = EmbeddingCache(tmp_path, "ab" * 32, WindowConfig(), 0, [], device=torch.device("meta"))
    assert on_cpu.directory == on_gpu.directory and on_cpu.directory.name.startswith("fp32-")


def test_report_of_a_tiny_run(trained_runs):
    run = Run.open(trained_runs["night"])
    page = render_report(run).read_text()
    assert (run.path / REPORT).is_file()
    traces = re.findall(r'<figure class="trace" data-recording="([^"]+)"><img alt="[^"]*" src="data:image/png;base64,', page)
    assert sorted(traces) == sorted(r.recording_id for r in run.recordings("validation"))
    ac, fridge = run.decision.levels["ac"], run.decision.levels["fridge"]
    assert (f'<span class="thresholds">ac.threshold {ac.threshold:.2f} (hysteresis {ac.off:.2f}-{ac.on:.2f}), '
            f'fridge.threshold {fridge.threshold:.2f} (hysteresis {fridge.off:.2f}-{fridge.on:.2f})</span>') in page
    assert "statuses\nac-on, fridge-on, both-off" in page
    assert re.search(r"<h2>Per daypart</h2>\s*<table><tr><th>split</th><th>files</th><th>f1_ac</th><th>f1_fridge</th>"
                     r"<th>state_accuracy</th></tr>", page)
    assert page.count("data:image/png;base64,") == len(traces) + 2  # + F1 curves + training curves
    assert "cross-split" in page.lower() and "<th>validated_on</th>" in page  # both dayparts were trained
    assert is_stand_in(run) and 'class="banner"' in page  # the tiny fixture is not the real architecture
    assert "http://" not in page and "https://" not in page  # nothing to fetch: it opens from disk


def test_report_command(trained_runs):
    result = CliRunner().invoke(main, ["report", "--run", str(trained_runs["day"])])
    assert result.exit_code == 0 and result.output.strip().endswith(REPORT)


def _fake_run(directory, appliances, labels, predictions, epochs):
    """A run directory as training leaves it, without training: config.yaml (validated on the recordings
    of `labels`, {recording: {appliance: on}}), validation predictions, epochs (the report only looks
    for model.pt, never reads it)."""
    from edge.core.decision import DecisionConfig
    from edge.core.window import WindowConfig
    from train.beats import BeatsConfig
    from train.run import CacheUse, RunConfig, RunRecording, Split, TrainOptions

    recordings = {r: RunRecording(r, directory / f"{r}.wav", "0" * 64, "night", named) for r, named in labels.items()}
    config = RunConfig(run_id=directory.name, created="2024-01-01T00:00:00+0000", beats_checkpoint=directory / "beats.pt",
                       beats_checkpoint_sha256="0" * 64, beats_cfg=BeatsConfig(), window=WindowConfig(),
                       split=Split("night", tuple(recordings), ()), recordings=recordings,
                       options=TrainOptions(beats_checkpoint=directory / "beats.pt"),
                       cache=CacheUse(directory, 0, 0), stage2=None, decision=DecisionConfig(appliances))
    directory.mkdir(parents=True)
    (directory / "model.pt").touch()
    run = Run(directory)
    run.save_results(config, epochs[-1], predictions)
    for epoch in epochs:
        run.append_epoch(epoch)
    return Run.open(directory)


def test_report_of_three_appliances_one_masked(tmp_path):
    import numpy as np
    import pandas as pd

    from edge.core.labels import Appliances
    from train.thresholds import choose_thresholds

    appliances = Appliances(("ac", "fridge", "dehumidifier"))
    files = {"ac-on-fridge-off-dehumidifier-off-night": (1, 0, 0), "ac-off-fridge-on-dehumidifier-off-night": (0, 1, 0),
             "ac-off-fridge-off-dehumidifier-on-night": (0, 0, 1), "ac-off-fridge-off-night": (0, 0, np.nan)}
    rows = []
    for recording, labels in files.items():
        for index in range(12):
            heard = [0.9 if label == 1 else 0.1 for label in labels]
            rows.append({"recording_id": recording, "window_index": index, "daypart": "night",
                         **dict(zip(appliances.names, map(float, labels))),
                         **{f"p_{name}": p for name, p in zip(appliances.names, heard)}})
    epochs = [{"stage": "stage1", "epoch": e, "train_loss": 1.0 / e, "val_loss": 1.2 / e, "f1_ac": 1.0, "f1_fridge": 0.5,
               "f1_dehumidifier": None if e == 1 else 1.0, "state_accuracy": 0.75} for e in (1, 2)]
    named = {r: {name: bool(on) for name, on in zip(appliances.names, labels) if on in (0, 1)} for r, labels in files.items()}
    run = _fake_run(tmp_path / "models" / "three", appliances, named, pd.DataFrame(rows), epochs)
    choose_thresholds(run)
    page = render_report(run).read_text()

    traces = re.findall(r'<figure class="trace" data-recording="([^"]+)">', page)
    assert sorted(traces) == sorted(files) and page.count("data:image/png;base64,") == len(files) + 2
    levels = run.decision.levels
    assert levels["dehumidifier"].threshold != 0.70  # chosen on the three files that name it
    expected = ", ".join(f"{name}.threshold {levels[name].threshold:.2f} (hysteresis {levels[name].off:.2f}-{levels[name].on:.2f})"
                         for name in appliances.names)
    assert f'<span class="thresholds">{expected}</span>' in page
    assert "statuses\nac-on, fridge-on, dehumidifier-on, all-off" in page
    header = re.search(r"<h2>Per daypart</h2>\s*<table><tr>(.*?)</tr>", page).group(1)
    assert re.findall(r"<th>([^<]+)</th>", header) == ["split", "files", "f1_ac", "f1_fridge", "f1_dehumidifier",
                                                      "files_dehumidifier", "state_accuracy", "state_files"]
    # the recording that does not name the dehumidifier counts in neither its F1 nor the state accuracy
    assert "<td>all</td><td>4</td><td>1.000</td><td>1.000</td><td>1.000</td><td>3</td><td>1.000</td><td>3</td>" in page


def test_a_threshold_search_without_a_separating_level_says_so(tmp_path):
    """The fridge's 'off' files score as high as its 'on' ones (the demo's random stand-in): `thresholds` still
    picks a level, and it and the report say that none separates, with the ranges and what the level calls
    wrong; the AC, which separates, gets no warning."""
    import pandas as pd

    from edge.core.labels import Appliances

    appliances = Appliances(("ac", "fridge"))
    files = {"ac-on-fridge-on-night": (1, 1, 0.9, 0.31), "ac-on-fridge-off-night": (1, 0, 0.9, 0.30),
             "ac-off-fridge-on-night": (0, 1, 0.1, 0.22), "ac-off-fridge-off-night": (0, 0, 0.1, 0.27)}
    rows = [{"recording_id": recording, "window_index": index, "daypart": "night", "ac": float(ac), "fridge": float(fridge),
             "p_ac": p_ac, "p_fridge": p_fridge}
            for recording, (ac, fridge, p_ac, p_fridge) in files.items() for index in range(4)]
    named = {recording: {"ac": bool(ac), "fridge": bool(fridge)} for recording, (ac, fridge, _, _) in files.items()}
    epochs = [{"stage": "stage1", "epoch": 1, "train_loss": 1.0, "val_loss": 1.0, "f1_ac": 1.0, "f1_fridge": 0.5,
               "state_accuracy": 0.5}]
    run = _fake_run(tmp_path / "models" / "deaf", appliances, named, pd.DataFrame(rows), epochs)
    result = CliRunner().invoke(main, ["thresholds", "--run", str(run.path)])
    assert result.exit_code == 0, result.output
    note = ("no level separates fridge's validation files ('on' medians 0.22-0.31, 'off' 0.27-0.30): at "
            "fridge.threshold 0.13 2/2 'off' files come out on and 0/2 'on' files off; the model does not hear fridge "
            "apart yet (record it longer or closer, or use a real BEATs checkpoint)")
    assert f"warning: {note}" in result.output and "no level separates ac" not in result.output
    page = (run.path / REPORT).read_text()
    assert f'<p class="banner unseparated">{html.escape(note)}</p>' in page
    assert page.count("unseparated") == 1
