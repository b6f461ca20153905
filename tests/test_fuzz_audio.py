"""One bad file never stops the others: random, truncated, empty and mutated audio of every supported
type, headers no audio has, samples no microphone makes, unreadable files and folders, and names with
control characters, through AudioFile, `humwatch batch` and `humwatch prepare`. Seeded, a few seconds."""

import json
import os
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile
from conftest import REPO

from edge.core.audio import MAX_PEAK, AudioError, AudioFile, iter_windows
from edge.core.files import walk_files
from edge.core.labels import AUDIO_SUFFIXES, SEED, is_audio, parse_sample_name, sample_file_name, shown_name
from edge.core.window import WindowConfig
from train.manifests import FILES_CSV, ManifestError, prepare

RATE = 22_050
SECONDS = 7.0  # one 6 s window and a bit
BAD_KINDS = ("random", "truncated", "empty")


def write_good(path: Path, seed: int = 0, channels: int = 2) -> Path:
    """A short hum with noise (stereo, or mono), in the format the suffix names."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(RATE * SECONDS)) / RATE
    mono = 0.2 * np.sin(2 * np.pi * (100 + 20 * seed) * t) + 0.05 * rng.standard_normal(t.size)
    planes = np.stack([mono, 0.9 * mono][:channels]).astype(np.float32)  # [channels, n]
    layout = "stereo" if channels == 2 else "mono"
    if path.suffix in (".m4a", ".aac"):
        with av.open(str(path), "w", format="ipod" if path.suffix == ".m4a" else "adts") as container:
            stream = container.add_stream("aac", rate=RATE, layout=layout)
            frame = av.AudioFrame.from_ndarray(planes, format="fltp", layout=layout)
            frame.sample_rate = RATE
            for packet in [*stream.encode(frame), *stream.encode(None)]:
                container.mux(packet)
    else:
        soundfile.write(path, planes.T, RATE, format=path.suffix.strip()[1:].upper())  # "x.wav\n" too
    return path


def bad_content(good: Path, kind: str, rng: np.random.Generator) -> bytes:
    data = good.read_bytes()
    return {"random": rng.bytes(int(rng.integers(64, 4096))),
            "truncated": data[: len(data) * 3 // 10],  # about 2 s: cut short of one window, or undecodable
            "empty": b""}[kind]


def mutations(data: bytes, rng: np.random.Generator, count: int) -> list[bytes]:
    """Header kept and the rest random, or a few bytes overwritten anywhere."""
    out = []
    for i in range(count):
        if i % 2:
            keep = int(rng.integers(4, 200))
            out.append(data[:keep] + rng.bytes(len(data) - keep))
        else:
            mutated = bytearray(data)
            for where in rng.integers(0, len(data), int(rng.integers(1, 40))):
                mutated[where] = int(rng.integers(0, 256))
            out.append(bytes(mutated))
    return out


def decode_or_error(path: Path) -> AudioError | None:
    """None when the file gives windows (all finite and within MAX_PEAK), else its AudioError; any
    other exception fails the test."""
    try:
        windows = [w for _, w in iter_windows(AudioFile(path), WindowConfig())]
    except AudioError as error:
        return error
    assert windows and all(np.isfinite(w).all() and np.abs(w).max() <= MAX_PEAK for w in windows)
    return None


@pytest.mark.parametrize("suffix", AUDIO_SUFFIXES)
def test_broken_audio_of_every_type_is_an_audio_error_naming_the_file(tmp_path, suffix):
    good = write_good(tmp_path / f"good{suffix}")
    assert decode_or_error(good) is None
    rng = np.random.default_rng(AUDIO_SUFFIXES.index(suffix))
    for kind in BAD_KINDS:
        bad = tmp_path / f"{kind}{suffix}"
        bad.write_bytes(bad_content(good, kind, rng))
        error = decode_or_error(bad)
        assert error is not None and str(error).startswith(f"{bad}: "), (kind, error)
    for i, data in enumerate(mutations(good.read_bytes(), rng, 24)):
        mutated = tmp_path / f"mutated-{i}{suffix}"
        mutated.write_bytes(data)
        error = decode_or_error(mutated)  # decodes, or says why: never another exception, never NaN
        assert error is None or str(error).startswith(f"{mutated}: ")


def _set_wav_rate(path: Path, rate: int) -> None:
    data = bytearray(path.read_bytes())
    assert data[:4] == b"RIFF" and data[12:16] == b"fmt "
    data[24:28] = rate.to_bytes(4, "little")
    path.write_bytes(bytes(data))


def _set_adts_channels(path: Path, configuration: int) -> None:
    """Rewrite the channel configuration in every ADTS frame header (7: eight channels, 7.1)."""
    data = bytearray(path.read_bytes())
    start = 0
    while start < len(data):
        assert data[start] == 0xFF and data[start + 1] & 0xF0 == 0xF0, "not at an ADTS frame"
        data[start + 2] = (data[start + 2] & 0xFE) | (configuration >> 2)
        data[start + 3] = (data[start + 3] & 0x3F) | ((configuration & 3) << 6)
        start += ((data[start + 3] & 0x03) << 11) | (data[start + 4] << 3) | (data[start + 5] >> 5)
    path.write_bytes(bytes(data))


def test_a_header_no_audio_has_is_refused_before_decoding(tmp_path):
    for rate, shown in ((100, "100 Hz"), (2_000_000, "2000000 Hz")):
        wav = write_good(tmp_path / f"rate-{rate}.wav")
        _set_wav_rate(wav, rate)
        with pytest.raises(AudioError, match=rf"rate-{rate}\.wav: the stream says {shown}, 2 channel\(s\), but 1000-768000 Hz"):
            AudioFile(wav)
    # PyAV walks past the plane list of a planar frame with 8 channels and crashes the process: refused
    eight = write_good(tmp_path / "eight.aac", channels=1)
    _set_adts_channels(eight, 7)
    with pytest.raises(AudioError, match=r"eight\.aac: the stream says 22050 Hz, 8 channel\(s\), but .* 1-7 channels"):
        AudioFile(eight)


@pytest.mark.parametrize("value, message", [(1e30, r"samples reach 1e\+30, far outside the full scale \[-1, 1\]"),
                                            (np.nan, "the audio holds NaN or infinite samples"),
                                            (np.inf, "the audio holds NaN or infinite samples")])
def test_samples_not_finite_or_far_beyond_full_scale_are_refused(tmp_path, value, message):
    audio = np.full((int(RATE * SECONDS), 2), 0.1, np.float32)
    audio[RATE * 3, 1] = value  # one sample in one channel, before the mix could hide or overflow it
    path = tmp_path / "float.wav"
    soundfile.write(path, audio, RATE, subtype="FLOAT")
    with pytest.raises(AudioError, match=rf"float\.wav: {message}"):
        list(iter_windows(AudioFile(path), WindowConfig()))


def test_a_float_file_a_little_over_full_scale_is_used(tmp_path):
    audio = np.full((int(RATE * SECONDS), 1), 0.1, np.float32)
    audio[RATE * 3] = 1.5  # +3.5 dBFS: real float recordings go over
    soundfile.write(tmp_path / "loud.wav", audio, RATE, subtype="FLOAT")
    assert decode_or_error(tmp_path / "loud.wav") is None


def test_control_characters_make_a_bad_name():
    assert parse_sample_name("ac-on-fridge-off-day.wav") is not None
    for name in ("ac-on-fridge-off-day.wav\n", "ac-on-fridge-off-day\n.wav", "ac-on-fridge-off-day-a\tb.wav"):
        assert parse_sample_name(name) is None, name
    assert is_audio(Path("x.m4a\n")) and not is_audio(Path("notes.txt\n"))  # found, so it can be refused
    assert shown_name("a/x.wav\n") == "a/x.wav\\n"


def test_the_walk_reports_a_folder_it_cannot_read(tmp_path, monkeypatch):
    (tmp_path / "locked").mkdir()
    (tmp_path / "locked" / "hidden.wav").write_bytes(b"x")
    (tmp_path / "open.wav").write_bytes(b"x")
    real_scandir = os.scandir

    def scandir(path):
        if Path(path) == tmp_path / "locked":
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    files, unreadable = walk_files(tmp_path)
    assert files == [tmp_path / "open.wav"]
    assert unreadable == {tmp_path / "locked": f"{tmp_path / 'locked'}: cannot read this folder (Permission denied); "
                                                "nothing in it was searched: check its permissions"}


UNPRIVILEGED = """
import ctypes, os, sys
if os.geteuid() == 0:  # root reads mode 000 anyway: drop CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH for the exec
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    for capability in (1, 2):
        if prctl(24, capability, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            sys.exit("cannot drop CAP_DAC_OVERRIDE / CAP_DAC_READ_SEARCH: " + os.strerror(ctypes.get_errno()))
os.execv(sys.executable, [sys.executable, *sys.argv[1:]])
"""


def unprivileged(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """Python in a child process that mode 000 stops even when the tests run as root (CI does); a crash
    in a codec library shows as a failure there instead of ending the tests."""
    return subprocess.run([sys.executable, "-c", UNPRIVILEGED, *args], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=300)


def _require_permissions_bite(tmp_path: Path) -> None:
    probe = tmp_path / "probe"
    probe.mkdir(mode=0)
    try:
        result = unprivileged("-c", "import os, sys; os.listdir(sys.argv[1])", str(probe), cwd=tmp_path)
    finally:
        probe.rmdir()
    if result.returncode == 0 or "cannot drop" in result.stderr:
        pytest.skip(f"no child process here is stopped by mode 000 ({result.stderr.strip() or 'it read the folder'}); "
                    "test_the_walk_reports_a_folder_it_cannot_read covers the walk")


def _fill(folder: Path, name_of, rng: np.random.Generator) -> tuple[list[Path], list[Path]]:
    """A good file of every type and, beside it, a random, a truncated and an empty one."""
    good, bad = [], []
    for index, suffix in enumerate(AUDIO_SUFFIXES):
        source = write_good(folder / name_of(f"good-{suffix[1:]}", suffix, index), seed=index)
        good.append(source)
        for kind in BAD_KINDS:
            path = folder / name_of(f"{kind}-{suffix[1:]}", suffix, index)
            path.write_bytes(bad_content(source, kind, rng))
            bad.append(path)
    return good, bad


def test_batch_decides_every_good_file_and_names_every_bad_one(bundle_dir, tmp_path):
    _require_permissions_bite(tmp_path)
    inputs = tmp_path / "inputs"
    (inputs / "sub").mkdir(parents=True)
    good, bad = _fill(inputs, lambda tag, suffix, _: f"{tag}{suffix}", np.random.default_rng(20))
    good.append(write_good(inputs / "sub" / "nested.flac"))
    newline = write_good(inputs / "copy.wav\n")  # good audio under a name that is refused
    unreadable_file = write_good(inputs / "locked.ogg")
    unreadable_folder = inputs / "locked-folder"
    unreadable_folder.mkdir()
    write_good(unreadable_folder / "inside.wav")
    unreadable_file.chmod(0)
    unreadable_folder.chmod(0)
    try:
        result = unprivileged("-m", "edge.cli", "batch", "--bundle", str(bundle_dir), str(inputs), cwd=tmp_path)
    finally:
        unreadable_file.chmod(0o644)
        unreadable_folder.chmod(0o755)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    by_path = {}
    for line in lines:
        assert line["path"] not in by_path, f"two lines for {line['path']}"
        by_path[line["path"]] = line
    for path in good:
        assert by_path[str(path)]["status"] in SEED.statuses, by_path[str(path)]
    for path in bad:
        assert by_path[str(path)]["error"].startswith(f"{path}: "), by_path[str(path)]
    assert by_path[str(newline)]["error"] == (f"{shown_name(newline)}: the file name holds control characters "
                                              "(shown escaped); rename the file without them")
    assert by_path[str(unreadable_file)]["error"].startswith(f"{unreadable_file}: cannot read the file (Permission denied)")
    assert by_path[str(unreadable_folder)]["error"].startswith(f"{unreadable_folder}: cannot read this folder (Permission denied)")
    assert len(lines) == len(good) + len(bad) + 3  # nothing else, nothing skipped


def test_prepare_lists_every_bad_recording_and_folder_once(tmp_path):
    _require_permissions_bite(tmp_path)
    samples = tmp_path / "samples"
    samples.mkdir()
    name_of = lambda tag, suffix, index: sample_file_name({"ac": index % 2 == 0, "fridge": index % 3 == 0}, "day", tag, suffix)  # noqa: E731
    good, bad = _fill(samples, name_of, np.random.default_rng(21))
    unreadable_file = write_good(samples / sample_file_name({"ac": True, "fridge": True}, "night", "locked", ".wav"))
    unreadable_folder = samples / "monday"
    unreadable_folder.mkdir()
    write_good(unreadable_folder / sample_file_name({"ac": False, "fridge": False}, "night", "inside", ".flac"))
    unreadable_file.chmod(0)
    unreadable_folder.chmod(0)
    try:
        result = unprivileged("-m", "edge.cli", "prepare", "--samples", str(samples), "--manifests", str(tmp_path / "manifests"), cwd=tmp_path)
    finally:
        unreadable_file.chmod(0o644)
        unreadable_folder.chmod(0o755)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    listed = result.stderr.split("then run prepare again:\n")[1].splitlines()
    assert result.stderr.startswith(f"Error: {len(bad) + 2} recording(s) or folder(s) cannot be used")
    assert len(listed) == len(bad) + 2
    for path in bad:
        assert sum(line.strip().startswith(f"{path}: ") for line in listed) == 1, path
    assert any(line.strip().startswith(f"{unreadable_file}: cannot read the file (Permission denied)") for line in listed)
    assert any(line.strip().startswith(f"{unreadable_folder}: cannot read this folder") for line in listed)
    assert not any(str(path) in result.stderr for path in good)
    assert not (tmp_path / "manifests").exists()
    for path in bad:  # with the bad files gone, every good recording is prepared
        path.unlink()
    files, _ = prepare(samples, tmp_path / "manifests")
    assert sorted(files.recording_id) == sorted(p.stem for p in [*good, unreadable_file,
                                                                  unreadable_folder / "ac-off-fridge-off-night-inside.flac"])
    assert (tmp_path / "manifests" / FILES_CSV).is_file()


def test_prepare_refuses_a_name_with_a_newline_like_any_bad_name(tmp_path):
    samples = tmp_path / "samples"
    samples.mkdir()
    write_good(samples / "ac-on-fridge-off-day.wav")
    write_good(samples / "ac-off-fridge-off-day.wav\n")
    with pytest.raises(ManifestError, match=r"1 audio file name\(s\) do not say what was running:\n  "
                                            r"ac-off-fridge-off-day\.wav\\n: the name holds control characters\nRename them"):
        prepare(samples, tmp_path / "manifests")
