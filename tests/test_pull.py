"""`humwatch pull` (issue 31): a real monitor's recordings into the workstation's samples folder, only
what is new, checked against its checksum, resumed from a partial download, never overwriting a
file of other content; the monitor's page then counts nothing left to pull."""

from __future__ import annotations

import json

import numpy as np
from click.testing import CliRunner
from live_process import LiveProcess
from test_record import _post, _wait
from toy_bundle import copy_of_base

from edge.cli import main

TOKEN = "pull-token"


def test_pull_fetches_only_what_is_new_resumes_and_never_overwrites(tmp_path):
    relabel, samples = tmp_path / "relabel", tmp_path / "samples"
    live = LiveProcess(copy_of_base(tmp_path), tmp_path, ["--clips", str(tmp_path / "clips"), "--relabel-dir",
                                                          str(relabel)])
    tone = (0.1 * np.sin(2 * np.pi * 440 * np.arange(16_000 * 300) / 16_000)).astype(np.float32)
    feeder = live.feed_in_background(tone, speed=5)
    url = f"http://127.0.0.1:{live.port}/"
    try:
        assert live.wait_for(lambda lines: len(lines) >= 1), live.stderr_path.read_text()
        names = []
        for fridge in (True, False):
            code, answer = _post(live.port, "/api/record", {"ac": False, "fridge": fridge, "daypart": "day", "seconds": 2})
            assert code == 200, answer
            assert _wait(lambda: (relabel / answer["recording"]).exists())
            names.append(answer["recording"])
        first, second = names
        folder = samples / "127.0.0.1"
        folder.mkdir(parents=True)
        (folder / f".{first}.partial").write_bytes((relabel / first).read_bytes()[:1000])  # an interrupted pull
        (folder / f".{second}.partial").write_bytes(b"\0" * 1000)  # one whose start is wrong

        pulled = CliRunner().invoke(main, ["pull", url, "--samples", str(samples), "--token", TOKEN])
        assert pulled.exit_code == 1, pulled.output
        assert (folder / first).read_bytes() == (relabel / first).read_bytes()  # resumed, checked
        assert not (folder / second).exists() and not (folder / f".{second}.partial").exists()
        assert f"{second}: its checksum did not match" in pulled.output
        assert "1 new into" in pulled.output and "ac off 1, fridge on 1" in pulled.output

        pulled = CliRunner().invoke(main, ["pull", url, "--samples", str(samples)])
        assert pulled.exit_code == 0, pulled.output
        assert "1 new into" in pulled.output and "ac off 1, fridge off 1" in pulled.output and "1 already here" in pulled.output
        assert (folder / second).read_bytes() == (relabel / second).read_bytes()
        assert json.loads(live.get("/api/page")[1])["not_pulled"] == 0

        (folder / first).write_bytes(b"edited on the workstation")
        pulled = CliRunner().invoke(main, ["pull", url, "--samples", str(samples)])
        assert pulled.exit_code == 1 and "holds other content; it is never overwritten" in pulled.output
        assert (folder / first).read_bytes() == b"edited on the workstation"

        wrong = CliRunner().invoke(main, ["pull", url, "--samples", str(samples), "--monitor", "attic"])
        assert wrong.exit_code == 1 and "no monitor 'attic'" in wrong.output
    finally:
        live.stop()
        feeder.join(5)


def test_pull_takes_each_monitor_of_a_process_or_the_one_named(tmp_path):
    import dataclasses

    import soundfile
    from broker import free_port
    from test_live import FakeSource
    from test_monitors import TWO, Running, settings_of, write

    port = free_port()
    text = TWO.format(bundle=copy_of_base(tmp_path), tmp=tmp_path, extra=f'[http]\nlisten = "127.0.0.1:{port}"')
    settings = [dataclasses.replace(each, clips=dataclasses.replace(
        each.clips, dir=tmp_path / f"{each.name.lower()}-clips", relabel_dir=tmp_path / f"{each.name.lower()}-relabel"))
        for each in settings_of(write(tmp_path, text))]
    for name, fridge in (("kitchen", "on"), ("cellar", "off")):
        folder = tmp_path / f"{name}-relabel"
        folder.mkdir()
        soundfile.write(folder / f"ac-off-fridge-{fridge}-day-rec-20261204-120000-abc123.flac",
                        np.zeros(1600, dtype=np.float32), 16_000)
    with Running(settings, {"Kitchen": FakeSource(), "Cellar": FakeSource()}):
        url = f"http://127.0.0.1:{port}/"
        one = CliRunner().invoke(main, ["pull", url, "--samples", str(tmp_path / "one"), "--monitor", "cellar"])
        assert one.exit_code == 0 and "Cellar: 1 new" in one.output and "Kitchen" not in one.output, one.output
        assert [p.name for p in (tmp_path / "one").iterdir()] == ["cellar"]
        every = CliRunner().invoke(main, ["pull", url, "--samples", str(tmp_path / "all")])
        assert every.exit_code == 0 and "Kitchen: 1 new" in every.output and "Cellar: 1 new" in every.output
        assert sorted(p.name for p in (tmp_path / "all").iterdir()) == ["cellar", "kitchen"]
        assert "fridge on 1" in every.output.split("Cellar")[0] and "fridge off 1" in every.output.split("Cellar")[1]
