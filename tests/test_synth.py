from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edge.cli import main
from edge.core.audio import AudioFile, iter_windows
from edge.core.files import sha256_file
from edge.core.labels import read_sample_name
from edge.core.window import WindowConfig
from train.synth import RATE, dehumidifier, fridge, plan, synthesize, write_recordings

THREE = "ac,fridge,dehumidifier"
SEED_NAMES = [f"ac-{ac}-fridge-{fridge}-{daypart}.m4a"
              for ac in ("off", "on") for fridge in ("off", "on") for daypart in ("day", "night")]
# Every 1009th sample of the seed's recordings (6.5 s, seed 0), written by the synth of 7108b80,
# before any appliance could be synthesized: the seed's audio must stay exactly what it was.
PINNED = Path(__file__).parent / "fixtures" / "synth-seed.npz"


def _window_db(path: Path) -> np.ndarray:
    """Each window's RMS in dBFS, measured as prepare measures it (16 kHz mono, 6 s windows every 1.5 s)."""
    return np.array([10 * np.log10(np.mean(np.square(samples, dtype=np.float64)))
                     for _, samples in iter_windows(AudioFile(path), WindowConfig())])


@pytest.fixture(scope="module")
def three(tmp_path_factory) -> dict[str, np.ndarray]:
    """The three-appliance set (24 s, seed 0): each recording's window levels by its name."""
    paths = write_recordings(tmp_path_factory.mktemp("three"), seconds=24.0, seed=0, appliances=THREE)
    return {path.stem: _window_db(path) for path in paths}


def test_the_seeds_names_and_audio_are_unchanged():
    recordings = plan(seed=0)
    assert [r.name for r in recordings] == SEED_NAMES
    with np.load(PINNED) as pinned:
        assert sorted(pinned.files) == sorted(SEED_NAMES)
        for recording in recordings:
            audio = synthesize(recording.labels, recording.daypart, 6.5, recording.seed)
            np.testing.assert_allclose(audio[:, ::1009], pinned[recording.name], rtol=0, atol=1e-6,
                                       err_msg=recording.name)


def test_three_appliances_name_every_combination_and_parse_back():
    recordings = plan(seed=0, appliances=THREE)
    assert len(recordings) == 16 and recordings[0].name == "ac-off-fridge-off-dehumidifier-off-day.m4a"
    combinations = set()
    for recording in recordings:
        parsed = read_sample_name(recording.name)
        assert parsed.labels == recording.labels and list(parsed.labels) == ["ac", "fridge", "dehumidifier"]
        assert parsed.daypart == recording.daypart and parsed.tag is None
        combinations.add((*parsed.labels.values(), parsed.daypart))
    assert len(combinations) == 16


def test_levels_follow_the_original_recordings_and_the_dehumidifiers_calibration(three):
    median = {name: float(np.median(db)) for name, db in three.items()}
    for daypart in ("day", "night"):
        off = median[f"ac-off-fridge-off-dehumidifier-off-{daypart}"]
        fridge = median[f"ac-off-fridge-on-dehumidifier-off-{daypart}"]
        ac = median[f"ac-on-fridge-off-dehumidifier-off-{daypart}"]
        dehumidifier = median[f"ac-off-fridge-off-dehumidifier-on-{daypart}"]
        assert -60.5 < off < -55.5, off
        assert 0.5 < fridge - off < 2.5, fridge - off
        assert -48 < ac < -44, ac
        assert -52.5 < dehumidifier < -50.5, dehumidifier  # calibrated: -51.4 by night, -51.3 by day
        assert fridge + 3 < dehumidifier < ac - 3
    room = {daypart: np.std(three[f"ac-off-fridge-off-dehumidifier-off-{daypart}"]) for daypart in ("day", "night")}
    assert room["day"] > 2 * room["night"]


def test_the_dehumidifier_sounds_unlike_the_fridge():
    """Its hum sits at 50 Hz and 250-450 Hz, the fridge's at 100-400 Hz without 50 Hz; its fan is broadband."""
    n = 8 * RATE
    freqs = np.fft.rfftfreq(n, 1 / RATE)

    def share(signature, low, high):
        power = np.abs(np.fft.rfft(signature(np.random.default_rng(5), n))) ** 2
        return power[(freqs >= low) & (freqs < high)].sum() / power.sum()

    assert share(dehumidifier, 49, 51) > 0.05 > 100 * share(fridge, 49, 51)
    assert share(dehumidifier, 1000, 6000) > 0.2 > 2 * share(fridge, 1000, 6000)


def test_deterministic_and_tagged_copies(tmp_path):
    first = write_recordings(tmp_path / "a", seconds=6.5, seed=3, copies=2)
    second = write_recordings(tmp_path / "b", seconds=6.5, seed=3, copies=2)
    assert [p.name for p in first] == [p.name for p in second]
    assert len(first) == 16 and first[0].name == "ac-off-fridge-off-day-1.m4a"
    assert all(sha256_file(a) == sha256_file(b) for a, b in zip(first, second))
    assert sha256_file(first[0]) != sha256_file(first[1]), "copies are different takes"


def test_too_short_is_refused(tmp_path):
    with pytest.raises(ValueError, match="at least one 6 s window"):
        write_recordings(tmp_path, seconds=3)


@pytest.mark.parametrize("appliances, message", [
    ("ac,washer", "no signature for washer; it knows ac, dehumidifier, fridge"),
    ("ac,ac", "each may appear once"),
    ("ac,Fridge", "'Fridge' is not an appliance name"),
])
def test_appliances_synth_cannot_make_are_refused_before_writing(tmp_path, appliances, message):
    result = CliRunner().invoke(main, ["synth", str(tmp_path / "out"), "--seconds", "6", "--appliances", appliances])
    assert result.exit_code == 1 and f"--appliances '{appliances}'" in result.output and message in result.output
    assert not (tmp_path / "out").exists()
