"""The history: exact run-times and cycles over a simulated 6 hours, alarms, restarts, kill -9."""

import datetime as dt
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import numpy as np
import pytest
from broker import Broker, Subscriber
from click.testing import CliRunner
from conftest import REPO

from edge.cli import main
from edge.core.decision import DecisionConfig, StreamDecider
from edge.core.labels import Appliances
from edge.engine.hop import HopLine
from edge.home.alarms import AlarmRule, Alarms, parse_duration
from edge.home.history import DAY, History, HistoryError, intervals, midnight, reading
from edge.home.household import Household, parse_watts
from edge.home.mqtt import MqttPublisher, MqttSettings

HOP = 10.0  # seconds of the simulated monitor's hop
MIN = 60.0
FRIDGE_RUNS = [(10, 30), (70, 90), (120, 220), (260, 280), (320, 340)]  # minutes after the start
AC_RUNS = [(60, 150)]
RESTART = (290, 295)  # the monitor is down from 4:50 to 4:55 (a fridge pause)


def _running(runs, minute: float) -> bool:
    return any(start <= minute < end for start, end in runs)


def hop_line(t: float, running: dict[str, bool], hop: float = HOP, **live) -> HopLine:
    """The line a monitor of these appliances (in this order) decides at `t` when each one's
    probability is 1 (running) or 0: with a median and a debounce of one hop, its detectors follow
    `running` at once."""
    decider = StreamDecider(DecisionConfig(Appliances(tuple(running)), median_sec=hop, debounce_sec=hop), hop)
    probs = np.array([float(on) for on in running.values()])
    return HopLine.build(t, probs, decider.update(probs), 1.0, hop_sec=hop, **live)


def line_at(t: float) -> HopLine:
    """The seed's schedule at `t` (seconds after the start)."""
    return hop_line(t, {"ac": _running(AC_RUNS, t / MIN), "fridge": _running(FRIDGE_RUNS, t / MIN)})


class Clock:
    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


def _household(path, clock, events):
    rules = [AlarmRule.parse("fridge-run-max=90m"), AlarmRule.parse("fridge-off-max=35m")]
    return Household(History(path, clock=clock), Alarms(rules, clock=clock), parse_watts("ac=1200,fridge=150"), events.append)


@pytest.fixture(scope="module")
def six_hours(tmp_path_factory):
    """The schedule played through a monitor with a fake clock: (db path, start, events, snapshot at the end)."""
    path = tmp_path_factory.mktemp("history") / "history.sqlite"
    start = midnight(time.time()) - 86_400 + 3600  # yesterday 01:00: the whole run lies in one local day
    clock, events = Clock(start), []
    household = _household(path, clock, events)
    for step in range(int(6 * 3600 / HOP)):
        t = step * HOP
        clock.now = start + t
        minute = t / MIN
        if minute == RESTART[0]:
            household.close()
        if RESTART[0] <= minute < RESTART[1]:
            continue
        if minute == RESTART[1]:
            household = _household(path, clock, events)
        household(line_at(t))
    snapshot = household.snapshot().to_json()  # the page's form
    household.close()
    return path, start, events, snapshot


def test_run_times_cycles_and_duty_are_exact(six_hours):
    _, _, _, snapshot = six_hours
    fridge, ac = snapshot["fridge"], snapshot["ac"]
    observed = 6 * 3600 - (RESTART[1] - RESTART[0]) * MIN - HOP  # the last hop's interval is still open
    assert fridge["runtime_24h_sec"] == pytest.approx(180 * MIN, abs=HOP)
    assert ac["runtime_24h_sec"] == pytest.approx(90 * MIN, abs=HOP)
    assert fridge["duty_24h"] == pytest.approx(180 * MIN / observed, abs=HOP / observed)
    assert (fridge["cycles_today"], ac["cycles_today"]) == (5, 1)
    assert fridge["longest_cycle_24h_sec"] == pytest.approx(100 * MIN, abs=HOP)
    assert fridge["mean_cycle_24h_sec"] == pytest.approx(36 * MIN, abs=HOP)
    assert fridge["running"] is False and fridge["current_sec"] == pytest.approx(20 * MIN - HOP, abs=HOP)
    assert fridge["runtime_1h_sec"] == pytest.approx(20 * MIN, abs=HOP)  # 5:20-5:40 in the last hour
    assert fridge["energy_today_kwh"] == pytest.approx(150 * 3 / 1000, abs=150 * HOP / 3.6e6)
    assert ac["energy_today_kwh"] == pytest.approx(1200 * 1.5 / 1000, abs=1200 * HOP / 3.6e6)


