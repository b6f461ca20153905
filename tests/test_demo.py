import json
import re

from click.testing import CliRunner

from edge.cli import main


def test_demo_runs_the_whole_chain_from_a_clean_workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the demo must not touch ./samples or ./models
    workdir = tmp_path / "work"
    result = CliRunner().invoke(main, ["demo", "--workdir", str(workdir), "--seconds", "18", "--epochs", "25", "--no-int8"])
    assert result.exit_code == 0, result.output
    assert "RANDOM" in result.output and "says nothing about the accuracy of the real BEATs" in result.output
    assert "synth: ac, fridge, 18 s a recording" in result.output
    assert "ac right on 8/8 files, fridge right on " in result.output and "3-state accuracy" in result.output
    assert "ms per window" in result.output and "bundle:" in result.output
    for expected in ("ac-on-fridge-on-day.m4a", "expected", "predicted", "p_fridge"):
        assert expected in result.output
    assert "dehumidifier" not in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["work"]
    assert list((workdir / "bundles").iterdir()) and list((workdir / "models").iterdir())


def test_demo_with_a_third_appliance(tmp_path):
    workdir = tmp_path / "work"
    result = CliRunner().invoke(main, ["demo", "--workdir", str(workdir), "--seconds", "18", "--epochs", "25", "--no-int8",
                                       "--appliances", "ac,fridge,dehumidifier"])
    assert result.exit_code == 0, result.output
    assert "synth: ac, fridge, dehumidifier, 18 s a recording\n16 recordings" in result.output
    assert re.search(r"ac-off-fridge-off-dehumidifier-on-night\.m4a +dehumidifier-on ", result.output)  # file, expected
    assert re.search(r"p_ac +p_fridge +p_dehumidifier +ok", result.output)
    assert "ac right on 16/16 files" in result.output and "4-state accuracy" in result.output
    heard = re.search(r"dehumidifier right on (\d+)/16 files", result.output)
    assert heard and int(heard.group(1)) >= 14, result.output  # +7 dB and broadband: even the random stand-in hears it
    (bundle,) = (workdir / "bundles").iterdir()
    assert json.loads((bundle / "bundle.json").read_text())["labels"] == ["ac", "fridge", "dehumidifier"]


def test_appliances_the_demo_cannot_synthesize_are_refused_before_anything_is_written(tmp_path):
    workdir = tmp_path / "work"
    result = CliRunner().invoke(main, ["demo", "--workdir", str(workdir), "--appliances", "ac,washer"])
    assert result.exit_code == 1
    assert "--appliances 'ac,washer': synth has no signature for washer; it knows ac, dehumidifier, fridge" in result.output
    assert not workdir.exists()


def test_appliances_are_not_for_recordings_that_name_their_own(tmp_path):
    samples = tmp_path / "samples"
    samples.mkdir()
    result = CliRunner().invoke(main, ["demo", "--workdir", str(tmp_path / "work"), "--samples", str(samples),
                                       "--appliances", "ac,fridge,dehumidifier"])
    assert result.exit_code == 2 and "with --samples the recordings' names say it" in result.output
    assert not (tmp_path / "work").exists()
