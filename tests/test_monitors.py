"""Several monitors in one process: [[monitor]] tables, one model, a Home Assistant device, history
and page each, and a source that fails or ends never stopping the others."""

from __future__ import annotations

import json
import re
import threading
import time
import tomllib
from pathlib import Path

import pytest
from broker import Subscriber, free_port
from click.testing import CliRunner
from conftest import REPO
from test_home import _get
from test_live import FakeSource, eventually
from test_student import student_bundle, student_run  # noqa: F401 (fixtures)

from edge.cli import main
from edge.commands import live
from edge.core.options import SettingsError, options_of
from edge.home.history import intervals, reading
from edge.monitor.assembly import Assembly, MonitorsEnded
from edge.monitor.settings import LiveSettings, live_settings, per_monitor
from edge.monitor.sources import SourceEnded

TWO = """
bundle = "{bundle}"
max_lag = 30
{extra}
[levels.fridge]   # the tiny random encoder cannot hear the fridge: its detector is pinned off
on = 1.0
off = 1.0

[[monitor]]
name = "Kitchen"
history = "{tmp}/kitchen.sqlite"

[[monitor]]
name = "Cellar"
history = "{tmp}/cellar.sqlite"
only_changes = true
"""


def settings_of(path, *args: str):
    """What `humwatch live --config PATH ARGS` would run, parsed by the command itself."""
    ctx = live.make_context("live", ["--config", str(path), *args])
    options = {key: value for key, value in ctx.params.items() if key not in ("config", "print_config")}
    return live_settings(ctx, options, path)


def write(tmp_path, text: str):
    path = tmp_path / "humwatch.toml"
    path.write_text(text)
    return path


def test_monitor_tables_share_the_top_keys_and_the_command_line(tmp_path):
    config = write(tmp_path, TWO.format(bundle="/b", tmp=tmp_path, extra='[mqtt]\nurl = "mqtt://user:pw@broker"'))
    kitchen, cellar = settings_of(config, "--cpu-budget", "0.3")
    assert (kitchen.name, cellar.name) == ("Kitchen", "Cellar")
    assert kitchen.history == tmp_path / "kitchen.sqlite" and cellar.history == tmp_path / "cellar.sqlite"
    assert (kitchen.only_changes, cellar.only_changes) == (False, True)
    for settings in (kitchen, cellar):  # shared: the file's top keys, the command line over them
        assert settings.cpu_budget == 0.3 and settings.max_lag == 30 and settings.levels == {"fridge": {"on": 1.0, "off": 1.0}}
        assert settings.mqtt.url == "mqtt://user:pw@broker" and str(settings.bundle) == "/b"

    result = CliRunner().invoke(main, ["live", "--config", str(config), "--print-config"])
    assert result.exit_code == 0, result.output
    shown = tomllib.loads(result.output)
    assert [monitor["name"] for monitor in shown["monitor"]] == ["Kitchen", "Cellar"]
    assert shown["max_lag"] == 30 and "name" not in shown and "bundle" not in shown["monitor"][0]
    assert "pw" not in result.output  # secrets masked as ever


def test_a_flat_file_is_one_monitor_as_before(tmp_path):
    config = write(tmp_path, 'bundle = "/b"\nname = "Kitchen"\nhistory = "/h.sqlite"\n')
    (settings,) = settings_of(config)
    assert settings.name == "Kitchen" and str(settings.history) == "/h.sqlite"
    shown = tomllib.loads(CliRunner().invoke(main, ["live", "--config", str(config), "--print-config"]).output)
    assert shown["name"] == "Kitchen" and "monitor" not in shown