def test_alarms_are_raised_and_cleared_at_the_right_moments(six_hours):
    _, start, events, snapshot = six_hours
    moments = [(event["alarm"], event["state"], round((_wall(event) - start) / MIN, 2)) for event in events]
    after = round(HOP / MIN, 2)  # raised on the first hop beyond the limit
    assert moments == [
        ("fridge-off-max", "raised", 65 + after), ("fridge-off-max", "cleared", 70),
        ("fridge-run-max", "raised", 210 + after), ("fridge-run-max", "cleared", 220),
        ("fridge-off-max", "raised", 255 + after), ("fridge-off-max", "cleared", 260),
        # 4:40-5:20 is a 40-minute pause, but the monitor was down 4:50-4:55: 35 min were heard, not over the limit
    ]
    assert snapshot["alarms"] == {"fridge-run-max": False, "fridge-off-max": False}
    assert all(event["event"] == "alarm" and event["appliance"] == "fridge" for event in events)


def _wall(event: dict) -> float:
    return dt.datetime.strptime(event["time"], "%Y-%m-%dT%H:%M:%S%z").timestamp()


def test_restart_leaves_a_gap_not_an_off(six_hours):
    path, start, _, _ = six_hours
    connection = sqlite3.connect(path)
    segments = connection.execute("SELECT started - ?, ended - ? FROM segments ORDER BY id", (start, start)).fetchall()
    assert [(a, b) for a, b in segments] == [(0, RESTART[0] * MIN - HOP), (RESTART[1] * MIN, 360 * MIN - HOP)]
    assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_history_command_prints_the_day(six_hours):
    path, start, _, _ = six_hours
    result = CliRunner().invoke(main, ["history", "--db", str(path), "--days", "2", "--watts", "ac=1200,fridge=150",
                                       "--format", "json"])
    assert result.exit_code == 0, result.output
    rows = {(row["day"], row["appliance"]): row for row in json.loads(result.output)}
    day = dt.date.fromtimestamp(start).isoformat()
    assert rows[day, "fridge"]["runtime_h"] == pytest.approx(3.0, abs=0.01) and rows[day, "fridge"]["cycles"] == 5
    assert rows[day, "fridge"]["longest_run_min"] == pytest.approx(100, abs=0.2)
    assert rows[day, "ac"]["energy_kwh"] == pytest.approx(1.8, abs=0.01)
    assert rows[day, "fridge"]["observed_h"] == pytest.approx(355 / 60, abs=0.01)
    table = CliRunner().invoke(main, ["history", "--db", str(path), "--days", "2"])
    assert table.exit_code == 0 and "runtime_h" in table.output and day in table.output
    assert "3.000" in table.output or "2.997" in table.output


def test_a_second_monitor_on_the_same_file_is_refused(tmp_path):
    first = History(tmp_path / "h.sqlite")
    with pytest.raises(HistoryError, match=r"h\.sqlite: already in use by a running monitor \(pid \d+"):
        History(tmp_path / "h.sqlite")
    first.close()
    History(tmp_path / "h.sqlite").close()  # free again once the first one stopped


HOLDER = """
import sys
from edge.home.history import History

history = History(sys.argv[1])
print("holding", flush=True)
sys.stdin.read()  # until the test closes it
history.close()
"""


