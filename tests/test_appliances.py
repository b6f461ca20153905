"""Any appliance you can record (issue 24), from outside, as a user runs it: three appliances end to end
(synth -> prepare -> train -> thresholds -> distill -> export -> batch / stream without torch -> live
with MQTT on a real broker, history and the page), and a project where only half the recordings name
the third appliance (masked labels).

The tiny random-weight BEATs cannot be expected to hear the appliances apart: these tests check that
every step follows the label list, not the accuracy.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml
from click.testing import CliRunner
from conftest import read_16k
from live_process import run_live_with_broker
from test_edge import _without_torch

from edge.cli import main

THREE = ["ac", "fridge", "dehumidifier"]
PRIORITY = ["dehumidifier", "ac", "fridge"]  # --priority dehumidifier: named first, the others in order
STATUSES = ["dehumidifier-on", "ac-on", "fridge-on", "all-off"]
SECONDS = "24"


def humwatch(*args) -> str:
    result = CliRunner().invoke(main, [str(arg) for arg in args])
    assert result.exit_code == 0, result.output
    return result.output


def _lines(output: str) -> list[dict]:
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


def _train(root: Path, checkpoint: Path, *options) -> tuple[Path, str]:
    """prepare and train one run (night validation) with thresholds; the run's directory and what prepare said."""
    prepared = humwatch("prepare", "--samples", root / "samples", "--manifests", root / "manifests")
    humwatch("train", "--beats-checkpoint", checkpoint, "--manifests", root / "manifests", "--models", root / "models",
             "--cache-dir", root / "cache", "--epochs", "8", "--views", "1", *options)
    (run_dir,) = [path for path in (root / "models").iterdir() if path.is_dir() and not path.name.startswith(".")]
    humwatch("thresholds", "--run", run_dir)
    return run_dir, prepared


@pytest.fixture(scope="module")
def three(tmp_path_factory, tiny_checkpoint) -> dict:
    """The whole chain on synthesized recordings of the AC, the fridge and a dehumidifier."""
    root = tmp_path_factory.mktemp("three")
    humwatch("synth", root / "samples", "--appliances", ",".join(THREE), "--seconds", SECONDS)
    run_dir, _ = _train(root, tiny_checkpoint, "--priority", "dehumidifier")
    humwatch("distill", "--run", run_dir, "--epochs", "20")
    humwatch("report", "--run", run_dir)
    bundle = root / "bundle"
    humwatch("export", "--run", run_dir, "--out", bundle, "--int8", "--parity-windows", "2")
    return {"root": root, "run": run_dir, "bundle": bundle}


def test_synth_and_prepare_name_three_appliances(three):
    names = sorted(path.name for path in (three["root"] / "samples").iterdir())
    assert len(names) == 16 and "ac-off-fridge-on-dehumidifier-on-night.m4a" in names
    files = pd.read_csv(three["root"] / "manifests" / "files.csv")
    assert [column for column in files.columns if column in THREE] == THREE
    row = files.set_index("recording_id").loc["ac-off-fridge-on-dehumidifier-on-night"]
    assert (row.ac, row.fridge, row.dehumidifier, row.state) == (0, 1, 1, "fridge-on")  # before --priority: first named


def test_the_run_and_its_report_follow_the_labels(three):
    config = yaml.safe_load((three["run"] / "config.yaml").read_text())
    assert (config["labels"], config["priority"]) == (THREE, PRIORITY)
    best = json.loads((three["run"] / "best_metrics.json").read_text())
    metrics = best.get("metrics", best)
    for name in THREE:
        assert 0 <= metrics[f"f1_{name}"] <= 1 and metrics[f"files_{name}"] == 8  # the 8 night recordings
    thresholds = yaml.safe_load((three["run"] / "thresholds.yaml").read_text())
    assert set(thresholds["levels"]["dehumidifier"]) == {"threshold", "on", "off"}
    report = (three["run"] / "report.html").read_text()
    assert "f1_dehumidifier" in report and "dehumidifier.threshold" in report


def test_the_bundle_names_the_labels_and_the_priority(three):
    manifest = json.loads((three["bundle"] / "bundle.json").read_text())
    assert manifest["schema_version"] == 4
    assert (manifest["labels"], manifest["priority"]) == (THREE, PRIORITY)
    assert set(manifest["decision"]["levels"]["dehumidifier"]) == {"threshold", "on", "off"}
    assert set(manifest["decisions"]["student"]["levels"]) == set(THREE)
    for precision in ("int8", "student"):  # agreement measured per appliance
        assert "dehumidifier" in json.dumps(manifest["parity"][precision]), manifest["parity"][precision]
    check = humwatch("bundle", "check", "--bundle", three["bundle"])
    assert "p_dehumidifier" in check and "student: ok" in check
    assert "appliances: ac, fridge, dehumidifier; statuses, in priority order: dehumidifier-on | ac-on | fridge-on | all-off" in check


