"""What a user of the seed's two appliances (the AC and the fridge) sees, pinned before labels
became data (issue 24): sample file names, statuses, JSON fields, bundle fields, Home Assistant
entities, /state, /metrics and `humwatch history`; and a bundle exported before that change
(tests/fixtures/bundle-v2, made at 35baa08) still loads and runs.

The expected values are written out here, never taken from the code under test: a user's scripts,
dashboards and automations read these names, so a change to any of them breaks something of theirs.
Everything is driven through the `humwatch` command line (live as a real process, with a real
MQTT broker), so the pins hold whatever the code behind it looks like.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner
from conftest import read_16k
from live_process import run_live_with_broker

from edge.cli import main

OLD_BUNDLE = Path(__file__).parent / "fixtures" / "bundle-v2"
OLD_BUNDLE_JSON_SHA256 = "e1320a4d4634dc982f7f36d29acd8b5573085e3ed97c2d47a26b7a449eb7d438"

STATUSES = {"ac-on", "fridge-on", "both-off"}
BATCH_KEYS = ["path", "status", "p_ac", "p_fridge", "windows", "duration_sec"]
STREAM_KEYS = ["t", "status", "debounced_status", "changed", "median_ac", "median_fridge", "ac_on", "fridge_on",
               "ac_running", "fridge_running", "p_ac", "p_fridge", "infer_ms", "hop_sec", "cpu_share"]
# live adds its health fields, and (the student deciding, audited by BEATs) the audit's
LIVE_KEYS = ["t", "status", "debounced_status", "changed", "median_ac", "median_fridge", "ac_on", "fridge_on",
             "ac_running", "fridge_running", "p_ac", "p_fridge", "infer_ms", "hop_sec", "cpu_share", "lag_sec",
             "dropped_sec", "overflows", "precision", "audits", "audit_disagreements"]
ALARM_EVENT_KEYS = ["event", "alarm", "state", "appliance", "limit_sec", "observed_sec", "time"]

BUNDLE_KEYS = {"name", "created", "window", "decision", "graphs", "default_precision", "embedding", "opset", "versions",
               "source", "training_metrics", "parity", "gflop_per_window", "files", "decisions", "schema_version", "labels"}
DECISION_KEYS = ["t_ac", "t_fridge", "ac_on", "ac_off", "fridge_on", "fridge_off", "median_sec", "debounce_sec"]

SYNTH_NAMES = {"ac-off-fridge-off-day.m4a", "ac-off-fridge-off-night.m4a", "ac-off-fridge-on-day.m4a",
               "ac-off-fridge-on-night.m4a", "ac-on-fridge-off-day.m4a", "ac-on-fridge-off-night.m4a",
               "ac-on-fridge-on-day.m4a", "ac-on-fridge-on-night.m4a"}
FILES_COLUMNS = ["path", "duration_sec", "sample_rate", "ac", "fridge", "state", "daypart", "recording_id", "sha256",
                 "channels"]
WINDOWS_COLUMNS = ["recording_id", "path", "start_sec", "end_sec", "rms", "ac", "fridge", "window_index", "outlier"]
# recording_id -> (ac, fridge, state, daypart): what prepare reads from each name
RECORDINGS = {
    "ac-off-fridge-off-day": (0, 0, "both-off", "day"), "ac-off-fridge-off-night": (0, 0, "both-off", "night"),
    "ac-off-fridge-on-day": (0, 1, "fridge-on", "day"), "ac-off-fridge-on-night": (0, 1, "fridge-on", "night"),
    "ac-on-fridge-off-day": (1, 0, "ac-on", "day"), "ac-on-fridge-off-night": (1, 0, "ac-on", "night"),
    "ac-on-fridge-on-day": (1, 1, "ac-on", "day"), "ac-on-fridge-on-night": (1, 1, "ac-on", "night"),
    "ac-on-fridge-off-day-take-2": (1, 0, "ac-on", "day"),
}

# Home Assistant discovery for `humwatch live --name Kitchen --watts ac=1200,fridge=150
# --alarm ac-run-max=... --alarm fridge-off-max=...`: config topic -> (unique_id, name, state topic)
ATTRIBUTES, STATS = "humwatch/kitchen/attributes", "humwatch/kitchen/stats"
DISCOVERY = {
    "homeassistant/sensor/humwatch_kitchen/state/config":
        ("humwatch_kitchen_state", "State", ATTRIBUTES),
    "homeassistant/binary_sensor/humwatch_kitchen/ac/config":
        ("humwatch_kitchen_ac", "AC running", ATTRIBUTES),
    "homeassistant/binary_sensor/humwatch_kitchen/fridge/config":
        ("humwatch_kitchen_fridge", "Fridge running", ATTRIBUTES),
    "homeassistant/sensor/humwatch_kitchen/ac_duty_cycle_pct/config":
        ("humwatch_kitchen_ac_duty_cycle_pct", "AC duty cycle", STATS),
    "homeassistant/sensor/humwatch_kitchen/ac_current_run_min/config":
        ("humwatch_kitchen_ac_current_run_min", "AC current run", STATS),
    "homeassistant/sensor/humwatch_kitchen/ac_runtime_today_h/config":
        ("humwatch_kitchen_ac_runtime_today_h", "AC run-time today", STATS),
    "homeassistant/sensor/humwatch_kitchen/ac_cycles_today/config":
        ("humwatch_kitchen_ac_cycles_today", "AC cycles today", STATS),
    "homeassistant/sensor/humwatch_kitchen/ac_energy_today_kwh/config":
        ("humwatch_kitchen_ac_energy_today_kwh", "AC energy today", STATS),
    "homeassistant/sensor/humwatch_kitchen/fridge_duty_cycle_pct/config":
        ("humwatch_kitchen_fridge_duty_cycle_pct", "Fridge duty cycle", STATS),
    "homeassistant/sensor/humwatch_kitchen/fridge_current_run_min/config":
        ("humwatch_kitchen_fridge_current_run_min", "Fridge current run", STATS),
    "homeassistant/sensor/humwatch_kitchen/fridge_runtime_today_h/config":
        ("humwatch_kitchen_fridge_runtime_today_h", "Fridge run-time today", STATS),
    "homeassistant/sensor/humwatch_kitchen/fridge_cycles_today/config":
        ("humwatch_kitchen_fridge_cycles_today", "Fridge cycles today", STATS),
    "homeassistant/sensor/humwatch_kitchen/fridge_energy_today_kwh/config":
        ("humwatch_kitchen_fridge_energy_today_kwh", "Fridge energy today", STATS),
    "homeassistant/binary_sensor/humwatch_kitchen/ac-run-max/config":
        ("humwatch_kitchen_alarm_ac-run-max", "Alarm ac-run-max", STATS),
    "homeassistant/binary_sensor/humwatch_kitchen/fridge-off-max/config":
        ("humwatch_kitchen_alarm_fridge-off-max", "Alarm fridge-off-max", STATS),
    # added by issue 29: whether the input is heard (the names above stay as they were)
    "homeassistant/binary_sensor/humwatch_kitchen/input-health/config":
        ("humwatch_kitchen_input-health", "Input", "humwatch/kitchen/input"),
}
# the entity ids Home Assistant makes of them (device name + entity name): what automations name
ENTITY_IDS = {
    "sensor.kitchen_state", "binary_sensor.kitchen_ac_running", "binary_sensor.kitchen_fridge_running",
    "binary_sensor.kitchen_input",
    "sensor.kitchen_ac_duty_cycle", "sensor.kitchen_ac_current_run", "sensor.kitchen_ac_run_time_today",
    "sensor.kitchen_ac_cycles_today", "sensor.kitchen_ac_energy_today", "sensor.kitchen_fridge_duty_cycle",
    "sensor.kitchen_fridge_current_run", "sensor.kitchen_fridge_run_time_today", "sensor.kitchen_fridge_cycles_today",
    "sensor.kitchen_fridge_energy_today", "binary_sensor.kitchen_alarm_ac_run_max", "binary_sensor.kitchen_alarm_fridge_off_max",
}
# statistic -> (unit, device_class, state_class), as Home Assistant's statistics and Energy dashboard read them
STAT_CLASSES = {"duty_cycle_pct": ("%", None, "measurement"), "current_run_min": ("min", "duration", "measurement"),
                "runtime_today_h": ("h", "duration", "total_increasing"), "cycles_today": (None, None, "total_increasing"),
                "energy_today_kwh": ("kWh", "energy", "total_increasing")}
STATS_KEYS = ["running", "duty_cycle_pct", "duty_cycle_1h_pct", "current_run_min", "current_pause_min", "runtime_today_h",
              "cycles_today", "mean_cycle_24h_min", "longest_cycle_24h_min", "energy_today_kwh"]
RETAINED_TOPICS = {"humwatch/kitchen/attributes", "humwatch/kitchen/state", "humwatch/kitchen/availability",
                   "humwatch/kitchen/stats", "humwatch/kitchen/input"}

# /metrics: every family a seed monitor with a history and alarms shows, and the labelled series
METRIC_FAMILIES = {"humwatch_inference_seconds", "humwatch_input_overflows_total", "humwatch_dropped_audio_seconds_total",
                   "humwatch_device_losses_total", "humwatch_state", "humwatch_probability", "humwatch_hop_seconds",
                   "humwatch_cpu_share", "humwatch_audits_total", "humwatch_audit_disagreements_total",
                   "humwatch_audit_fallback", "humwatch_alarm", "humwatch_runtime_today_seconds",
                   "humwatch_duty_cycle_24h", "humwatch_current_state_seconds", "humwatch_cycles_today",
                   "humwatch_uptime_seconds"}
LABELLED_SERIES = {
    'humwatch_state{state="ac-on"}', 'humwatch_state{state="fridge-on"}', 'humwatch_state{state="both-off"}',
    'humwatch_probability{label="ac"}', 'humwatch_probability{label="fridge"}',
    'humwatch_alarm{alarm="ac-run-max"}', 'humwatch_alarm{alarm="fridge-off-max"}',
    'humwatch_runtime_today_seconds{appliance="ac"}', 'humwatch_runtime_today_seconds{appliance="fridge"}',
    'humwatch_duty_cycle_24h{appliance="ac"}', 'humwatch_duty_cycle_24h{appliance="fridge"}',
    'humwatch_current_state_seconds{appliance="ac"}', 'humwatch_current_state_seconds{appliance="fridge"}',
    'humwatch_cycles_today{appliance="ac"}', 'humwatch_cycles_today{appliance="fridge"}',
    'humwatch_input{state="heard"}', 'humwatch_input{state="no-signal"}', 'humwatch_input{state="no-audio"}',
}
HISTORY_COLUMNS = ["day", "appliance", "observed_h", "runtime_h", "cycles", "longest_run_min", "energy_kwh"]


def _lines(output: str) -> list[dict]:
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


def _humwatch(*args: str):
    result = CliRunner().invoke(main, list(args))
    assert result.exit_code == 0, result.output
    return result


# --- the bundle exported before the change ---------------------------------------------------------------------------

def test_the_old_bundle_is_the_one_exported_before_the_change():
    manifest = (OLD_BUNDLE / "bundle.json").read_bytes()
    assert hashlib.sha256(manifest).hexdigest() == OLD_BUNDLE_JSON_SHA256, "tests/fixtures/bundle-v2 must never be regenerated"
    data = json.loads(manifest)
    assert data["schema_version"] == 2 and data["labels"] == ["ac", "fridge"] and set(data) == BUNDLE_KEYS
    # the schema-2 decision fields a newer humwatch must still read: BEATs' and the student's own
    assert list(data["decision"]) == DECISION_KEYS and list(data["decisions"]["student"]) == DECISION_KEYS


def test_bundle_check_passes_on_the_old_bundle():
    output = _humwatch("bundle", "check", "--bundle", str(OLD_BUNDLE)).output
    assert "fp32: ok (p_ac " in output and "student: ok (p_ac " in output
    assert output.rstrip().endswith(f"{OLD_BUNDLE}: bundle ok (schema 2, 3 files verified, default precision student)")


@pytest.mark.parametrize("precision", [None, "fp32"])
def test_batch_on_the_old_bundle_prints_the_seed_fields(project, precision):
    samples = project / "samples"
    paths = [samples / "ac-on-fridge-off-day.m4a", samples / "ac-off-fridge-off-night.m4a"]
    chosen = ["--precision", precision] if precision else []
    lines = _lines(_humwatch("batch", "--bundle", str(OLD_BUNDLE), *chosen, *map(str, paths)).output)
    assert [list(line) for line in lines] == [BATCH_KEYS, BATCH_KEYS]
    assert [line["path"] for line in lines] == list(map(str, paths))
    assert all(line["windows"] == 13 and line["status"] in STATUSES for line in lines)
    assert lines[0]["status"] == "ac-on" and lines[1]["status"] != "ac-on"
    if precision is None:  # the student deciding, as it did when exported (onnxruntime and ffmpeg may move the 4th digit)
        assert (lines[0]["p_ac"], lines[0]["p_fridge"]) == pytest.approx((0.7557, 0.5111), abs=0.02)
    raised = _lines(_humwatch("batch", "--bundle", str(OLD_BUNDLE), "--t-ac", "1.0", str(paths[0])).output)
    assert raised[0]["status"] != "ac-on", "--t-ac is the AC's file threshold"


def test_stream_on_the_old_bundle_prints_the_seed_fields(project):
    path = str(project / "samples" / "ac-on-fridge-off-day.m4a")
    lines = _lines(_humwatch("stream", "--bundle", str(OLD_BUNDLE), "--hop", "1.5", path).output)
    assert [line["t"] for line in lines] == [6.0 + 1.5 * i for i in range(13)]
    assert all(list(line) == STREAM_KEYS for line in lines), lines[0]
    assert {line["status"] for line in lines} | {line["debounced_status"] for line in lines} <= STATUSES
    assert lines[-1]["debounced_status"] == "ac-on" and lines[-1]["ac_running"] is True
    never = ["--ac-on", "1.0", "--ac-off", "1.0", "--fridge-on", "1.0", "--fridge-off", "1.0"]
    quiet = _lines(_humwatch("stream", "--bundle", str(OLD_BUNDLE), "--hop", "1.5", "--precision", "fp32", *never, path).output)
    assert len(quiet) == 13 and all(list(line) == STREAM_KEYS for line in quiet)
    assert {(line["debounced_status"], line["ac_on"], line["fridge_on"]) for line in quiet} == {("both-off", False, False)}


# --- a bundle exported now ---------------------------------------------------------------------------------------------

def test_a_new_bundle_keeps_the_seed_fields(bundle_dir):
    data = json.loads((bundle_dir / "bundle.json").read_text())
    assert BUNDLE_KEYS <= set(data), BUNDLE_KEYS - set(data)
    # issue 30: the levels keyed by appliance (flat keys let two appliances collide); the same figures:
    # each appliance's threshold and hysteresis, and the spans (a JSON object's order means nothing)
    assert set(data["decision"]) == {"levels", "median_sec", "debounce_sec"}
    assert {name: set(sides) for name, sides in data["decision"]["levels"].items()} == {
        "ac": {"threshold", "on", "off"}, "fridge": {"threshold", "on", "off"}}
    assert data["labels"] == ["ac", "fridge"]


# --- recordings: the names synth writes and prepare reads --------------------------------------------------------------

def test_synth_writes_the_seed_names_and_prepare_reads_them(tmp_path):
    samples, manifests = tmp_path / "samples", tmp_path / "manifests"
    written = _humwatch("synth", str(samples), "--seconds", "6").output.split()
    assert {Path(path).name for path in written} == SYNTH_NAMES == {path.name for path in samples.iterdir()}
    shutil.copy(samples / "ac-on-fridge-off-day.m4a", samples / "ac-on-fridge-off-day-take-2.m4a")  # a tagged take
    _humwatch("prepare", "--samples", str(samples), "--manifests", str(manifests))
    files = pd.read_csv(manifests / "files.csv")
    assert list(files.columns[: len(FILES_COLUMNS)]) == FILES_COLUMNS
    read = {row.recording_id: (row.ac, row.fridge, row.state, row.daypart) for row in files.itertuples()}
    assert read == RECORDINGS
    windows = pd.read_parquet(manifests / "windows.parquet")
    assert set(WINDOWS_COLUMNS) <= set(windows.columns), set(WINDOWS_COLUMNS) - set(windows.columns)
    assert len(windows) == len(RECORDINGS)  # 6 s: one window each
    for row in windows.itertuples():
        assert (row.ac, row.fridge) == RECORDINGS[row.recording_id][:2] and {row.ac, row.fridge} <= {0, 1}


# --- live: JSON lines, MQTT, /state, /metrics and the history, on the old bundle ---------------------------------------

@pytest.fixture(scope="module")
def live_run(project, tmp_path_factory):
    """`humwatch live` as a user runs it for the seed (MQTT, HTTP, history, energy, alarms), on the old
    bundle, fed 24 s of the AC at 10x real time as raw PCM on stdin; what it published, served and wrote."""
    audio = read_16k(project / "samples" / "ac-on-fridge-off-day.m4a")
    return run_live_with_broker(OLD_BUNDLE, audio, tmp_path_factory.mktemp("seed-live"),
                                ["--name", "Kitchen", "--watts", "ac=1200,fridge=150", "--alarm", "ac-run-max=0.5s",
                                 "--alarm", "fridge-off-max=6h"], hops=13, until='"event": "alarm"')


def test_live_lines_have_the_seed_fields(live_run):
    assert live_run["returncode"] == 0 and "stopped" in live_run["stderr"], live_run["stderr"]
    hops = [line for line in live_run["lines"] if "event" not in line]
    events = [line for line in live_run["lines"] if "event" in line]
    assert len(hops) >= 13 and all(list(line) == LIVE_KEYS for line in hops), hops[0]
    assert {line["debounced_status"] for line in hops} | {line["status"] for line in hops} <= STATUSES
    assert hops[-1]["debounced_status"] == "ac-on" and hops[-1]["precision"] == "student"
    assert [(list(event), event["alarm"], event["appliance"]) for event in events] == [
        (ALARM_EVENT_KEYS, "ac-run-max", "ac")]


def test_state_endpoint_is_the_last_line(live_run):
    state = json.loads(live_run["served"]["/state"])
    assert list(state) == LIVE_KEYS and state["debounced_status"] == "ac-on"


def test_metrics_series(live_run):
    metrics = live_run["served"]["/metrics"]
    families = set(re.findall(r"^# TYPE (\S+) ", metrics, re.MULTILINE))
    assert METRIC_FAMILIES <= families, METRIC_FAMILIES - families
    labelled = {series for series in re.findall(r"^(\w+\{[^}]*\})", metrics, re.MULTILINE)
                if not series.startswith("humwatch_inference_seconds_bucket")}
    assert labelled == LABELLED_SERIES
    assert 'humwatch_state{state="ac-on"} 1' in metrics


def _entity_id(component: str, device: str, name: str) -> str:
    """Home Assistant's entity id for an entity with has_entity_name: its slug of 'device name'."""
    return f"{component}.{re.sub(r'[^a-z0-9]+', '_', f'{device} {name}'.lower()).strip('_')}"


