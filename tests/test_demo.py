from click.testing import CliRunner

from edge.cli import main


def test_demo_runs_the_whole_chain_from_a_clean_workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the demo must not touch ./samples or ./models
    workdir = tmp_path / "work"
    result = CliRunner().invoke(main, ["demo", "--workdir", str(workdir), "--seconds", "18", "--epochs", "25", "--no-int8"])
    assert result.exit_code == 0, result.output
    assert "RANDOM" in result.output and "says nothing about the accuracy of the real BEATs" in result.output
    assert "AC right on 8/8 files" in result.output
    assert "ms per window" in result.output and "bundle:" in result.output
    for expected in ("ac-on-fridge-on-day.m4a", "expected", "predicted"):
        assert expected in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["work"]
    assert list((workdir / "bundles").iterdir()) and list((workdir / "models").iterdir())