def test_batch_and_stream_run_without_torch_and_report_every_appliance(three):
    samples = three["root"] / "samples"
    batch = _without_torch("batch", "--bundle", str(three["bundle"]), str(samples))
    assert batch.returncode == 0 and "LOADED []" in batch.stderr, batch.stderr
    lines = _lines(batch.stdout)
    assert len(lines) == 16
    assert all(list(line)[:6] == ["path", "status", "p_ac", "p_fridge", "p_dehumidifier", "windows"] for line in lines)
    assert {line["status"] for line in lines} <= set(STATUSES)
    stream = _without_torch("stream", "--bundle", str(three["bundle"]), "--hop", "1.5",
                            str(samples / "ac-off-fridge-off-dehumidifier-on-day.m4a"))
    assert stream.returncode == 0, stream.stderr
    hops = _lines(stream.stdout)
    assert len(hops) == 13
    assert list(hops[0])[:15] == ["t", "status", "debounced_status", "changed", "median_ac", "median_fridge",
                                  "median_dehumidifier", "ac_on", "fridge_on", "dehumidifier_on", "ac_running",
                                  "fridge_running", "dehumidifier_running", "p_ac", "p_fridge"]
    for hop in hops:  # the summary state is the priority rule over the running flags
        running = [name for name in PRIORITY if hop[f"{name}_running"]]
        assert hop["debounced_status"] == (f"{running[0]}-on" if running else "all-off")
    table = humwatch("batch", "--bundle", three["bundle"], "--format", "table", samples)
    assert "p_dehumidifier" in table.splitlines()[0]


@pytest.fixture(scope="module")
def live_three(three, tmp_path_factory) -> dict:
    """`humwatch live` on the three-appliance bundle with MQTT, a history, energy and an alarm for the
    dehumidifier; its levels forced (--level) so that it runs from the first hop."""
    audio = read_16k(three["root"] / "samples" / "ac-off-fridge-off-dehumidifier-on-night.m4a")
    return run_live_with_broker(three["bundle"], audio, tmp_path_factory.mktemp("three-live"),
                                ["--name", "Cellar", "--watts", "ac=1200,fridge=150,dehumidifier=300",
                                 "--alarm", "dehumidifier-run-max=0.5s", "--level", "dehumidifier_on=0",
                                 "--level", "dehumidifier_off=0", "--level", "t_dehumidifier=0"],
                                hops=13, until='"event": "alarm"')


def test_live_lines_mqtt_history_and_page_carry_the_third_appliance(live_three):
    assert live_three["returncode"] == 0, live_three["stderr"]
    hops = [line for line in live_three["lines"] if "event" not in line]
    assert len(hops) >= 13 and all(line["dehumidifier_running"] for line in hops)
    assert hops[-1]["debounced_status"] == "dehumidifier-on"  # first in priority, whatever the others do
    events = [line for line in live_three["lines"] if "event" in line]
    assert [(event["alarm"], event["appliance"]) for event in events] == [("dehumidifier-run-max", "dehumidifier")]

    configs = {topic: json.loads(payload) for topic, payload in live_three["retained"].items()
               if topic.startswith("homeassistant/")}
    running = configs["homeassistant/binary_sensor/humwatch_cellar/dehumidifier/config"]
    assert (running["unique_id"], running["name"], running["device_class"]) == (
        "humwatch_cellar_dehumidifier", "Dehumidifier running", "running")
    for statistic in ("duty_cycle_pct", "current_run_min", "runtime_today_h", "cycles_today", "energy_today_kwh"):
        assert f"homeassistant/sensor/humwatch_cellar/dehumidifier_{statistic}/config" in configs
    assert "homeassistant/binary_sensor/humwatch_cellar/dehumidifier-run-max/config" in configs
    assert configs["homeassistant/sensor/humwatch_cellar/state/config"]["options"] == STATUSES
    assert live_three["retained"]["humwatch/cellar/state"] == "dehumidifier-on"
    stats = json.loads(live_three["retained"]["humwatch/cellar/stats"])
    assert stats["dehumidifier"]["running"] is True and stats["alarms"] == {"dehumidifier-run-max": True}

    state = json.loads(live_three["served"]["/state"])
    assert state["dehumidifier_running"] is True and 0 <= state["p_dehumidifier"] <= 1
    assert 'humwatch_probability{label="dehumidifier"}' in live_three["served"]["/metrics"]
    assert 'humwatch_state{state="dehumidifier-on"} 1' in live_three["served"]["/metrics"]
    assert "dehumidifier" in live_three["served"]["/api/page"]

    records = json.loads(humwatch("history", "--db", live_three["history"], "--days", "1", "--format", "json"))
    by_appliance = {record["appliance"]: record for record in records}
    assert set(by_appliance) == set(THREE) and by_appliance["dehumidifier"]["runtime_h"] > 0


def test_a_third_appliance_named_by_half_the_recordings_is_masked_in_the_others(three, project, tiny_checkpoint,
                                                                                tmp_path):
    """The seed's eight recordings (no dehumidifier in their names) beside eight that name it: training
    runs, and the dehumidifier's figures count only the recordings that name it."""
    samples = tmp_path / "samples"
    samples.mkdir()
    for path in (project / "samples").iterdir():
        shutil.copy(path, samples / path.name)
    for path in (three["root"] / "samples").glob("ac-off-*"):
        shutil.copy(path, samples / path.name)
    run_dir, prepared = _train(tmp_path, tiny_checkpoint)
    assert "name each (the others say nothing of it): ac 16 (4 on), fridge 16 (8 on), dehumidifier 8 (4 on)" in prepared
    files = pd.read_csv(tmp_path / "manifests" / "files.csv").set_index("recording_id")
    assert files.dehumidifier.isna().sum() == 8 and files.dehumidifier.notna().sum() == 8
    assert pd.isna(files.loc["ac-off-fridge-on-night", "dehumidifier"])  # not "off": unknown
    best = json.loads((run_dir / "best_metrics.json").read_text())
    metrics = best.get("metrics", best)
    assert metrics["files"] == 8  # the night recordings
    assert (metrics["files_ac"], metrics["files_fridge"], metrics["files_dehumidifier"]) == (8, 8, 4)
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["labels"] == THREE