def test_home_assistant_discovery(live_run):
    configs = {topic: json.loads(payload) for topic, payload in live_run["retained"].items()
               if topic.startswith("homeassistant/")}
    assert {topic: (c["unique_id"], c["name"], c["state_topic"]) for topic, c in configs.items()} == DISCOVERY
    assert {_entity_id(topic.split("/")[1], c["device"]["name"], c["name"]) for topic, c in configs.items()} == ENTITY_IDS
    for config in configs.values():
        assert config["device"]["identifiers"] == ["humwatch_kitchen"] and config["device"]["name"] == "Kitchen"
        assert config["availability"][0] == {"topic": "humwatch/kitchen/availability"}
    state = configs["homeassistant/sensor/humwatch_kitchen/state/config"]
    assert state["device_class"] == "enum" and state["options"] == ["ac-on", "fridge-on", "both-off"]
    assert [configs[f"homeassistant/binary_sensor/humwatch_kitchen/{name}/config"]["device_class"]
            for name in ("ac", "fridge", "ac-run-max", "fridge-off-max")] == ["running", "running", "problem", "problem"]
    for appliance in ("ac", "fridge"):
        for key, classes in STAT_CLASSES.items():
            config = configs[f"homeassistant/sensor/humwatch_kitchen/{appliance}_{key}/config"]
            assert (config.get("unit_of_measurement"), config.get("device_class"), config["state_class"]) == classes


