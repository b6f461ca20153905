import numpy as np
import pandas as pd
import pytest

from edge.core.labels import parse_sample_name
from edge.core.files import sha256_file
from train.synth import write_recordings


def _levels(project):
    windows = pd.read_parquet(project / "data" / "manifests" / "windows.parquet")
    windows["db"] = 20 * np.log10(windows.rms)
    return windows.groupby("recording_id").db.agg(["median", "std"])


def test_one_file_per_condition_named_by_the_pattern(project):
    names = sorted(p.name for p in (project / "samples").iterdir())
    assert len(names) == 8
    parsed = {(n.ac, n.fridge, n.daypart) for n in map(parse_sample_name, names)}
    assert len(parsed) == 8


def test_levels_follow_the_original_recordings(project):
    levels = _levels(project)
    for daypart in ("day", "night"):
        off = levels.loc[f"ac-off-fridge-off-{daypart}", "median"]
        fridge = levels.loc[f"ac-off-fridge-on-{daypart}", "median"]
        ac = levels.loc[f"ac-on-fridge-off-{daypart}", "median"]
        assert -60.5 < off < -55.5, off
        assert 0.5 < fridge - off < 2.5, fridge - off
        assert -48 < ac < -44, ac
    assert levels.loc["ac-off-fridge-off-day", "std"] > 2 * levels.loc["ac-off-fridge-off-night", "std"]


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
