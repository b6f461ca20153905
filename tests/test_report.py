"""The workstation's device choice (tested on the CPU) and the run report."""

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
    from edge.core.defaults import WindowConfig

    on_cpu = EmbeddingCache(tmp_path, "ab" * 32, WindowConfig(), 0, [], device=torch.device("cpu"))
    on_gpu = EmbeddingCache(tmp_path, "ab" * 32, WindowConfig(), 0, [], device=torch.device("meta"))
    assert on_cpu.directory == on_gpu.directory and on_cpu.directory.name.startswith("fp32-")


def test_report_of_a_tiny_run(trained_runs):
    run = Run.open(trained_runs["night"])
    page = render_report(run).read_text()
    assert (run.path / REPORT).is_file()
    traces = re.findall(r'<figure class="trace" data-recording="([^"]+)"><img alt="[^"]*" src="data:image/png;base64,', page)
    assert sorted(traces) == sorted(r.recording_id for r in run.recordings("validation"))
    decision = run.decision
    assert f"t_ac {decision.t_ac:.2f}" in page and f"t_fridge {decision.t_fridge:.2f}" in page
    assert page.count("data:image/png;base64,") == len(traces) + 2  # + F1 curves + training curves
    assert "cross-split" in page.lower() and "<th>validated_on</th>" in page  # both dayparts were trained
    assert is_stand_in(run) and 'class="banner"' in page  # the tiny fixture is not the real architecture
    assert "http://" not in page and "https://" not in page  # nothing to fetch: it opens from disk


def test_report_command(trained_runs):
    result = CliRunner().invoke(main, ["report", "--run", str(trained_runs["day"])])
    assert result.exit_code == 0 and result.output.strip().endswith(REPORT)