def test_mqtt_state_topics(live_run):
    retained = live_run["retained"]
    assert {topic for topic in retained if topic.startswith("humwatch/")} == RETAINED_TOPICS
    assert retained["humwatch/kitchen/state"] == "ac-on"
    attributes = json.loads(retained["humwatch/kitchen/attributes"])
    assert list(attributes) == [key for key in LIVE_KEYS if key not in ("changed", "lag_sec")]
    stats = json.loads(retained["humwatch/kitchen/stats"])
    assert sorted(stats) == ["ac", "alarms", "fridge"]
    assert list(stats["ac"]) == STATS_KEYS and list(stats["fridge"]) == STATS_KEYS
    assert stats["alarms"] == {"ac-run-max": True, "fridge-off-max": False}


def test_history_command_columns(live_run):
    db = str(live_run["history"])
    table = _humwatch("history", "--db", db, "--days", "1", "--watts", "ac=1200,fridge=150", "--format", "csv").output
    rows = table.splitlines()
    assert rows[0] == ",".join(HISTORY_COLUMNS)
    assert [row.split(",")[1] for row in rows[1:]] == ["ac", "fridge"]
    records = json.loads(_humwatch("history", "--db", db, "--days", "1", "--format", "json").output)
    assert [(list(record), record["appliance"]) for record in records] == [(HISTORY_COLUMNS, "ac"), (HISTORY_COLUMNS, "fridge")]
    text = _humwatch("history", "--db", db, "--days", "1").output.splitlines()
    assert text[0].split() == HISTORY_COLUMNS