@pytest.mark.parametrize("text, args, message", [
    ('[[monitor]]\nname = "A"\ncpu_budet = 0.3\n', (), "[[monitor]] 1 (A): unknown key 'cpu_budet'; the keys are: alarm, "
                                                       "device, history, history_days, name, only_changes, output, source, "
                                                       "source_format, watts, [monitor.mqtt] device_id, [monitor.clips] dir"),
    ('[[monitor]]\nname = "A"\n[monitor.clips]\ndirectory = "/c"\n', (),
     "[[monitor]] 1 (A): unknown key 'directory' in [monitor.clips]; its keys are: dir, seconds, max_mb, relabel_dir"),
    ('[[monitor]]\nname = "A"\nbundle = "/b"\n', (), "[[monitor]] 1 (A): 'bundle' is shared by all monitors: set it once"),
    ('[[monitor]]\nname = "A"\n[monitor.mqtt]\nurl = "mqtt://b"\n', (),
     "[[monitor]] 1 (A): '[monitor.mqtt] url' is shared by all monitors: set it once, above the [[monitor]] tables"),
    ('name = "A"\n[[monitor]]\nname = "B"\n', (), "'name' is a monitor's own key: with [[monitor]] tables in the file, move it"),
    ('[clips]\nseconds = 10\n[[monitor]]\nname = "B"\n', (), "'[clips] seconds' is a monitor's own key: with [[monitor]] "
                                                            "tables in the file, move it into each [[monitor]] table"),
    ('[mqtt]\ndevice_id = "a"\n[[monitor]]\nname = "B"\n', (), "'[mqtt] device_id' is a monitor's own key"),
    ('[[monitor]]\nname = "A"\n[[monitor]]\nsource = "-"\n', (), "[[monitor]] 2: no name; give each monitor its own"),
    ('[[monitor]]\nname = "A"\n[[monitor]]\nname = "A"\n', (), "the monitors 'A' and 'A' share the name"),
    ('[[monitor]]\nname = "Cellar"\n[[monitor]]\nname = "cellar"\n', (), "the monitors 'Cellar' and 'cellar' share the id 'cellar'"),
    ('[[monitor]]\nname = "A"\nhistory = "/h.sqlite"\n[[monitor]]\nname = "B"\nhistory = "/h.sqlite"\n', (),
     "the monitors 'A' and 'B' share history = '/h.sqlite'"),
    ('[[monitor]]\nname = "A"\nsource = "-"\n[[monitor]]\nname = "B"\nsource = "-"\n', (),
     "the monitors 'A' and 'B' share standard input (source = \"-\"): only one monitor can read it"),
    ('[[monitor]]\nname = "A"\nclips_seconds = "20"\n', (), "[[monitor]] 1 (A): clips_seconds = '20': expected number"),
    ('[[monitor]]\nname = "A"\n', ("--source", "-"), "--source: "),
    ('[[monitor]]\nname = "A"\n', ("--clips", "/c"), "--clips: "),
    ('[[monitor]]\nname = "A"\n[monitor.mqtt]\ndevice_id = "x"\n[[monitor]]\nname = "B"\n[monitor.mqtt]\ndevice_id = "x"\n',
     (), "the monitors 'A' and 'B' share the id 'x' (MQTT humwatch/x/..., the page /monitor/x/); give each its own name "
         "or [mqtt] device_id"),
    ('monitor = "A"\n', (), "monitor: expected [[monitor]] tables"),
])
def test_a_bad_monitor_table_is_one_error_naming_the_key_and_the_file(tmp_path, text, args, message):
    config = write(tmp_path, text)
    with pytest.raises(SettingsError) as error:
        settings_of(config, *args)
    assert message in error.value.message and str(config) in error.value.message
    result = CliRunner().invoke(main, ["live", "--config", str(config), *args, "--print-config"])
    assert result.exit_code == 1 and message in result.output and "Traceback" not in result.output


def _link(kind: str, target, link) -> None:
    if kind == "symlink":
        link.symlink_to(target)
    else:
        link.hardlink_to(target)