def test_the_lock_follows_the_database_file_whatever_names_it(tmp_path):
    """A symbolic link, a hard link or a path through .. name the same database: a second monitor on
    any of them is refused, in this process or another, and told who holds it, without -wal or
    -shm files appearing beside the other name."""
    (tmp_path / "sub").mkdir()
    path = tmp_path / "h.sqlite"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(path)], cwd=REPO, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "holding\n"
        (tmp_path / "soft.sqlite").symlink_to(path)
        (tmp_path / "hard.sqlite").hardlink_to(path)
        for name in ("h.sqlite", "soft.sqlite", "hard.sqlite", "sub/../h.sqlite"):
            with pytest.raises(HistoryError, match=rf"{name}: already in use by a running monitor \(pid {holder.pid} on "):
                History(tmp_path / name)
        assert {item.name for item in tmp_path.iterdir() if "-" in item.name} <= {"h.sqlite-wal", "h.sqlite-shm"}
    finally:
        holder.stdin.close()
        holder.wait(20)
    first = History(tmp_path / "hard.sqlite")  # free once its holder stopped; and in one process as well:
    try:
        for name in ("h.sqlite", "soft.sqlite", "sub/../hard.sqlite"):
            with pytest.raises(HistoryError, match=rf"already in use by a running monitor \(pid {os.getpid()} on "):
                History(tmp_path / name)
        first(line_at(0.0))  # the refusals left the holder's database as it was
        with reading(first.path) as connection:
            assert connection.execute("SELECT COUNT(*) FROM changes").fetchone()[0] == 2
    finally:
        first.close()


WRITER = """
import sys, time
sys.path.insert(0, sys.argv[2])
from test_history import Clock, line_at
from edge.home.history import History

clock = Clock(time.time())
history = History(sys.argv[1], clock=clock)
step = 0
while True:
    clock.now += 10
    history(line_at(step * 10.0))
    print(clock.now, flush=True)  # after the commit
    step += 1
"""


def test_kill_9_loses_at_most_one_hop_and_never_corrupts(tmp_path):
    path = tmp_path / "killed.sqlite"
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(REPO / "tests")], cwd=REPO,
                              stdout=subprocess.PIPE, text=True)
    printed = [float(writer.stdout.readline()) for _ in range(300)]
    writer.send_signal(signal.SIGKILL)
    writer.wait(10)
    connection = sqlite3.connect(path)
    assert connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    ended = connection.execute("SELECT ended FROM segments").fetchone()[0]
    assert ended >= printed[-1], "every committed hop is there"
    changes = connection.execute("SELECT COUNT(*) FROM changes").fetchone()[0]
    assert changes >= 2


def test_alarm_and_duration_parsing():
    assert parse_duration("90m") == 5400 and parse_duration("1h30m") == 5400 and parse_duration("45s") == 45
    rule = AlarmRule.parse("ac-run-max=2h")
    assert (rule.appliance, rule.running, rule.limit_sec, rule.name) == ("ac", True, 7200, "ac-run-max")
    assert AlarmRule.parse("washing_machine-off-max=3h") == AlarmRule("washing_machine", False, 3 * 3600)
    with pytest.raises(ValueError, match="expected APPLIANCE-.run.off.-max=DURATION"):
        AlarmRule.parse("oven-runs-max=1h")
    with pytest.raises(ValueError, match="'Oven' is not an appliance name: an appliance name holds lowercase letters"):
        AlarmRule.parse("Oven-run-max=1h")
    with pytest.raises(ValueError, match="expected a duration such as 90m"):
        AlarmRule.parse("fridge-off-max=soon")
    with pytest.raises(ValueError, match="given twice"):
        Alarms([AlarmRule.parse("fridge-off-max=6h"), AlarmRule.parse("fridge-off-max=5h")])
    assert parse_watts("ac=1200, dehumidifier=300") == {"ac": 1200.0, "dehumidifier": 300.0}
    for bad in ("ac=0", "ac=-5", "ac=nan", "ac=inf", "ac", "ac=1,ac=2", "Oven=2000", "=100"):
        with pytest.raises(ValueError, match=r"expected APPLIANCE=WATTS pairs such as ac=1200,fridge=150 \(each"):
            parse_watts(bad)


@pytest.fixture
def broker(tmp_path):
    running = Broker(tmp_path).start()
    yield running
    running.stop()


