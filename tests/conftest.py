"""Shared test fixtures: the BEATs golden files in tests/fixtures/beats, a synthetic project, tiny runs."""

from __future__ import annotations

import errno
import os
import subprocess
from pathlib import Path

import numpy as np
import podman_image
import pytest
import rtsp_server

REPO = Path(__file__).resolve().parents[1]
# The tiny golden files travel with the repository; HUMWATCH_BEATS_FIXTURES may point at another copy.
BEATS_FIXTURES = Path(os.environ.get("HUMWATCH_BEATS_FIXTURES", Path(__file__).parent / "fixtures" / "beats"))


@pytest.fixture(scope="session")
def beats_fixtures() -> Path:
    if not (BEATS_FIXTURES / "tiny_beats.pt").is_file():
        raise FileNotFoundError(
            f"BEATs fixtures not found at {BEATS_FIXTURES}: they belong to the repository (tests/fixtures/beats)"
        )
    return BEATS_FIXTURES


@pytest.fixture(scope="session")
def tiny_checkpoint(beats_fixtures: Path) -> Path:
    return beats_fixtures / "tiny_beats.pt"


def read_16k(path) -> np.ndarray:
    """A whole file as mono float32 at 16 kHz, through the project's one audio path."""
    from edge.core.audio import AudioFile

    return np.concatenate(list(AudioFile(path).chunks()))


SYNTH_SECONDS = 24.0  # 13 windows per recording: enough to learn the AC, quick to encode


@pytest.fixture(scope="session")
def project(tmp_path_factory) -> Path:
    """A project directory with synthetic samples and prepared manifests."""
    from train.manifests import prepare
    from train.synth import write_recordings

    root = tmp_path_factory.mktemp("project")
    write_recordings(root / "samples", seconds=SYNTH_SECONDS, seed=0)
    prepare(root / "samples", root / "data" / "manifests")
    return root


def train_options(project: Path, checkpoint: Path, **overrides):
    from train.trainer import TrainOptions

    defaults = dict(beats_checkpoint=checkpoint, manifests_dir=project / "data" / "manifests",
                    models_dir=project / "models", cache_dir=project / "data" / "cache",
                    epochs=25, batch_size=16, warmup_steps=20)
    return TrainOptions(**{**defaults, **overrides})


@pytest.fixture(scope="session")
def trained_runs(project, tiny_checkpoint) -> dict[str, Path]:
    """One run validated on each daypart, with thresholds chosen."""
    from train.run import Run
    from train.thresholds import choose_thresholds
    from train.trainer import Trainer

    runs = {}
    for daypart in ("night", "day"):
        runs[daypart] = Trainer(train_options(project, tiny_checkpoint, val_daypart=daypart), log=lambda *_: None).run()
        choose_thresholds(Run.open(runs[daypart]))
    return runs


@pytest.fixture(scope="session")
def bundle_dir(trained_runs, tmp_path_factory) -> Path:
    """A tiny bundle (float32 + int8) exported from the night-validated run."""
    from export.exporter import export_run

    return export_run(trained_runs["night"], tmp_path_factory.mktemp("bundles") / "tiny", int8=True,
                      parity_windows_per_file=4, log=lambda *_: None)


@pytest.fixture(scope="session")
def off_then_ac(project):
    """24 s of both-off, then 24 s of AC, at 16 kHz."""
    off = read_16k(project / "samples" / "ac-off-fridge-off-night.m4a")
    on = read_16k(project / "samples" / "ac-on-fridge-off-night.m4a")
    return off[: 16_000 * 24], on[: 16_000 * 24]


def pinned_decision(bundle_dir):
    """The bundle's decision with the fridge detector off: the random tiny encoder cannot hear it."""
    from edge.core.bundle import load_bundle

    return load_bundle(bundle_dir).decision.replace(levels={"fridge": {"on": 1.0, "off": 1.0}})


@pytest.fixture
def broker(tmp_path):
    """A real MQTT broker on loopback (mosquitto, or amqtt where it is absent), stopped after the test."""
    from broker import Broker

    running = Broker(tmp_path).start()
    yield running
    running.stop()


@pytest.fixture
def small_disk(tmp_path):
    """A real 256 KB tmpfs (CI runs as root); `fill()` takes every free byte, `free()` gives them back."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root (CI runs as root); the fake-ENOSPC tests cover the logic")
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)], capture_output=True, text=True)
    if result.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")

    class Disk:
        path = mount

        def fill(self):
            with open(mount / "filler", "ab", buffering=0) as filler:
                with pytest.raises(OSError) as raised:
                    while True:
                        filler.write(b"\0" * 4096)
            assert raised.value.errno == errno.ENOSPC

        def free(self):
            (mount / "filler").unlink()

    yield Disk()
    subprocess.run(["umount", "-l", str(mount)], check=True)


FILE_SOURCE = """
import sys, threading, time
import soundfile

class FileSource:  # stands in for the microphone: plays the WAV in argv[1] at 10x real time
    def __init__(self, device=None):
        pass
    def start(self, callback):
        audio, rate = soundfile.read(sys.argv[1], dtype="float32")
        def feed():
            for i in range(0, len(audio), 1600):
                callback(audio[i : i + 1600], False)
                time.sleep(0.01)
        threading.Thread(target=feed, daemon=True).start()
        return rate
    def check(self):
        pass
    def stop(self):
        pass
"""


BROWSER_HINT = ("install Debian's chromium and chromium-driver (apt-get install chromium chromium-driver; "
                ".ci/run does), then: uv run pytest -q -m browser")


def browser_available() -> bool:
    import shutil

    return bool((shutil.which("chromium") or os.path.exists("/usr/bin/chromium")) and
                (shutil.which("chromedriver") or os.path.exists("/usr/bin/chromedriver")))


# marker: (what this machine lacks for those tests, or None; how to get it)
NEEDS = {"browser": (lambda: None if browser_available() else "no chromium / chromedriver on this machine", BROWSER_HINT),
         "rtsp": (rtsp_server.missing, rtsp_server.HINT),
         "container": (podman_image.missing, podman_image.HINT)}


def pytest_collection_modifyitems(config, items):
    """Tests whose system packages are absent are deselected (and the summary says why), never skipped silently."""
    if config.getoption("-m"):
        return
    config._humwatch_deselected = []
    for marker, (lacks, hint) in NEEDS.items():
        marked = [item for item in items if item.get_closest_marker(marker)]
        reason = lacks() if marked else None
        if reason:
            config.hook.pytest_deselected(items=marked)
            items[:] = [item for item in items if not item.get_closest_marker(marker)]
            config._humwatch_deselected.append(f"{len(marked)} {marker} test(s) deselected: {reason}; {hint}")


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    for line in getattr(config, "_humwatch_deselected", ()):
        terminalreporter.write_line(line, yellow=True)