@pytest.mark.parametrize("first_key, second_key, first, second, make", [
    ("history", "history", "h.sqlite", "soft.sqlite", lambda tmp: _link("symlink", tmp / "h.sqlite", tmp / "soft.sqlite")),
    ("history", "history", "h.sqlite", "hard.sqlite", lambda tmp: _link("hardlink", tmp / "h.sqlite", tmp / "hard.sqlite")),
    ("history", "history", "h.sqlite", "d/../h.sqlite", lambda tmp: (tmp / "d").mkdir()),
    ("history", "output", "h.sqlite", "d/../h.sqlite", lambda tmp: (tmp / "d").mkdir()),  # one file under two keys
    ("output", "output", "states.jsonl", "hard.jsonl",
     lambda tmp: _link("hardlink", tmp / "states.jsonl", tmp / "hard.jsonl")),
    ("clips", "clips", "clips", "linked", lambda tmp: _link("symlink", tmp / "clips", tmp / "linked")),
    ("relabel_dir", "clips", "clips/", "d/../clips", lambda tmp: (tmp / "d").mkdir()),
    ("history", "history", "new/h.sqlite", "alias/h.sqlite",  # not made yet: one file once both are made
     lambda tmp: _link("symlink", tmp / "new", tmp / "alias")),
])
def test_two_monitors_never_share_a_file_or_folder_however_it_is_spelled(tmp_path, first_key, second_key, first, second,
                                                                         make):
    for made in ("h.sqlite", "states.jsonl"):
        (tmp_path / made).touch()
    (tmp_path / "clips").mkdir()
    (tmp_path / "new").mkdir()
    make(tmp_path)
    config = write(tmp_path, f'[[monitor]]\nname = "A"\n{first_key} = "{tmp_path / first}"\n'
                             f'[[monitor]]\nname = "B"\n{second_key} = "{tmp_path / second}"\n')
    with pytest.raises(SettingsError) as error:
        settings_of(config)
    spelled = {"history": "history", "output": "output", "clips": "[clips] dir", "relabel_dir": "[clips] relabel_dir"}
    assert (f"the monitors 'A' and 'B' share one file or folder, spelled {spelled[first_key]} = "
            f"'{tmp_path / first.rstrip('/')}' and {spelled[second_key]} = '{tmp_path / second}'; give each its own"
            ) in error.value.message


def test_the_example_files_monitor_tables_load_in_place_of_its_monitor_keys(tmp_path):
    text = (REPO / "edge" / "systemd" / "humwatch.toml").read_text()
    head, tables = text.split("# [[monitor]]", 1)
    own = {option.field.name for option in options_of(LiveSettings) if per_monitor(option) and not option.section}
    head = re.sub(r"\n\[clips\]\n(.+\n)*", "\n", head)  # every key of [clips] is a monitor's own, as the file says
    shared = [line for line in head.splitlines() if line.split("=")[0].strip() not in own]
    tables = [line.removeprefix("#").removeprefix(" ") for line in ("# [[monitor]]" + tables).splitlines()]
    kitchen, living_room = settings_of(write(tmp_path, "\n".join(shared + tables)))
    assert (kitchen.name, kitchen.device, living_room.name) == ("Kitchen", "USB", "Living room")
    assert kitchen.clips.dir == Path("/var/lib/humwatch/clips/kitchen") and living_room.clips.dir is None
    assert living_room.source.startswith("rtsp://") and living_room.watts == "ac=1200"
    assert kitchen.http.listen == living_room.http.listen == "8321" and kitchen.history != living_room.history


