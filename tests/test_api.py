"""The front door: the Python example of docs/python.md, the Detector, and the decision settings after a fallback."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pytest
import soundfile
from conftest import REPO

KEYS = ("t", "status", "debounced_status", "ac_running", "fridge_running")


def documented_example() -> str:
    """The first python block of docs/python.md ("From Python")."""
    page = (REPO / "docs" / "python.md").read_text(encoding="utf-8")
    return re.search(r"```python\n(.*?)```", page, re.S).group(1)


@pytest.fixture(scope="module")
def recording(tmp_path_factory, off_then_ac) -> str:
    """Both-off then AC, at 44.1 kHz so that the example resamples as a camera or a USB mic would."""
    import soxr

    audio = soxr.resample(np.concatenate(off_then_ac), 16_000, 44_100)
    path = tmp_path_factory.mktemp("api") / "off-then-ac.wav"
    soundfile.write(path, audio, 44_100, subtype="FLOAT")
    return str(path)


def test_the_documented_example_runs_and_equals_humwatch_stream(bundle_dir, recording):
    code = documented_example().replace("bundles/kitchen", str(bundle_dir)).replace("recording.wav", recording)
    namespace: dict = {}
    exec(compile(code, "docs/python.md", "exec"), namespace)
    lines = namespace["lines"]
    streamed = subprocess.run([sys.executable, "-m", "edge.cli", "stream", "--bundle", str(bundle_dir), "--hop", "1.5",
                               recording], capture_output=True, text=True, check=True, cwd=REPO).stdout.splitlines()
    streamed = [json.loads(line) for line in streamed]
    assert len(lines) == len(streamed) > 10
    for mine, theirs in zip(lines, streamed):
        mine = mine.to_json()
        assert {key: mine[key] for key in KEYS} == {key: theirs[key] for key in KEYS}
        # (1 s chunks here, the decoder's frames there: the resampler's rounding differs by ~1e-5)
        assert abs(mine["p_ac"] - theirs["p_ac"]) < 1e-4 and abs(mine["p_fridge"] - theirs["p_fridge"]) < 1e-4
    assert lines[0].debounced_status != "ac-on" and lines[-1].debounced_status == "ac-on"  # off, then the AC
    assert namespace["whole"].windows == len(lines) and namespace["whole"].path == recording
    assert namespace["whole"].to_json()["status"] == namespace["whole"].status == "ac-on"


def test_chunk_size_and_rate_do_not_change_the_lines(bundle_dir, off_then_ac):
    from edge import Detector

    audio = np.concatenate(off_then_ac)
    runs = []
    for chunk in (16_000, 1_234):
        detector = Detector.from_bundle(bundle_dir, hop=1.5)
        lines = [line for start in range(0, len(audio), chunk) for line in detector.feed(audio[start:start + chunk], 16_000)]
        runs.append([(line.t, line.debounced_status, round(line.probabilities["ac"], 5)) for line in lines])
    assert runs[0] == runs[1] and len(runs[0]) == 29


def test_overrides_are_checked_and_reported(bundle_dir):
    from edge import Detector

    detector = Detector.from_bundle(bundle_dir, hop=1.5, median_sec=3.0, debounce_sec=4.5)
    assert (detector.decision.median_sec, detector.decision.debounce_sec) == (3.0, 4.5)
    with pytest.raises(ValueError, match="median_seconds: not a decision setting"):
        Detector.from_bundle(bundle_dir, hop=1.5, median_seconds=3.0)
    with pytest.raises(ValueError, match=r"t_dehumidifier: not a decision setting of these appliances \(ac, fridge\)"):
        Detector.from_bundle(bundle_dir, hop=1.5, t_dehumidifier=0.5)
    with pytest.raises(ValueError, match=r"t_ac: .*; write levels=\{'ac': \{'threshold': \.\.\.\}\}"):
        Detector.from_bundle(bundle_dir, hop=1.5, t_ac=0.5)  # an earlier release's flat key: its new spelling
    with pytest.raises(ValueError, match=r"ac.threshold: 1.5 is outside \[0, 1\]"):
        Detector.from_bundle(bundle_dir, hop=1.5, levels={"ac": {"threshold": 1.5}})
    with pytest.raises(ValueError, match=r"dehumidifier: not an appliance of these levels \(ac, fridge\)"):
        Detector.from_bundle(bundle_dir, hop=1.5, levels={"dehumidifier": {"on": 0.8}})
    assert Detector.from_bundle(bundle_dir, hop=1.5, levels={"fridge": {"on": 0.9}}).decision.levels["fridge"].on == 0.9


def test_overridden_spans_survive_the_fallback_to_the_teacher(bundle_dir):
    """After the fallback the teacher decides with the overridden spans (a median of 2 windows and a
    debounce of 3 updates at a 1.5 s hop), as its lines show: not with the bundle's 7 and 2."""
    from test_student import AlwaysAcStudent, pinned_decision

    from edge import Detector
    from edge.core.bundle import load_bundle
    from edge.core.decision import DecisionOverrides
    from edge.engine.audit import Auditor
    from edge.engine.pacing import HopPlanner

    class StepTeacher:  # hears the AC where a window ends on the raised level
        precision = "fp32"

        def __init__(self, bundle):
            self.bundle, self.window_samples = bundle, bundle.window.window_samples
            self.decision = pinned_decision(bundle.path).replace(levels={"ac": {"threshold": 0.75, "on": 0.8, "off": 0.6}})

        def predict(self, windows):
            return np.array([[0.95 if window[-1] > 0.25 else 0.05, 0.05] for window in windows], np.float32)

    bundle = load_bundle(bundle_dir)
    teacher = StepTeacher(bundle)
    auditor = Auditor(lambda: teacher, every_sec=1.5, degraded_rate=0.1, fallback_rate=0.5)
    overrides = DecisionOverrides(median_sec=3.0, debounce_sec=4.5)
    detector = Detector(AlwaysAcStudent(bundle), HopPlanner(1.5, cpu_sec=0.0), overrides, auditor=auditor)
    hiss = np.random.default_rng(0).standard_normal(16_000 * 60).astype(np.float32) * 1e-3
    quiet, raised = hiss[: 16_000 * 30], hiss[16_000 * 30 :] + 0.5
    lines = detector.feed(quiet, 16_000)
    assert auditor.fell_back and lines[-1].precision == "fp32" and detector.classifier is teacher
    assert detector.decision == overrides.apply(teacher.decision) and lines[-1].debounced_status == "both-off"
    lines = detector.feed(raised, 16_000)
    heard = next(i for i, line in enumerate(lines) if line.probabilities["ac"] > 0.5)  # the first window on the step
    on = next(i for i, line in enumerate(lines) if line.on["ac"])
    running = next(i for i, line in enumerate(lines) if line.running["ac"])
    assert (on - heard, running - on) == (1, 2), "a median of 2 windows, then 3 identical updates"