def test_home_assistant_gets_the_statistics_alarms_and_energy(broker, tmp_path):
    clock, events = Clock(1_000_000.0), []
    household = _household(tmp_path / "h.sqlite", clock, events)
    settings = MqttSettings.from_url(f"mqtt://127.0.0.1:{broker.port}", name="Kitchen", heartbeat_sec=MIN)
    publisher = MqttPublisher(settings, clock=clock, household=household)  # heartbeats in simulated time
    subscriber = Subscriber(broker.port)
    publisher.start()
    assert publisher.holding.wait(10)
    for step in range(int(80 * MIN / HOP)):  # 0:00-1:20: a fridge run, a long pause (alarm), a second run
        clock.now = 1_000_000.0 + step * HOP
        line = line_at(step * HOP)
        household(line)
        publisher(line)
        time.sleep(0.005)  # a pace the broker keeps up with
    assert subscriber.wait(lambda t, p, r: t == "humwatch/kitchen/stats" and json.loads(p)["fridge"]["cycles_today"] == 2)
    # the last heartbeat (1:19, a minute after the fridge's run began at 1:10 and each minute since) sends the
    # attributes, then the statistics
    assert subscriber.wait(lambda t, p, r: t == "humwatch/kitchen/attributes" and json.loads(p)["t"] == 79 * MIN)
    time.sleep(0.2)
    publisher.close()
    configs = {t.split("/")[3]: json.loads(p) for t, p, r in subscriber.messages if t.startswith("homeassistant/")}
    expected = {
        "fridge_duty_cycle_pct": ("%", None, "measurement"),
        "fridge_current_run_min": ("min", "duration", "measurement"),
        "fridge_runtime_today_h": ("h", "duration", "total_increasing"),
        "fridge_cycles_today": (None, None, "total_increasing"),
        "fridge_energy_today_kwh": ("kWh", "energy", "total_increasing"),
        "ac_energy_today_kwh": ("kWh", "energy", "total_increasing"),
    }
    for key, (unit, device_class, state_class) in expected.items():
        config = configs[key]
        assert (config.get("unit_of_measurement"), config.get("device_class"), config["state_class"]) == (unit, device_class, state_class)
        assert config["state_topic"] == "humwatch/kitchen/stats" and config["device"]["name"] == "Kitchen"
    assert configs["fridge-off-max"]["device_class"] == "problem"
    stats = [json.loads(p) for p in subscriber.payloads("humwatch/kitchen/stats")]
    assert any(s["alarms"]["fridge-off-max"] for s in stats), "the alarm was published while raised"
    last = stats[-1]  # the heartbeat at 1:19
    assert last["alarms"] == {"fridge-run-max": False, "fridge-off-max": False}
    assert last["fridge"]["runtime_today_h"] == pytest.approx(29 / 60, abs=HOP / 3600)  # 0:10-0:30 and 1:10-1:19
    assert last["fridge"]["current_run_min"] == pytest.approx(9, abs=HOP / MIN)
    assert last["ac"]["runtime_today_h"] == pytest.approx(19 / 60, abs=HOP / 3600)  # 1:00-1:19
    subscriber.close()
    household.close()


def test_alarms_need_a_history(bundle_dir, monkeypatch):
    from test_errors import fake_sounddevice

    import edge.monitor.sources

    monkeypatch.setattr(edge.monitor.sources, "import_sounddevice", fake_sounddevice)
    result = CliRunner().invoke(main, ["live", "--bundle", str(bundle_dir), "--hop", "1.5", "--alarm", "fridge-run-max=90m"])
    assert result.exit_code == 1 and "add --history PATH" in result.output


def _hops(history, clock, start_wall, start_t, count, ac, hop=1.5):
    """`count` hops of `hop` seconds from (start_wall, start_t), AC as given, the fridge off."""
    for step in range(count):
        clock.now = start_wall + step * hop
        history(hop_line(start_t + step * hop, {"ac": ac, "fridge": False}, hop))