def test_a_monitor_sets_its_own_clips_and_mqtt_id_in_sub_tables(tmp_path, caplog):
    config = write(tmp_path, '[mqtt]\nurl = "mqtt://broker"\nheartbeat = 30\n\n[[monitor]]\nname = "Kitchen"\n'
                             '[monitor.clips]\ndir = "/c/kitchen"\nseconds = 10\n[monitor.mqtt]\ndevice_id = "k1"\n\n'
                             '[[monitor]]\nname = "Cellar"\nclips = "/c/cellar"\nmqtt_device_id = "c1"\n')
    kitchen, cellar = settings_of(config)
    assert (kitchen.clips.dir, kitchen.clips.seconds, kitchen.mqtt.device_id) == (Path("/c/kitchen"), 10.0, "k1")
    assert (cellar.clips.dir, cellar.clips.seconds, cellar.mqtt.device_id) == (Path("/c/cellar"), 20.0, "c1")
    assert kitchen.mqtt.url == cellar.mqtt.url == "mqtt://broker" and kitchen.mqtt.heartbeat == cellar.mqtt.heartbeat == 30
    assert caplog.messages == [f"{config}: [[monitor]] 2 (Cellar): clips is now [monitor.clips] dir",
                               f"{config}: [[monitor]] 2 (Cellar): mqtt_device_id is now [monitor.mqtt] device_id"]
    shown = tomllib.loads(CliRunner().invoke(main, ["live", "--config", str(config), "--print-config"]).output)
    assert [monitor["clips"]["dir"] for monitor in shown["monitor"]] == ["/c/kitchen", "/c/cellar"]
    assert [monitor["mqtt"]["device_id"] for monitor in shown["monitor"]] == ["k1", "c1"]
    assert shown["mqtt"]["heartbeat"] == 30 and "clips" not in shown


class EndingSource(FakeSource):
    """Standard input that ends once `end` is set: the monitor stops and cannot reopen it."""

    def __init__(self) -> None:
        super().__init__()
        self.end = threading.Event()

    def check(self):
        if self.end.is_set():
            raise SourceEnded("standard input ended: the program writing audio to it (e.g. arecord) stopped")


class Running:
    """An Assembly running in a thread, each monitor's lines collected."""

    def __init__(self, settings, sources: dict) -> None:
        self.assembly = Assembly(settings, open_source=lambda each: sources[each.name])
        self.lines = {monitor.name: [] for monitor in self.assembly.monitors}
        for monitor in self.assembly.monitors:
            monitor.outputs.add(self.lines[monitor.name].append, "test")
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            self.assembly.run()
        except BaseException as error:
            self.error = error

    def __enter__(self) -> Running:
        self.assembly.start()
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.assembly.stop()
        self.thread.join(20)
        assert not self.thread.is_alive(), "the monitors did not stop"


