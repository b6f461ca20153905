"""The home teaches it (issue 31), the whole loop: a workstation and a Pi as two sides on loopback
(real HTTP, the real broker, a real `humwatch live` fed through --source -). Two samples recorded
through the page's own call -> pull -> retrain on the tiny fixtures -> judge -> push -> the monitor
swaps while audio flows, with no gap in its hop lines and its history in one piece -> rollback.
The judged table and the largest lag around the swap are printed (run with -s to read them)."""

from __future__ import annotations

import json
import sqlite3
import threading
import urllib.request

import numpy as np
from broker import Broker
from click.testing import CliRunner
from conftest import read_16k, train_options
from live_process import LiveProcess
from test_record import _post, _wait

from edge.cli import main

TOKEN = "loop-token"
RECORDING_SEC = 12.0  # the project's synthetic recordings: 5 windows each, enough for the loop, quick to encode


def _workstation(root, checkpoint):
    """A project as a user has it before the loop: synthetic recordings, a run, its bundle."""
    from export.exporter import export_run
    from train.manifests import prepare
    from train.run import Run
    from train.synth import write_recordings
    from train.thresholds import choose_thresholds
    from train.trainer import Trainer

    write_recordings(root / "samples", seconds=RECORDING_SEC, seed=0)
    prepare(root / "samples", root / "data" / "manifests")
    run = Trainer(train_options(root, checkpoint, val_daypart="night", epochs=5), log=lambda *_: None).run()
    choose_thresholds(Run.open(run))
    return run, export_run(run, root / "bundles" / "first", parity_windows_per_file=2, log=lambda *_: None)


def _feed_until(live: LiveProcess, audio: np.ndarray, stop: threading.Event) -> threading.Thread:
    """Audio without end (the recording again and again) at 3x real time, until `stop`."""
    def feed():
        while not stop.is_set() and live.process.poll() is None:
            live.feed(audio, speed=3)

    thread = threading.Thread(target=feed, daemon=True)
    thread.start()
    return thread


def _running(port: int) -> dict:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/api/bundle", headers={"X-Humwatch-Token": TOKEN})
    return json.loads(urllib.request.urlopen(request, timeout=10).read())


def test_record_pull_retrain_judge_push_swap_and_roll_back(tmp_path, tiny_checkpoint):
    root = tmp_path / "workstation"
    run, first = _workstation(root, tiny_checkpoint)
    pi = tmp_path / "pi"
    pi.mkdir()
    broker = Broker(tmp_path).start()
    live = LiveProcess(first, pi, ["--clips", str(pi / "clips"), "--relabel-dir", str(pi / "relabel"),
                                   "--deploy-dir", str(pi / "deployed"), "--http-token", TOKEN,
                                   "--history", str(pi / "history.sqlite"), "--name", "Kitchen",
                                   "--mqtt", f"mqtt://127.0.0.1:{broker.port}"])
    url, stop = f"http://127.0.0.1:{live.port}/", threading.Event()
    feeder = _feed_until(live, read_16k(root / "samples" / "ac-on-fridge-off-night.m4a"), stop)
    try:
        assert live.wait_for(lambda lines: len(lines) >= 2), live.stderr_path.read_text()
        page_call = {"Origin": url.rstrip("/"), "Sec-Fetch-Site": "same-origin", "X-Humwatch-Token": TOKEN}
        recorded = []
        for _ in range(2):  # the AC runs in what the monitor hears: the user says so
            code, answer = _post(live.port, "/api/record", {"ac": True, "fridge": False, "daypart": "day",
                                                            "seconds": 12}, **page_call)
            assert code == 200, answer
            assert _wait(lambda: (pi / "relabel" / answer["recording"]).exists(), timeout=60)
            recorded.append(answer["recording"])
        listing = {row["name"]: row for row in json.loads(live.get("/api/samples")[1])["samples"]}
        assert [listing[name]["judging"] for name in recorded] == [True, False]  # the first kept for judging

        pulled = CliRunner().invoke(main, ["pull", url, "--samples", str(root / "samples"), "--token", TOKEN])
        assert pulled.exit_code == 0 and "2 new into" in pulled.output and "ac on 2, fridge off 2" in pulled.output, \
            pulled.output
        assert json.loads(live.get("/api/page")[1])["not_pulled"] == 0

        retrained = CliRunner().invoke(main, ["retrain", "--run", str(run), "--samples", str(root / "samples"),
                                              "--out", str(root / "bundles" / "second")])
        assert retrained.exit_code == 0, retrained.output
        assert "9 recordings to train on, 1 of the home's clips kept for judging" in retrained.output
        new_run = next(path for path in (root / "models").iterdir() if path != run and not path.name.startswith("."))
        config = (new_run / "config.yaml").read_text()
        assert recorded[1].removesuffix(".flac") in config and recorded[0].removesuffix(".flac") not in config
        encoded = int(retrained.output.split("encoded ")[-1].split(" windows")[0])
        assert 0 < encoded <= 2 * 12  # only the new recording's windows (2 views each): the rest came from the cache

        judged = CliRunner().invoke(main, ["judge", str(root / "bundles" / "second"), "--against", url,
                                           "--samples", str(root / "samples"), "--token", TOKEN])
        assert judged.exit_code == 0, judged.output
        print("\njudged:\n" + judged.output)
        verdict = json.loads((root / "bundles" / "second" / "judged.json").read_text())
        assert verdict["clips"] == 1 and {row["what"] for row in verdict["rows"]} == {"ac on", "fridge off", "state"}

        before = len(live.lines())
        force = ["--force"] if verdict["verdict"] == "worse" else []
        pushed = CliRunner().invoke(main, ["push", url, str(root / "bundles" / "second"), "--token", TOKEN, *force])
        assert pushed.exit_code == 0, pushed.output
        assert _running(live.port)["current"]["run_id"] == new_run.name
        assert _running(live.port)["current"]["judged"]["verdict"] == verdict["verdict"]  # the page shows the scores
        assert live.wait_for(lambda lines: len(lines) >= before + 10)
        rolled = CliRunner().invoke(main, ["rollback", url, "--token", TOKEN])
        assert rolled.exit_code == 0 and run.name in rolled.output, rolled.output
        count = len(live.lines())
        assert live.wait_for(lambda lines: len(lines) >= count + 5)
        page = json.loads(live.get("/api/page")[1])
        assert page["deployed"]["current"]["run_id"] == run.name and page["deployed"]["previous"]["run_id"] == new_run.name
    finally:
        stop.set()
        returncode, stderr = live.stop()
        feeder.join(10)
        broker.stop()
    assert returncode == 0, stderr
    lines = live.lines()
    times = np.array([line["t"] for line in lines])
    assert np.allclose(np.diff(times), 1.5), "a hop skipped or repeated"
    assert all(line["status"] not in ("no-audio", "no-signal") for line in lines)
    around = [line["lag_sec"] for line in lines[max(before - 5, 0): before + 15]]
    print(f"hops: {len(lines)}; largest lag around the swap {max(around):.3f} s, over the whole run "
          f"{max(line['lag_sec'] for line in lines):.3f} s")
    with sqlite3.connect(pi / "history.sqlite") as history:
        assert history.execute("SELECT COUNT(*) FROM segments").fetchone()[0] == 1  # no break in the uptime
        assert history.execute("SELECT COUNT(*) FROM gaps").fetchone()[0] == 0