def test_time_without_audio_is_a_gap_not_a_run(tmp_path):
    """A paused feed: 180 s of AC, 65 s with no hop, then hops again: 240 s of AC heard, not 305."""
    clock = Clock(1_000_000.0)
    history = History(tmp_path / "h.sqlite", clock=clock)
    _hops(history, clock, 1_000_000.0, 0.0, 121, ac=True)  # 0 ... 180 s
    _hops(history, clock, 1_000_245.0, 180.0, 41, ac=True)  # the feed resumes 65 s later (audio time goes on)
    stats = history.stats()
    history.close()
    assert stats["ac"].runtime_1h_sec == pytest.approx(180 + 60)  # 0-180 s and 245-305 s
    assert stats["ac"].duty_1h == 1.0  # observed 240 s, all of it on
    assert stats["ac"].current_sec == 240, "the run heard on both sides of the gap is one run: its heard time"
    assert stats["ac"].cycles_today == 1, "one cycle: the run heard since the monitor began (its start unheard)"
    connection = sqlite3.connect(tmp_path / "h.sqlite")
    assert connection.execute("SELECT started - 1e6, ended - 1e6 FROM segments ORDER BY id").fetchall() == [(0, 180), (245, 305)]
    # the states are recorded again at the first hop after the gap, with that hop's times, as going on
    assert connection.execute("SELECT segment, appliance, running, wall - 1e6, audio_t, kind FROM changes "
                              "ORDER BY id").fetchall() == [
        (1, "ac", 1, 0, 0, "first"), (1, "fridge", 0, 0, 0, "first"), (2, "ac", 1, 245, 180, "same"),
        (2, "fridge", 0, 245, 180, "same")]


def test_the_gap_follows_the_hop(tmp_path):
    """Up to max(3 hops, 10 s) between two hops is one segment; beyond, a gap."""
    clock = Clock(1_000_000.0)
    history = History(tmp_path / "h.sqlite", clock=clock)
    _hops(history, clock, 1_000_000.0, 0.0, 3, ac=False, hop=5.0)  # 0, 5, 10
    _hops(history, clock, 1_000_025.0, 15.0, 2, ac=False, hop=5.0)  # 15 s after the last: 3 hops, one segment
    _hops(history, clock, 1_000_040.0, 25.0, 2, ac=False, hop=2.0)  # 10 s after: one segment
    _hops(history, clock, 1_000_052.5, 29.0, 1, ac=False, hop=2.0)  # 10.5 s after at a 2 s hop: a gap
    history.close()
    connection = sqlite3.connect(tmp_path / "h.sqlite")
    assert connection.execute("SELECT started - 1e6, ended - 1e6 FROM segments ORDER BY id").fetchall() == [(0, 42), (52.5, 52.5)]


def test_a_dead_microphone_adds_no_segments(tmp_path):
    """A monitor restarted over and over that never decides writes nothing; older empty segments go."""
    path = tmp_path / "h.sqlite"
    clock = Clock(1_000_000.0)
    history = History(path, clock=clock)
    _hops(history, clock, 1_000_000.0, 0.0, 5, ac=True)
    history.close()
    for restart in range(200):
        clock.now += 40  # the watchdog's kill after 30 s, the restart after 10 s
        History(path, clock=clock).close()
    connection = sqlite3.connect(path)
    assert connection.execute("SELECT COUNT(*) FROM segments").fetchone()[0] == 1
    with connection:  # what an older humwatch left: a segment at each start, none of them decided
        connection.executemany("INSERT INTO segments (started, ended) VALUES (?, ?)", [(clock.now + i, clock.now + i) for i in range(50)])
    connection.close()
    History(path, clock=clock).close()
    connection = sqlite3.connect(path)
    assert connection.execute("SELECT COUNT(*), MIN(started) FROM segments").fetchone() == (1, 1_000_000.0)
    assert connection.execute("SELECT COUNT(*) FROM changes").fetchone()[0] == 2, "the decided segment is kept whole"


