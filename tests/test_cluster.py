"""`--cluster`: a real Ray cluster on this machine (a head and a worker node, each started with `ray
start`), against the local path: the embedding cache, the batch lines, a worker killed mid-run, and
an install without Ray."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile
from conftest import REPO, SYNTH_SECONDS

from edge.cluster.local import LocalCluster, actor_processes, free_port

VIEWS = 2  # the train default, as the local runs of conftest used
WINDOWS = int((SYNTH_SECONDS - 6) / 1.5) + 1  # per recording and view


@pytest.fixture(scope="module")
def cluster():
    with LocalCluster(workers=1, cpus=1) as running:
        yield running


def humwatch(*arguments) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edge.cli", *map(str, arguments)], capture_output=True, text=True,
                          cwd=REPO, timeout=300)


def train_arguments(project: Path, checkpoint: Path, cache: Path, tmp_path: Path, cluster: str) -> list:
    return ["train", "--beats-checkpoint", checkpoint, "--manifests", project / "data" / "manifests",
            "--models", tmp_path / "models", "--cache-dir", cache, "--epochs", 1, "--cluster", cluster]


def cache_files(root: Path) -> dict[Path, Path]:
    return {path.relative_to(root): path for path in sorted(root.rglob("*.npy"))}


def assert_same_as_local(ray_cache: Path, project: Path) -> None:
    """Every file of the night-validated run's cache, at the same key and with the same bytes as
    the local fill wrote (conftest's trained_runs) — so training sees the same arrays."""
    local = cache_files(project / "data" / "cache")
    filled = cache_files(ray_cache)
    assert len(filled) == 4 * (VIEWS + 1) + 4  # 4 training recordings with their views, 4 validation ones clean
    for key, path in filled.items():
        assert key in local, f"{key}: a key the local cache does not have"
        assert path.read_bytes() == local[key].read_bytes(), f"{key}: differs from the local cache"


def encoding(workers: dict[int, Path]) -> list[int]:
    """The workers in the middle of a task (Ray titles them ray::CacheWorker.encode meanwhile)."""
    busy = []
    for pid, folder in workers.items():
        try:
            if (folder / "cmdline").read_bytes().startswith(b"ray::CacheWorker.encode"):
                busy.append(pid)
        except OSError:  # it ended meanwhile
            continue
    return busy


def test_train_fills_the_local_cache_even_when_a_worker_is_killed_mid_run(cluster, project, tiny_checkpoint,
                                                                          trained_runs, tmp_path):
    cache = tmp_path / "cache"
    process = subprocess.Popen([sys.executable, "-m", "edge.cli",
                                *map(str, train_arguments(project, tiny_checkpoint, cache, tmp_path, cluster.address))],
                               cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (stored := cache_files(cache)) or not (busy := encoding(workers := actor_processes("CacheWorker"))):
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.02)
    before = {key: (path.stat().st_ino, path.stat().st_mtime_ns) for key, path in stored.items()}
    os.kill(busy[0], signal.SIGKILL)  # mid-task: Ray must start it again and retry the task
    while not set(actor_processes("CacheWorker")) - set(workers):  # Ray starts the worker again
        assert process.poll() is None and time.monotonic() < deadline, "the run ended before the worker came back"
        time.sleep(0.05)
    stdout, stderr = process.communicate(timeout=180)
    assert process.returncode == 0, stderr
    assert len(before) < 4 * (VIEWS + 1) + 4, "the worker was killed after the work was done"
    after = cache_files(cache)
    assert {key: (after[key].stat().st_ino, after[key].stat().st_mtime_ns) for key in before} == before  # kept as they were
    assert_same_as_local(cache, project)
    training = 4 * (VIEWS + 1) * WINDOWS
    assert f"embedding cache: encoded {training + 4 * WINDOWS} windows, reused 0" in stdout  # each window once
    assert f"encoding windows: 100%|██████████| {training}/{training}" in stderr  # the local fill's bar


@pytest.fixture(scope="module")
def batch_folder(project, tmp_path_factory) -> Path:
    """The project's recordings, a file that is no audio (refused before decoding) and one shorter than a
    window (refused once decoded: on a worker)."""
    folder = tmp_path_factory.mktemp("cluster-batch")
    shutil.copytree(project / "samples", folder / "recordings")
    (folder / "recordings" / "broken.m4a").write_bytes(b"\x00" * 5000)
    soundfile.write(folder / "recordings" / "short.wav", np.zeros(16_000 * 4, np.float32), 16_000)
    return folder


def test_batch_on_the_cluster_prints_the_local_lines(cluster, bundle_dir, batch_folder):
    listed = batch_folder / "list.txt"
    recordings = sorted((batch_folder / "recordings").iterdir())
    listed.write_text("".join(f"{path}\n" for path in reversed(recordings)))
    local = humwatch("batch", "--bundle", bundle_dir, batch_folder / "recordings", "--files-from", listed)
    assert local.returncode == 1 and local.stdout.count("\n") == 2 * len(recordings), local.stderr
    assert '"error": "' + str(batch_folder / "recordings" / "short.wav") + ': 4.0 s is shorter' in local.stdout
    remote = humwatch("batch", "--bundle", bundle_dir, batch_folder / "recordings", "--files-from", listed,
                      "--cluster", cluster.client_address)  # Ray Client, as from a laptop outside the cluster
    assert (remote.returncode, remote.stdout) == (local.returncode, local.stdout), remote.stderr


def test_without_ray_the_option_says_how_to_install_it(bundle_dir, project):
    """Ray hidden from this Python (an install without the extra): --cluster is refused with the
    command that installs it, and the commands work as before without it."""
    without_ray = "import sys; sys.modules['ray'] = None; from edge.cli import main; main()"
    sample = project / "samples" / "ac-on-fridge-off-day.m4a"

    def run(*arguments):
        return subprocess.run([sys.executable, "-c", without_ray, *map(str, arguments)], capture_output=True, text=True,
                              cwd=REPO, timeout=120)

    for command in (["batch", "--bundle", bundle_dir, sample], ["train", "--beats-checkpoint", sample]):
        refused = run(*command, "--cluster", "auto")
        assert refused.returncode == 2, refused.stderr
        assert "Ray is not installed here; install it with pip install 'humwatch[cluster]'" in refused.stderr
    assert run("batch", "--bundle", bundle_dir, sample).returncode == 0


def test_an_address_of_another_form_or_where_nothing_listens(bundle_dir, project):
    sample = project / "samples" / "ac-on-fridge-off-day.m4a"
    wrong = humwatch("batch", "--bundle", bundle_dir, sample, "--cluster", "head.lan")
    assert wrong.returncode == 2 and "expected local, auto, HOST:PORT or ray://HOST:PORT" in wrong.stderr
    port = free_port()  # taken from the system and let go: nothing listens there
    silent = humwatch("batch", "--bundle", bundle_dir, sample, "--cluster", f"ray://127.0.0.1:{port}")
    assert silent.returncode == 1 and f"nothing answers at 127.0.0.1:{port}" in silent.stderr
