import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile
from click.testing import CliRunner
from conftest import REPO, read_16k

from edge.cli import main
from edge.core.bundle import load_bundle
from edge.core.labels import AC_ON, BOTH_OFF
from edge.engine.classifier import Classifier


def _lines(output: str) -> list[dict]:
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


@pytest.fixture(scope="module")
def batch_inputs(project, tmp_path_factory):
    folder = tmp_path_factory.mktemp("batch")
    good = [project / "samples" / "ac-on-fridge-off-day.m4a", project / "samples" / "ac-off-fridge-off-night.m4a"]
    corrupt = folder / "broken.m4a"
    corrupt.write_bytes(b"\x00" * 5000)
    short = folder / "short.wav"
    soundfile.write(short, np.zeros(16_000 * 4, np.float32), 16_000)
    return good, corrupt, short


def test_batch_lines_and_exit_code(bundle_dir, batch_inputs):
    good, corrupt, short = batch_inputs
    result = CliRunner().invoke(main, ["batch", "--bundle", str(bundle_dir), *map(str, good), str(corrupt), str(short)])
    assert result.exit_code == 1
    lines = _lines(result.output)
    assert [Path(line["path"]).name for line in lines] == [p.name for p in good] + ["broken.m4a", "short.wav"]
    assert lines[0]["status"] == AC_ON and lines[1]["status"] != AC_ON  # the fridge is not asserted: see docs/workstation.md
    for line in lines[:2]:
        assert {"path", "status", "p_ac", "p_fridge", "windows", "duration_sec"} <= set(line)
        assert line["windows"] == 13 and abs(line["duration_sec"] - 24) < 0.1
    assert "broken.m4a: cannot decode audio" in lines[2]["error"]
    assert lines[3]["error"].endswith("short.wav: 4.0 s is shorter than one 6 s window; record at least 6 s or leave the file out")


def test_batch_directory_and_table(bundle_dir, project):
    result = CliRunner().invoke(main, ["batch", "--bundle", str(bundle_dir), str(project / "samples"), "--format", "table"])
    assert result.exit_code == 0, result.output
    assert result.output.count(".m4a") == 8 and "status" in result.output.splitlines()[0]


def test_batch_threshold_override(bundle_dir, project):
    path = str(project / "samples" / "ac-on-fridge-off-day.m4a")
    result = CliRunner().invoke(main, ["batch", "--bundle", str(bundle_dir), "--t-ac", "1.0", path])
    assert _lines(result.output)[0]["status"] != AC_ON


@pytest.fixture(scope="module")
def switching_recording(project, tmp_path_factory):
    """18 s of both-off, then 30 s of AC, at 16 kHz."""
    off = read_16k(project / "samples" / "ac-off-fridge-off-night.m4a")
    on = read_16k(project / "samples" / "ac-on-fridge-off-night.m4a")
    path = tmp_path_factory.mktemp("stream") / "switch.wav"
    soundfile.write(path, np.concatenate([off[: 16_000 * 18], on[: 16_000 * 24], on[16_000 * 18 : 16_000 * 24]]), 16_000)
    return path, 18.0


# The random-weight tiny encoder cannot hear a 1-2 dB fridge, so these stream tests pin the fridge
# detector off (on at 1.0) and check the AC timing, which is what N, K and the hop govern.
FRIDGE_OFF = ["--fridge-on", "1.0", "--fridge-off", "1.0"]