def _history_json(path, *options: str) -> list[dict]:
    result = CliRunner().invoke(main, ["history", "--db", str(path), "--days", "2", "--format", "json", *options])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_an_appliance_added_later_has_statistics_only_from_then_on(tmp_path):
    """Two hours of the seed's monitor, then its bundle gains a dehumidifier (off 2:00-2:10, on until 2:40,
    off until 3:00): the old rows read as before, and the dehumidifier has no statistics for the time
    before it was heard (never "off"); a monitor of the seed's bundle again reads the file too."""
    hop, start = 30.0, midnight(time.time()) - DAY + 3600  # yesterday 01:00: all of it in one local day
    path, clock = tmp_path / "h.sqlite", Clock(start)

    def play(history, minutes, dehumidifier=None):
        for step in range(int(minutes[0] * MIN / hop), int(minutes[1] * MIN / hop)):
            t = step * hop
            clock.now = start + t
            running = {"ac": _running(AC_RUNS, t / MIN), "fridge": _running(FRIDGE_RUNS, t / MIN)}
            if dehumidifier:
                running["dehumidifier"] = _running(dehumidifier, t / MIN)
            history(hop_line(t, running, hop))

    seed = History(path, clock=clock, appliances=("ac", "fridge"))
    play(seed, (0, 120))
    seed.close()
    three = History(path, clock=clock, appliances=("ac", "fridge", "dehumidifier"))
    assert three.current()["dehumidifier"] == (None, 0.0) and three.stats()["dehumidifier"].duty_24h is None
    play(three, (120, 180), dehumidifier=[(130, 160)])
    stats = three.stats({"dehumidifier": 300.0})
    three.close()

    dehumidifier, ac = stats["dehumidifier"], stats["ac"]
    observed = 60 * MIN - hop  # the last hop's interval is still open
    assert dehumidifier.runtime_24h_sec == 30 * MIN and dehumidifier.duty_24h == pytest.approx(30 * MIN / observed)
    assert (dehumidifier.cycles_today, dehumidifier.mean_cycle_24h_sec, dehumidifier.running) == (1, 30 * MIN, False)
    assert dehumidifier.energy_today_kwh == pytest.approx(0.3 * 0.5)
    assert ac.runtime_24h_sec == 90 * MIN - hop and ac.duty_24h == pytest.approx(ac.runtime_24h_sec / (180 * MIN - 2 * hop)), \
        "the AC's three hours across the restart (less the hop between the two runs: not heard)"
    with reading(path) as connection:
        found = intervals(connection, start, clock.now)
    heard = {appliance: min(i.start for i in found if i.appliance == appliance) for appliance in ("ac", "fridge", "dehumidifier")}
    assert heard == {"ac": start, "fridge": start, "dehumidifier": start + 120 * MIN}

    day = dt.date.fromtimestamp(start).isoformat()
    rows = _history_json(path, "--watts", "dehumidifier=300,ac=1200")
    assert [(row["day"], row["appliance"]) for row in rows] == [
        (day_, appliance) for day_ in (dt.date.fromtimestamp(start + DAY).isoformat(), day)
        for appliance in ("ac", "fridge", "dehumidifier")], "a row per day and appliance found, in order of first appearance"
    mine = {row["appliance"]: row for row in rows if row["day"] == day}
    assert (mine["dehumidifier"]["observed_h"], mine["dehumidifier"]["runtime_h"], mine["dehumidifier"]["cycles"]) == (
        round(observed / 3600, 3), 0.5, 1)
    assert mine["dehumidifier"]["energy_kwh"] == 0.15 and mine["fridge"]["energy_kwh"] is None
    assert mine["ac"]["energy_kwh"] == round(1.2 * ac.runtime_24h_sec / 3600, 3)
    assert mine["fridge"]["observed_h"] == pytest.approx(3.0, abs=0.02)
    assert mine["fridge"]["cycles"] == 3, "0:10, 1:10, and 2:00: off before the restart, on after it: a new run"
    today = [row for row in rows if row["day"] != day]  # nothing was heard today: no statistics, not "off"
    assert all(row["observed_h"] == 0 and row["runtime_h"] is row["cycles"] is row["energy_kwh"] is None for row in today)

    again = History(path, clock=clock, appliances=("ac", "fridge"))  # the seed's bundle once more
    assert set(again.stats()) == {"ac", "fridge"} and again.stats()["ac"] == ac
    again.close()
    assert [row["appliance"] for row in _history_json(path) if row["day"] == day] == ["ac", "fridge", "dehumidifier"]


def test_history_refuses_watts_of_an_appliance_it_does_not_hold(tmp_path):
    path, clock = tmp_path / "h.sqlite", Clock(1_000_000.0)
    history = History(path, clock=clock)
    history(hop_line(0.0, {"ac": True, "fridge": False, "dehumidifier": True}))
    history.close()
    result = CliRunner().invoke(main, ["history", "--db", str(path), "--watts", "ac=1200,dehumidifer=300"])
    assert result.exit_code == 1
    assert (f"{path}: --watts dehumidifer=300: dehumidifer is not one of the history's appliances (ac, fridge, "
            "dehumidifier); use one of them, e.g. --watts ac=300") in result.output