def test_feed_mixes_channels_down_and_scales_integer_pcm(bundle_dir, off_then_ac):
    """Stereo (frames, 2) is one stream of mono audio, not twice as long; int16 PCM is scaled by 32768:
    both give the lines of the float mono audio they hold (int16 within its rounding)."""
    from edge import Detector

    mono = np.concatenate(off_then_ac)[: 16_000 * 20]
    stereo = np.stack([mono * 1.5, mono * 0.5], axis=1)  # the mean is `mono`
    pcm = np.round(mono * 32768).astype(np.int16)
    runs = {}
    for name, samples in (("mono", mono), ("stereo", stereo), ("int16", pcm)):
        lines = Detector.from_bundle(bundle_dir, hop=1.5).feed(samples, 16_000)
        runs[name] = [(line.t, line.debounced_status, line.probabilities["ac"]) for line in lines]
    assert len(runs["mono"]) == 10 and runs["mono"][-1][0] == 19.5  # 20 s of audio: lines up to t = 19.5 s
    assert runs["stereo"] == runs["mono"]
    assert [line[:2] for line in runs["int16"]] == [line[:2] for line in runs["mono"]]
    assert max(abs(a[2] - b[2]) for a, b in zip(runs["int16"], runs["mono"])) < 1e-3


@pytest.mark.parametrize("samples, sample_rate, message", [
    (np.zeros((2, 96_000), np.float32), 16_000, r"shape \(2, 96000\) would be 96000 channels.*pass samples\.T"),
    (np.zeros((10, 2, 2), np.float32), 16_000, r"shape \(10, 2, 2\); pass 1-D mono or 2-D \(frames, channels\)"),
    (np.full(16_000, 1e4, np.float32), 16_000, r"samples reach 1e\+04, far outside the full scale.*divide by their full "
                                                r"scale, e.g\. 32768, or pass the int16 array"),
    (np.array([0.0, np.nan], np.float32), 16_000, "NaN or infinite samples"),
    (np.zeros(16_000, bool), 16_000, "dtype bool is not audio"),
    (np.zeros(16_000, np.float32), 0, r"sample_rate 0: pass the audio's rate in Hz, an integer in 1000-768000"),
    (np.zeros(16_000, np.float32), 44_100.5, r"sample_rate 44100\.5"),
])
def test_feed_refuses_what_it_cannot_mean(bundle_dir, samples, sample_rate, message):
    from edge import AudioError, Detector

    detector = Detector.from_bundle(bundle_dir, hop=1.5)
    with pytest.raises(AudioError, match=message):
        detector.feed(samples, sample_rate)


def test_the_package_lists_its_api_and_a_detector_says_what_it_is(bundle_dir):
    import edge
    from edge import Detector

    assert {"Detector", "HopLine", "AudioError", "BundleError"} <= set(dir(edge))
    shown = repr(Detector.from_bundle(bundle_dir, hop=1.5))
    assert shown == (f"Detector(bundle={str(bundle_dir)!r}, precision='fp32', appliances=['ac', 'fridge'], "
                     "window_sec=6, hop_sec=1.5, sample_rate=16000)")