def test_two_monitors_are_two_devices_with_their_own_entities_history_and_page(bundle_dir, broker, off_then_ac, tmp_path):
    port = free_port()
    extra = f'[mqtt]\nurl = "mqtt://127.0.0.1:{broker.port}"\n[http]\nlisten = "127.0.0.1:{port}"'
    settings = settings_of(write(tmp_path, TWO.format(bundle=bundle_dir, tmp=tmp_path, extra=extra)))
    subscriber = Subscriber(broker.port)
    sources = {"Kitchen": FakeSource(), "Cellar": FakeSource()}
    with Running(settings, sources) as running:
        kitchen, cellar = running.assembly.monitors
        assert kitchen.detector.classifier is cellar.detector.classifier, "one model for every monitor"
        assert kitchen.detector.planner is not cellar.detector.planner and kitchen.detector.planner.budget == 0.25
        sources["Kitchen"].feed(off_then_ac[1])  # the AC runs in the kitchen, nothing in the cellar
        sources["Cellar"].feed(off_then_ac[0])
        # 24 s each (at --hop auto: the tiny model's shortest hop, 0.5 s)
        assert eventually(lambda: all(lines and lines[-1].t == 24.0 for lines in running.lines.values()), 30)
        states = {name: lines[-1].debounced_status for name, lines in running.lines.items()}
        assert states == {"Kitchen": "ac-on", "Cellar": "both-off"}
        for ident, state in (("kitchen", "ac-on"), ("cellar", "both-off")):
            assert subscriber.wait(lambda t, p, r: t == f"humwatch/{ident}/state" and p == state), ident
        base = f"http://127.0.0.1:{port}"
        code, index = _get(base + "/")
        assert code == 200 and 'href="monitor/kitchen/"' in index and 'href="monitor/cellar/"' in index
        code, page = _get(base + "/monitor/cellar/api/page")
        assert code == 200 and json.loads(page)["name"] == "Cellar" and json.loads(page)["state"] == "both-off"
        assert _get(base + "/monitor/kitchen/")[0] == 200 and "all monitors" in _get(base + "/monitor/kitchen")[1]
        code, metrics = _get(base + "/metrics")
        assert 'humwatch_state{monitor="Kitchen",state="ac-on"} 1' in metrics
        assert 'humwatch_state{monitor="Cellar",state="both-off"} 1' in metrics
        assert metrics.count("# TYPE humwatch_state gauge") == 1, "one family, a sample per monitor"
        code, health = _get(base + "/healthz")
        assert code == 200 and json.loads(health)["monitors"].keys() == {"Kitchen", "Cellar"}
    subscriber.wait(lambda t, p, r: t == "humwatch/cellar/availability" and p == "offline")
    subscriber.close()

    configs = {t: json.loads(p) for t, p, r in subscriber.messages if t.startswith("homeassistant/")}
    devices = {config["device"]["identifiers"][0]: config["device"]["name"] for config in configs.values()}
    assert devices == {"humwatch_kitchen": "Kitchen", "humwatch_cellar": "Cellar"}, "two Home Assistant devices"
    unique_ids = [config["unique_id"] for config in configs.values()]
    assert len(unique_ids) == len(set(unique_ids)) >= 6
    for node in ("humwatch_kitchen", "humwatch_cellar"):  # each entity reads its own device's topics only
        own = [config for config in configs.values() if config["device"]["identifiers"] == [node]]
        assert own and all(config["state_topic"].startswith(f"humwatch/{node.removeprefix('humwatch_')}/") for config in own)
    # never overwritten by the other: the AC only ever ran in the kitchen
    assert subscriber.payloads("humwatch/kitchen/state")[-1] == "ac-on"
    assert set(subscriber.payloads("humwatch/cellar/state")) == {"both-off"}
    assert {json.loads(p)["debounced_status"] for p in subscriber.payloads("humwatch/cellar/attributes")} == {"both-off"}
    ran = {}
    for name in ("kitchen", "cellar"):  # one history each
        with reading(tmp_path / f"{name}.sqlite") as connection:
            ran[name] = {i.running for i in intervals(connection, 0, time.time() + 60) if i.appliance == "ac"}
    assert True in ran["kitchen"] and ran["cellar"] == {False}


def test_students_audited_by_one_shared_teacher(student_bundle, off_then_ac, tmp_path):  # noqa: F811 (the fixture imported above)
    extra = 'hop = 1.5\nprecision = "student"\n[audit]\nevery_sec = 1.5'
    sources = {"Kitchen": FakeSource(), "Cellar": FakeSource()}
    with Running(settings_of(write(tmp_path, TWO.format(bundle=student_bundle, tmp=tmp_path, extra=extra))), sources) as running:
        kitchen, cellar = running.assembly.monitors
        for audits, (start, end) in enumerate(((0, 6), (6, 9)), start=1):  # an audit's teacher process answers
            for source, audio in zip(sources.values(), off_then_ac):        # before the next one is due
                source.feed(audio[16_000 * start : 16_000 * end])
            assert eventually(lambda: all(m.detector.auditor.audits >= audits for m in running.assembly.monitors), 60)
    assert kitchen.detector.classifier is cellar.detector.classifier and kitchen.detector.classifier.precision == "student"
    assert kitchen.detector.auditor is not cellar.detector.auditor, "each monitor keeps its own audit counts"
    assert kitchen.detector.auditor.teacher is cellar.detector.auditor.teacher is running.assembly.shared.teacher()
    assert kitchen.detector.auditor.teacher.precision == "fp32"


