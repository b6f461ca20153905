"""Long recordings (half an hour): batch and stream hold a few windows, not the file (issue: 3.26 GB before)."""

import concurrent.futures
import json
import subprocess
import sys

import numpy as np
import pytest
import soxr
from conftest import REPO

from edge.core.audio import AudioFile
from edge.core.bundle import load_bundle
from edge.core.decision import decide_file
from edge.engine.classifier import Classifier
from edge.engine.detector import Detector
from train.synth import RATE, write_m4a

# VmHWM is this process's own peak (ru_maxrss would carry the forking pytest's peak across exec).
PEAK_RSS = """
import re, sys
from edge.cli import main
try:
    main(sys.argv[1:], standalone_mode=False)
finally:
    peak_kb = re.search(r"VmHWM:\\s+(\\d+) kB", open("/proc/self/status").read()).group(1)
    print("PEAK_RSS_MB", int(peak_kb) / 1024, file=sys.stderr)
"""


def _hum_blocks(minutes: float, seed: int = 0):
    """44.1 kHz stereo: room noise and a 120 Hz hum, made one minute at a time."""
    rng = np.random.default_rng(seed)
    t = np.arange(60 * RATE) / RATE
    for _ in range(int(minutes)):
        hum = 0.01 * np.sin(2 * np.pi * 120 * t)
        yield (np.stack([hum, hum]) + rng.standard_normal((2, len(t))) * 0.003).astype(np.float32)


@pytest.fixture(scope="module")
def long_files(tmp_path_factory):
    directory = tmp_path_factory.mktemp("long")
    files = {minutes: directory / f"hum-{minutes}min.m4a" for minutes in (5, 30)}
    with concurrent.futures.ProcessPoolExecutor(2) as pool:
        list(pool.map(_write, files.values(), files))
    return files


def _write(path, minutes: int) -> None:
    write_m4a(path, _hum_blocks(minutes))


def _peak_rss_mb(*args: str) -> tuple[float, str]:
    result = subprocess.run([sys.executable, "-c", PEAK_RSS, *args], capture_output=True, text=True, cwd=REPO, timeout=900)
    assert result.returncode == 0, result.stderr
    return float(result.stderr.rsplit("PEAK_RSS_MB", 1)[1]), result.stdout


def test_memory_does_not_grow_with_the_file(bundle_dir, long_files):
    runs = [(command, minutes) for command in ("batch", "stream") for minutes in long_files]
    with concurrent.futures.ThreadPoolExecutor(2) as pool:  # two at a time: one per core
        measured = dict(zip(runs, pool.map(lambda run: _peak_rss_mb(
            run[0], "--bundle", str(bundle_dir), "--precision", "fp32", "--threads", "1",
            *(["--hop", "1.5"] if run[0] == "stream" else []), str(long_files[run[1]])), runs)))
    for command in ("batch", "stream"):
        peaks = {}
        for minutes in long_files:
            peaks[minutes], output = measured[command, minutes]
            lines = [json.loads(line) for line in output.splitlines()]
            expected_windows = (minutes * 60 - 6) / 1.5 + 1
            if command == "batch":
                assert abs(lines[0]["windows"] - expected_windows) <= 1 and abs(lines[0]["duration_sec"] - minutes * 60) < 1
            else:
                assert abs(len(lines) - expected_windows) <= 1
        # a 30-minute file held whole: 30 * 60 * 44100 * 2 channels * 4 bytes = 635 MB
        print(command, "peak RSS MB by minutes:", peaks)
        assert peaks[30] - peaks[5] < 50, (command, peaks)


def test_streamed_results_equal_the_in_memory_computation(bundle_dir, project):
    """The file decoded whole, resampled in one call and sliced, as before streaming: same within 1e-5."""
    path = project / "samples" / "ac-on-fridge-off-day.m4a"
    bundle = load_bundle(bundle_dir)
    classifier = Classifier(bundle, "fp32", threads=1)
    audio = AudioFile(path)
    whole = soxr.resample(np.concatenate(list(audio.native_chunks())), audio.sample_rate, 16_000, quality="HQ")
    window, hop = bundle.window.window_samples, bundle.window.hop_samples
    windows = np.stack([whole[start : start + window] for start in range(0, len(whole) - window + 1, hop)])
    expected = decide_file(classifier.predict(windows), bundle.decision)
    line = Detector(classifier).classify_file(path).to_json()
    assert line["windows"] == len(windows)
    assert all(abs(line[f"p_{name}"] - p) < 1e-5 for name, p in expected.probabilities.items())
    assert line["status"] == expected.status