def test_stream_changes_once_with_the_expected_delay(bundle_dir, switching_recording):
    path, switch_at = switching_recording
    result = CliRunner().invoke(main, ["stream", "--bundle", str(bundle_dir), "--hop", "1.5", *FRIDGE_OFF, str(path)])
    assert result.exit_code == 0, result.output
    lines = _lines(result.output)
    assert lines[0]["t"] == 6.0 and lines[1]["t"] == 7.5
    assert {"t", "status", "debounced_status", "p_ac", "p_fridge", "median_ac", "median_fridge", "infer_ms"} <= set(lines[0])
    debounced = [line["debounced_status"] for line in lines]
    changes = [i for i in range(1, len(lines)) if debounced[i] != debounced[i - 1]]
    assert debounced[0] == BOTH_OFF and len(changes) == 1 and debounced[changes[0]] == AC_ON
    bundle = load_bundle(bundle_dir)
    hop, window = bundle.window.hop_sec, bundle.window.window_sec
    n, k = bundle.decision.median_windows(hop), bundle.decision.debounce_updates(hop)
    t_change = lines[changes[0]]["t"]
    # the median needs a majority of N windows hearing the AC, the debounce K identical updates
    assert switch_at + (n // 2 + k - 1) * hop <= t_change <= switch_at + window + (n // 2 + k) * hop

    only = CliRunner().invoke(main, ["stream", "--bundle", str(bundle_dir), "--hop", "1.5", *FRIDGE_OFF, "--only-changes", str(path)])
    assert [line["debounced_status"] for line in _lines(only.output)] == [BOTH_OFF, AC_ON]


def test_stream_int8_precision(bundle_dir, switching_recording):
    result = CliRunner().invoke(main, ["stream", "--bundle", str(bundle_dir), "--precision", "int8", "--hop", "1.5", str(switching_recording[0])])
    assert result.exit_code == 0 and len(_lines(result.output)) == 29


NO_TORCH = """
import sys
import time
sys.modules["torch"] = sys.modules["torchaudio"] = None  # any import of torch now fails
from edge.cli import main
try:
    main(standalone_mode=False)
finally:
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("train", "export") or m.startswith("torch."))
    print("LOADED", loaded, file=sys.stderr)
"""


def _without_torch(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", NO_TORCH, *args], capture_output=True, text=True, cwd=REPO, timeout=120)


def test_edge_runs_where_torch_cannot_be_imported(bundle_dir, project):
    result = _without_torch("batch", "--bundle", str(bundle_dir), str(project / "samples" / "ac-on-fridge-on-day.m4a"))
    assert result.returncode == 0, result.stderr
    assert _lines(result.stdout)[0]["status"] == AC_ON
    assert "LOADED []" in result.stderr, "edge imported the training side"
    workstation = _without_torch("train", "--help")
    assert workstation.returncode != 0
    assert "'humwatch train' runs on the workstation and needs torch, torchaudio, which is not installed" in workstation.stderr


def test_base_install_alone_runs_batch(bundle_dir, project, tmp_path):
    """A venv with only the package's base dependencies (what a Pi installs) runs `humwatch batch`."""
    venv = tmp_path / "pi-venv"
    env = {**os.environ, "VIRTUAL_ENV": str(venv)}
    subprocess.run(["uv", "venv", "--quiet", "--python", sys.executable, str(venv)], check=True, env=env)
    subprocess.run(["uv", "pip", "install", "--quiet", "--python", str(venv / "bin" / "python"), str(REPO)],
                   check=True, env=env, timeout=600)
    probe = subprocess.run([str(venv / "bin" / "python"), "-c", "import torch"], capture_output=True, text=True)
    assert probe.returncode != 0 and "No module named 'torch'" in probe.stderr
    result = subprocess.run([str(venv / "bin" / "humwatch"), "batch", "--bundle", str(bundle_dir),
                             str(project / "samples" / "ac-on-fridge-off-night.m4a")],
                            capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert _lines(result.stdout)[0]["status"] == AC_ON


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_a_window_gives_the_same_result_alone_and_among_loud_batch_mates(bundle_dir, project, precision):
    classifier = Classifier(load_bundle(bundle_dir), precision, threads=1)
    quiet = read_16k(project / "samples" / "ac-off-fridge-off-night.m4a")[:96_000]
    loud = np.random.default_rng(0).uniform(-1, 1, (3, 96_000)).astype(np.float32)  # full-scale noise
    alone = classifier.predict(quiet[None])
    among = classifier.predict(np.concatenate([loud[:2], quiet[None], loud[2:]]))
    assert np.array_equal(alone[0], among[2])


def test_stream_hop_fixed_or_from_the_cpu_budget(bundle_dir, switching_recording):
    path = str(switching_recording[0])
    fixed = _lines(CliRunner().invoke(main, ["stream", "--bundle", str(bundle_dir), "--hop", "3", path]).output)
    assert [line["t"] for line in fixed[:3]] == [6.0, 9.0, 12.0] and {line["hop_sec"] for line in fixed} == {3.0}
    auto = CliRunner().invoke(main, ["stream", "--bundle", str(bundle_dir), "--hop", "auto", "--cpu-budget", "0.5", path])
    assert auto.exit_code == 0
    hops = {line["hop_sec"] for line in _lines(auto.output)}
    assert len(hops) == 1 and 0.5 <= hops.pop() <= 1.5  # the tiny model is cheap: the shortest hops fit
    assert all(0 < line["cpu_share"] <= 0.5 for line in _lines(auto.output))
    bad = CliRunner().invoke(main, ["stream", "--bundle", str(bundle_dir), "--hop", "often", path])
    assert bad.exit_code == 2 and "--hop 'often': expected seconds (e.g. 1.5) or 'auto'" in bad.output


def test_bench_bundle_reports_cost_hops_and_pi_estimates(bundle_dir):
    result = CliRunner().invoke(main, ["bench-bundle", "--bundle", str(bundle_dir), "--windows", "3", "--allow-busy", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output[result.output.index("{"):])["results"]
    assert [row["precision"] for row in rows] == ["fp32", "int8"]
    for row in rows:
        assert row["gflop"] == load_bundle(bundle_dir).manifest.gflop_per_window[row["precision"]]
        assert row["gflops"] > 0 and row["cpu_ms"] > 0 and row["hop_here_sec"] >= 0.5
        assert row["pi4_hop_est_sec"] >= row["pi5_hop_est_sec"] >= 0.5


def test_bench_refuses_a_busy_machine_and_names_the_hog():
    from edge.engine.bench import BusyMachine, check_quiet

    hog = subprocess.Popen([sys.executable, "-c", "import time\nend = time.time() + 4\nwhile time.time() < end: pass"])
    try:
        time.sleep(0.3)
        with pytest.raises(BusyMachine, match=rf"python[^,]* \(pid {hog.pid}, .* cores\).*--allow-busy"):
            check_quiet(allow_busy=False)
        assert f"pid {hog.pid}" in check_quiet(allow_busy=True)
    finally:
        hog.kill()
        hog.wait()