def test_a_source_that_ends_or_is_lost_never_stops_the_others(bundle_dir, off_then_ac, tmp_path, capsys):
    port = free_port()
    text = TWO.format(bundle=bundle_dir, tmp=tmp_path, extra=f'hop = 1.5\n[http]\nlisten = "127.0.0.1:{port}"')
    text += '\n[[monitor]]\nname = "Garage"\nsource = "rtsp://cam.local/stream"\n'
    sources = {"Kitchen": FakeSource(), "Cellar": EndingSource(), "Garage": FakeSource(failures=10_000)}
    with Running(settings_of(write(tmp_path, text)), sources) as running:
        sources["Cellar"].feed(off_then_ac[0][: 16_000 * 9])
        assert eventually(lambda: len(running.lines["Cellar"]) == 3)
        sources["Cellar"].end.set()  # its standard input ends: that monitor stops
        cellar = running.assembly.monitors[1]
        assert eventually(lambda: cellar.error is not None)
        sources["Kitchen"].feed(off_then_ac[1][: 16_000 * 9])  # the kitchen goes on
        assert eventually(lambda: len(running.lines["Kitchen"]) == 3)
        code, body = _get(f"http://127.0.0.1:{port}/healthz")
        health = json.loads(body)
    assert running.error is None, "stopped by stop(), not by the monitor that ended"
    assert code == 503 and "Cellar: stopped: standard input ended" in health["reason"]
    assert health["monitors"]["Garage"]["reason"].startswith("the audio source: lost (fake device unplugged)")
    assert health["monitors"]["Kitchen"]["ok"] is True
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert {line["monitor"] for line in printed} == {"Kitchen", "Cellar", "Garage"}, "each line names its monitor"
    assert {line["status"] for line in printed if line["monitor"] == "Garage"} == {"no-audio"}, "the lost camera says so"


def test_the_process_ends_when_every_monitor_ended_by_itself(bundle_dir, tmp_path):
    sources = {"Kitchen": EndingSource(), "Cellar": EndingSource()}
    with Running(settings_of(write(tmp_path, TWO.format(bundle=bundle_dir, tmp=tmp_path, extra="hop = 1.5"))), sources) as running:
        for source in sources.values():
            assert source.opened.wait(10)
            source.end.set()
        running.thread.join(20)
    assert isinstance(running.error, MonitorsEnded)
    assert str(running.error).startswith("every monitor stopped: Kitchen: standard input ended")


@pytest.mark.parametrize("option, message", [
    (["--alarm", "dehumidifier-run-max=2h"], "--alarm dehumidifier-run-max=2h: dehumidifier is not one of the bundle's "
                                             "appliances (ac, fridge); use one of them, e.g. --alarm ac-run-max=2h"),
    (["--watts", "ac=1200,dehumidifier=300"], "--watts dehumidifier=300: dehumidifier is not one of the bundle's "
                                              "appliances (ac, fridge); use one of them, e.g. --watts ac=300"),
])
def test_alarms_and_watts_name_appliances_of_the_bundle(bundle_dir, tmp_path, monkeypatch, option, message):
    """Checked when the monitor opens the bundle, before the history is made."""
    from test_errors import fake_sounddevice

    import edge.monitor.sources

    monkeypatch.setattr(edge.monitor.sources, "import_sounddevice", fake_sounddevice)
    history = tmp_path / "history.sqlite"
    result = CliRunner().invoke(main, ["live", "--bundle", str(bundle_dir), "--hop", "1.5", "--history", str(history), *option])
    assert result.exit_code == 1 and message in result.output, result.output
    assert not history.exists(), "refused before anything is written"


@pytest.mark.parametrize("option, message", [
    (["--alarm", "fridge-run-max=soon"], "--alarm 'fridge-run-max=soon': 'soon': expected a duration such as 90m"),
    (["--alarm", "Fridge-run-max=1h"], "--alarm 'Fridge-run-max=1h': 'Fridge' is not an appliance name"),
    (["--watts", "fridge=lots"], "--watts 'fridge=lots': expected APPLIANCE=WATTS pairs"),
])
def test_a_bad_alarm_or_watts_is_refused_before_the_bundle_is_loaded(tmp_path, option, message):
    result = CliRunner().invoke(main, ["live", "--bundle", str(tmp_path / "no-bundle"), "--history",
                                       str(tmp_path / "history.sqlite"), *option])
    assert result.exit_code == 1 and message in result.output and "no-bundle" not in result.output, result.output
