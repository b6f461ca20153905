import numpy as np
import pytest
import soundfile

from edge.core.defaults import WindowConfig
from train.manifests import ManifestError, load_manifests, outlier_flags, prepare

FILE_COLUMNS = ["path", "duration_sec", "sample_rate", "ac", "fridge", "state", "daypart", "recording_id", "sha256", "channels"]
WINDOW_COLUMNS = ["recording_id", "path", "start_sec", "end_sec", "rms", "ac", "fridge", "window_index", "outlier"]


def test_manifests_have_the_original_columns_and_more(project):
    files, windows, window = load_manifests(project / "data" / "manifests")
    assert list(files.columns) == FILE_COLUMNS
    assert list(windows.columns) == WINDOW_COLUMNS
    assert window == WindowConfig()
    row = files.set_index("recording_id").loc["ac-off-fridge-on-night"]
    assert (row.ac, row.fridge, row.state, row.daypart, row.sample_rate, row.channels) == (0, 1, "fridge-on", "night", 44100, 2)
    first = windows[windows.recording_id == "ac-off-fridge-on-night"]
    assert len(first) == 13
    assert np.allclose(first.start_sec.to_numpy()[:3], [0.0, 1.5, 3.0])
    assert np.allclose(first.end_sec - first.start_sec, 6.0)


def test_outlier_flag_is_the_loudest_percent_per_file():
    rms = np.linspace(0.001, 0.002, 117)
    rms[40] = 0.05
    flags = outlier_flags(rms)
    assert flags.sum() == 1 and flags[40]  # 117 windows -> 116 kept, as in the original
    assert outlier_flags(rms[:99]).sum() == 0
    assert outlier_flags(np.arange(250.0)).tolist()[-3:] == [False, True, True]


def test_outlier_flags_are_written_per_file(tmp_path):
    samples = tmp_path / "samples"
    samples.mkdir()
    rng = np.random.default_rng(0)
    for name in ("ac-on-fridge-off-day.wav", "ac-off-fridge-off-day.wav"):
        audio = rng.standard_normal(16_000 * 160).astype(np.float32) * 0.01
        audio[16_000 * 80 : 16_000 * 81] *= 50  # one loud second
        soundfile.write(samples / name, audio, 16_000)
    _, windows = prepare(samples, tmp_path / "manifests")
    for _, group in windows.groupby("recording_id"):
        assert len(group) == 103 and group.outlier.sum() == 1
        assert group.loc[group.outlier, "rms"].iloc[0] == group.rms.max()


def _wav(path, seconds=7.0):
    soundfile.write(path, np.zeros(int(16_000 * seconds), np.float32), 16_000)


def test_bad_names_are_listed_in_one_error(tmp_path):
    samples = tmp_path / "samples"
    samples.mkdir()
    _wav(samples / "ac-on-fridge-off-day.wav")
    _wav(samples / "kitchen.wav")
    _wav(samples / "ac-maybe-fridge-on-day.wav")
    (samples / "notes.txt").write_text("ignored: not audio")
    with pytest.raises(ManifestError) as error:
        prepare(samples, tmp_path / "manifests")
    message = str(error.value)
    assert "2 audio file name(s)" in message and "kitchen.wav" in message and "ac-maybe-fridge-on-day.wav" in message
    assert "ac-(on|off)-fridge-(on|off)-(day|night)" in message and "notes.txt" not in message
    assert not (tmp_path / "manifests").exists()


def test_empty_or_missing_samples_dir(tmp_path):
    with pytest.raises(ManifestError, match="no such samples directory"):
        prepare(tmp_path / "nowhere", tmp_path / "manifests")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ManifestError, match="no audio files"):
        prepare(tmp_path / "empty", tmp_path / "manifests")


def test_every_unusable_recording_is_listed_and_nothing_is_written(tmp_path):
    samples = tmp_path / "samples"
    (samples / "kitchen").mkdir(parents=True)
    _wav(samples / "ac-on-fridge-off-day.wav", seconds=4.0)
    (samples / "ac-off-fridge-off-day-take-2.m4a").write_bytes(b"not audio at all" * 50)
    (samples / "kitchen" / "ac-off-fridge-on-night-café.flac").write_bytes(b"RIFF junk" * 50)
    _wav(samples / "ac-off-fridge-off-night.wav", seconds=7.0)
    with pytest.raises(ManifestError) as error:
        prepare(samples, tmp_path / "manifests")
    message = str(error.value)
    assert message.startswith("3 recording(s) or folder(s) cannot be used")
    assert "ac-on-fridge-off-day.wav: 4.0 s is shorter than one 6 s window; record at least 6 s" in message
    assert "ac-off-fridge-off-day-take-2.m4a: cannot decode audio" in message
    assert "kitchen/ac-off-fridge-on-night-café.flac: cannot decode audio" in message  # found in a subdirectory
    assert not (tmp_path / "manifests").exists()


def test_subdirectories_are_searched_and_clashing_names_refused(tmp_path):
    samples = tmp_path / "samples"
    (samples / "monday").mkdir(parents=True)
    _wav(samples / "monday" / "ac-off-fridge-off-night-take-2.wav", seconds=7.0)
    files, _ = prepare(samples, tmp_path / "manifests")
    assert list(files.recording_id) == ["ac-off-fridge-off-night-take-2"]
    (samples / "tuesday").mkdir()
    _wav(samples / "tuesday" / "ac-off-fridge-off-night-take-2.wav", seconds=7.0)
    with pytest.raises(ManifestError, match="monday/ac-off-fridge-off-night-take-2.wav and tuesday/"):
        prepare(samples, tmp_path / "manifests")


def test_a_bad_tag_is_explained(tmp_path):
    samples = tmp_path / "samples"
    samples.mkdir()
    _wav(samples / "ac-off-fridge-off-night-take 2.wav", seconds=7.0)
    with pytest.raises(ManifestError, match="a TAG may hold letters .accented ones too., digits, '-', '_' and '.'"):
        prepare(samples, tmp_path / "manifests")


def test_missing_manifests_say_run_prepare(tmp_path):
    with pytest.raises(ManifestError, match="run 'humwatch prepare' first"):
        load_manifests(tmp_path)