V1_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE segments (id INTEGER PRIMARY KEY, started REAL NOT NULL, ended REAL NOT NULL);
CREATE TABLE changes (id INTEGER PRIMARY KEY, segment INTEGER NOT NULL REFERENCES segments(id), appliance TEXT NOT NULL,
    running INTEGER NOT NULL, wall REAL NOT NULL, audio_t REAL NOT NULL);
CREATE INDEX changes_by_time ON changes (appliance, wall);
CREATE INDEX changes_by_segment ON changes (segment, appliance, wall);
INSERT INTO meta VALUES ('schema_version', '1');
"""


def test_a_history_written_before_gaps_had_reasons_is_brought_up_to_date(tmp_path):
    """A version-1 file (humwatch before issue 29): its stretches' first rows are classed by the rule for gaps."""
    path, start = tmp_path / "old.sqlite", 1_000_000.0
    with sqlite3.connect(path) as connection:
        connection.executescript(V1_SCHEMA)
        connection.executemany("INSERT INTO segments VALUES (?, ?, ?)", [(1, start, start + 600), (2, start + 900, start + 1500)])
        connection.executemany("INSERT INTO changes (segment, appliance, running, wall, audio_t) VALUES (?, ?, ?, ?, ?)", [
            (1, "fridge", 0, start, 0.0), (1, "fridge", 1, start + 300, 300.0),  # off, then a run ...
            (2, "fridge", 1, start + 900, 0.0),  # ... heard again after a restart: the same run
            (1, "ac", 0, start, 0.0), (2, "ac", 1, start + 900, 0.0)])  # off, then on after the restart: unseen
    connection.close()
    history = History(path, clock=lambda: start + 1500, appliances=("fridge", "ac"))
    stats = history.stats()
    history.close()
    with sqlite3.connect(path) as connection:
        kinds = connection.execute("SELECT appliance, kind FROM changes ORDER BY id").fetchall()
        version = connection.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0]
    connection.close()
    assert version == "2" and kinds == [("fridge", "first"), ("fridge", "change"), ("fridge", "same"), ("ac", "first"),
                                         ("ac", "unseen")]
    assert stats["fridge"].current_sec == 300 + 600, "the run heard before and after the restart"
    assert (stats["fridge"].cycles_today, stats["ac"].cycles_today) == (1, 1)


def test_an_alarm_clock_stands_still_while_nothing_is_heard(tmp_path):
    """90 s of AC, 60 s of digital silence (no-signal lines), then AC again: a 150-s run alarm rises
    once 150 s were heard, never from the silence and never reset by it."""
    clock, events, raised_at = Clock(1_000_000.0), [], None
    household = Household(History(tmp_path / "h.sqlite", clock=clock), Alarms([AlarmRule.parse("ac-run-max=150s")],
                                                                              clock=clock), {}, events.append)
    for step in range(160):
        t = clock.now - 1_000_000.0 if step == 0 else step * 1.5
        clock.now = 1_000_000.0 + t
        if 90 <= t < 150:
            household(HopLine.undecided(t, "no-signal", "no signal: digital silence", changed=t == 90, hop_sec=1.5))
            assert household.history.current()["ac"] == (True, pytest.approx(88.5)), "frozen while nothing is heard"
        else:
            household(hop_line(t, {"ac": True, "fridge": False}, 1.5))
        if raised_at is None and household.alarms.active["ac-run-max"]:
            raised_at = t
    household.close()
    assert raised_at == 213.0, "88.5 s heard before the silence + 63 s after it: over 150 s at 213 s, not at 150"
    assert [(event["state"], event["observed_sec"]) for event in events] == [("raised", 151.5)]
    with sqlite3.connect(tmp_path / "h.sqlite") as connection:
        assert connection.execute("SELECT reason, ended - started FROM gaps").fetchall() == [("no-signal", 58.5)]
        assert [kind for (kind,) in connection.execute("SELECT kind FROM changes WHERE appliance = 'ac'")] == ["first", "same"]
    connection.close()
