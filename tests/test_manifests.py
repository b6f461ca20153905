import shutil

import numpy as np
import pandas as pd
import pytest
import soundfile
import yaml

from edge.core.labels import APPLIANCE_RULE, NAME_PATTERN, SEED, TAG_RULE, Appliances
from edge.core.window import WindowConfig
from train.manifests import ManifestError, load_manifests, outlier_flags, prepare

FILE_COLUMNS = ["path", "duration_sec", "sample_rate", "ac", "fridge", "state", "daypart", "recording_id", "sha256", "channels"]
WINDOW_COLUMNS = ["recording_id", "path", "start_sec", "end_sec", "rms", "ac", "fridge", "window_index", "outlier"]


def test_manifests_have_the_original_columns_and_more(project):
    files, windows, window, appliances = load_manifests(project / "data" / "manifests")
    assert list(files.columns) == FILE_COLUMNS
    assert list(windows.columns) == WINDOW_COLUMNS
    assert window == WindowConfig() and appliances == SEED
    row = files.set_index("recording_id").loc["ac-off-fridge-on-night"]
    assert (row.ac, row.fridge, row.state, row.daypart, row.sample_rate, row.channels) == (0, 1, "fridge-on", "night", 44100, 2)
    assert files.ac.dtype == np.int64 and windows.ac.dtype == np.float64  # files.csv holds 0 / 1, as before
    assert ",0,1,fridge-on,night,ac-off-fridge-on-night," in (project / "data" / "manifests" / "files.csv").read_text()
    assert yaml.safe_load((project / "data" / "manifests" / "manifest.yaml").read_text())["labels"] == ["ac", "fridge"]
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


def test_bad_names_are_listed_in_one_error_each_with_its_reason(tmp_path):
    samples = tmp_path / "samples"
    (samples / "kitchen").mkdir(parents=True)
    _wav(samples / "ac-on-fridge-off-day.wav")
    _wav(samples / "ac-off-fridge-on-dehumidifier-on-night-take-2.wav")  # good: any appliance
    reasons = {
        "kitchen.wav": "it does not start with an <appliance>-(on|off) pair",
        "kitchen/Fridge-on-day.wav": f"'Fridge' is not an appliance name: {APPLIANCE_RULE}",
        "ac-on-ac-off-day.wav": "it names ac twice",
        "ac-on-fridge-off.wav": "'day' or 'night' must follow the last (on|off), not nothing",
        "ac-on-fridge-off-evening.wav": "'day' or 'night' must follow the last (on|off), not 'evening'",
        "ac-on-day-take 2.wav": f"the tag 'take 2' breaks the rule: {TAG_RULE}",
    }
    for name in reasons:
        _wav(samples / name)
    (samples / "notes.txt").write_text("ignored: not audio")
    with pytest.raises(ManifestError) as error:
        prepare(samples, tmp_path / "manifests")
    lines = str(error.value).splitlines()
    assert lines[0] == f"{samples}: 6 audio file name(s) do not say what was running:"
    assert sorted(line.strip() for line in lines[1:7]) == sorted(f"{name}: {reason}" for name, reason in reasons.items())
    assert NAME_PATTERN in lines[7] and APPLIANCE_RULE in lines[7] and TAG_RULE in lines[7]
    assert "ac-off-fridge-on-dehumidifier-on-night-take-2.flac" in lines[7]  # the rule's example of a third appliance
    assert "notes.txt" not in str(error.value) and "ac-on-fridge-off-day.wav" not in str(error.value)
    assert not (tmp_path / "manifests").exists()


def test_a_third_appliance_is_masked_where_a_recording_does_not_name_it(tmp_path):
    samples = tmp_path / "samples"
    samples.mkdir()
    for name in ("ac-on-fridge-off-day.wav", "ac-off-fridge-off-dehumidifier-off-day.wav",
                 "ac-off-fridge-on-dehumidifier-on-night.wav", "ac-off-fridge-off-night.wav"):
        _wav(samples / name)
    prepare(samples, tmp_path / "manifests")
    text = (tmp_path / "manifests" / "files.csv").read_text().splitlines()
    assert text[0] == "path,duration_sec,sample_rate,ac,fridge,dehumidifier,state,daypart,recording_id,sha256,channels"
    rows = {line.split(",")[8]: line.split(",")[3:8] for line in text[1:]}
    assert rows["ac-on-fridge-off-day"] == ["1", "0", "", "ac-on", "day"]  # the AC decides the state
    assert rows["ac-off-fridge-off-night"] == ["0", "0", "", "", "night"]  # the dehumidifier might: unknown
    assert rows["ac-off-fridge-off-dehumidifier-off-day"] == ["0", "0", "0", "all-off", "day"]
    assert rows["ac-off-fridge-on-dehumidifier-on-night"] == ["0", "1", "1", "fridge-on", "night"]
    files, windows, _, appliances = load_manifests(tmp_path / "manifests")
    assert appliances == Appliances(("ac", "fridge", "dehumidifier"))
    masked = windows.groupby("recording_id").dehumidifier.apply(lambda values: values.isna().all())
    assert masked.to_dict() == {"ac-off-fridge-off-dehumidifier-off-day": False, "ac-off-fridge-off-night": True,
                                "ac-off-fridge-on-dehumidifier-on-night": False, "ac-on-fridge-off-day": True}
    assert windows.dehumidifier.dtype == np.float64 and set(windows.dehumidifier.dropna()) == {0.0, 1.0}


def test_appliances_come_in_order_of_first_appearance(tmp_path):
    samples = tmp_path / "samples"
    (samples / "a").mkdir(parents=True)
    (samples / "b").mkdir()
    _wav(samples / "b" / "ac-on-heat_pump-on-day.wav")
    _wav(samples / "a" / "fridge-on-ac-off-day.wav")  # a/ comes first
    files, windows = prepare(samples, tmp_path / "manifests")
    assert list(files.columns[3:6]) == ["fridge", "ac", "heat_pump"] and list(windows.columns[5:8]) == ["fridge", "ac", "heat_pump"]
    assert load_manifests(tmp_path / "manifests").appliances.names == ("fridge", "ac", "heat_pump")
    assert files.state[0] == "fridge-on" and pd.isna(files.state[1])  # fridge first; b/ does not name the fridge


def test_a_manifest_without_labels_is_the_seeds(project, tmp_path):
    manifests = tmp_path / "manifests"
    shutil.copytree(project / "data" / "manifests", manifests)
    meta = yaml.safe_load((manifests / "manifest.yaml").read_text())
    del meta["labels"]  # as prepare wrote it before any appliance could be named
    (manifests / "manifest.yaml").write_text(yaml.safe_dump(meta))
    assert load_manifests(manifests).appliances == SEED
    (manifests / "manifest.yaml").write_text(yaml.safe_dump({**meta, "labels": ["ac", "fridge", "heater"]}))
    with pytest.raises(ManifestError, match=r"files.csv: no column for heater .*run 'humwatch prepare' again"):
        load_manifests(manifests)
    assert pd.read_csv(manifests / "files.csv").shape[0] == 8


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
