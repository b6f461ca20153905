"""A year of history with thousands of segments: reads stay fast, readers never hold up the hop,
and the one-query window reading agrees with a plain segment-by-segment one."""

import dataclasses
import random
import sqlite3
import statistics
import threading
import time

import pytest
from test_history import Clock, line_at

from edge.core.labels import SEED
from edge.home.history import (
    DAY,
    History,
    Interval,
    daily_table,
    household_stats,
    intervals,
    midnight,
    stored_appliances,
)

YEAR = 365 * DAY
SEGMENTS = 2000
FRIDGE_PERIOD = 1200.0  # on for 10 minutes, off for 10
AC_PERIOD = 4 * 3600.0
BOUND_SEC = 0.5


def intervals_by_segment(connection, since: float, until: float) -> list[Interval]:
    """The reference: each segment, each appliance, all its changes (one query each; slow and plain)."""
    found = []
    for segment, started, ended in connection.execute(
            "SELECT id, started, ended FROM segments WHERE ended >= ? AND started <= ? ORDER BY id", (since, until)).fetchall():
        for appliance in SEED.names:
            rows = connection.execute("SELECT running, wall, kind FROM changes WHERE segment = ? AND appliance = ? "
                                      "ORDER BY wall, id", (segment, appliance)).fetchall()
            for index, (running, wall, kind) in enumerate(rows):
                end = rows[index + 1][1] if index + 1 < len(rows) else ended
                start, stop = max(wall, since), min(end, until)
                if stop >= start:
                    inside = wall >= since
                    found.append(Interval(appliance, bool(running), start, stop, index > 0 and inside,
                                          index + 1 < len(rows) and end <= until,
                                          starts_run=inside and (index > 0 or kind in ("unseen", "first")),
                                          continues_run=inside and index == 0 and kind == "same"))
    return found


def _write_rows(path, segments: list[tuple[float, float]], changes: list[tuple[int, str, bool, float]]) -> None:
    """Rows as a monitor writes them, into a file History created: (started, ended); (segment, appliance, running, wall)."""
    with sqlite3.connect(path) as connection:
        connection.executemany("INSERT INTO segments (id, started, ended) VALUES (?, ?, ?)",
                               [(row, *span) for row, span in enumerate(segments, 1)])
        connection.executemany("INSERT INTO changes (segment, appliance, running, wall, audio_t, kind) VALUES (?, ?, ?, ?, ?, ?)",
                               [(segment, appliance, int(running), wall, wall - segments[segment - 1][0], kind)
                                for (segment, appliance, running, wall), kind in zip(changes, _kinds(changes))])
    connection.close()


def _kinds(changes: list[tuple[int, str, bool, float]]) -> list[str]:
    """Each row's kind as a monitor writes it: a segment's first row of an appliance says how it relates
    to that appliance's last row before (first, same, unseen); the others are changes."""
    kinds, last, opened = [], {}, set()
    for segment, appliance, running, _ in changes:
        if (segment, appliance) in opened:
            kinds.append("change")
        else:
            opened.add((segment, appliance))
            kinds.append("first" if appliance not in last else "same" if last[appliance] == running else "unseen")
        last[appliance] = running
    return kinds


@pytest.fixture(scope="module")
def year(tmp_path_factory):
    """A year of 2,000 segments (a minute's gap between them), the fridge cycling every 20 minutes
    and the AC every 4 hours: (path, the moment it ends)."""
    path, end = tmp_path_factory.mktemp("year") / "history.sqlite", time.time()
    start, span = end - YEAR, YEAR / SEGMENTS
    History(path, clock=lambda: end).close()
    segments, changes = [], []
    for row in range(1, SEGMENTS + 1):
        started, ended = start + (row - 1) * span, start + row * span - 60
        segments.append((started, ended))
        for appliance, period in (("fridge", FRIDGE_PERIOD), ("ac", AC_PERIOD)):
            half = period / 2
            wall = started
            while wall <= ended:
                changes.append((row, appliance, (wall - start) // half % 2 == 0, wall))
                wall = start + ((wall - start) // half + 1) * half
    _write_rows(path, segments, changes)
    return path, end


def _timed(read):
    began = time.perf_counter()
    result = read()
    return result, time.perf_counter() - began


def test_page_and_metrics_reads_stay_fast_on_a_year(year):
    path, end = year
    history = History(path, clock=lambda: end)
    try:
        with history.reading() as connection:
            assert connection.execute("SELECT COUNT(*) FROM segments").fetchone()[0] == SEGMENTS
            stats, stats_sec = _timed(lambda: household_stats(connection, end, SEED.names, {"fridge": 150.0}))
            found, found_sec = _timed(lambda: stored_appliances(connection))
            day, day_sec = _timed(lambda: intervals(connection, end - DAY, end))
            table, table_sec = _timed(lambda: daily_table(connection, 7, end, {}))
            for since, until in [(end - 3600, end), (end - DAY, end), (midnight(end), end), (end - 7 * DAY, end - 6 * DAY)]:
                assert intervals(connection, since, until) == intervals_by_segment(connection, since, until)
    finally:
        history.close()
    assert max(stats_sec, day_sec, table_sec, found_sec) < BOUND_SEC, (stats_sec, day_sec, table_sec, found_sec)
    assert found == ["fridge", "ac"], "in the order they first appear"
    fridge = stats["fridge"]
    assert fridge.duty_24h == pytest.approx(0.5, abs=0.02) and fridge.longest_cycle_24h_sec == FRIDGE_PERIOD / 2
    assert {i.appliance for i in day} == set(SEED.names) and len(table) == 7 * len(SEED.names)


def test_a_reader_holding_a_snapshot_never_holds_up_the_hop(year, tmp_path):
    """A reader keeps its read transaction open while the monitor writes 20 hops: none of them waits."""
    path = tmp_path / "history.sqlite"
    path.write_bytes(year[0].read_bytes())
    clock = Clock(year[1])
    history = History(path, clock=clock)
    holding, written, seen = threading.Event(), threading.Event(), []

    def reader():
        with history.reading() as connection:
            seen.append(connection.execute("SELECT MAX(ended) FROM segments").fetchone()[0])
            holding.set()
            written.wait(10)
            seen.append(connection.execute("SELECT MAX(ended) FROM segments").fetchone()[0])  # its snapshot still
        with history.reading() as connection:
            seen.append(connection.execute("SELECT MAX(ended) FROM segments").fetchone()[0])

    thread = threading.Thread(target=reader)
    thread.start()
    assert holding.wait(10)
    latencies = []
    for step in range(20):
        clock.now += 1.5
        latencies.append(_timed(lambda: history(line_at(step * 1.5)))[1])
    written.set()
    thread.join(10)
    history.close()
    assert max(latencies) < BOUND_SEC, latencies
    assert seen == [year[1] - 60, year[1] - 60, pytest.approx(year[1] + 30)], "a snapshot, then the new hops"


def test_hops_keep_their_time_while_readers_hammer(year, tmp_path):
    """Page- and metrics-like reads in a loop beside the monitor: each hop is written promptly."""
    path = tmp_path / "history.sqlite"
    path.write_bytes(year[0].read_bytes())
    clock = Clock(year[1])
    history = History(path, clock=clock)
    stop, reads = threading.Event(), []

    def hammer():
        while not stop.is_set():
            now = clock.now
            with history.reading() as connection:
                household_stats(connection, now, SEED.names, {})
                intervals(connection, now - DAY, now)
                daily_table(connection, 7, now, {})
            reads.append(now)

    thread = threading.Thread(target=hammer)
    thread.start()
    latencies = []
    try:
        for step in range(100):
            clock.now += 1.5
            latencies.append(_timed(lambda: history(line_at(step * 1.5)))[1])
            time.sleep(0.005)
    finally:
        stop.set()
        thread.join(10)
        history.close()
    assert len(reads) >= 5, "the readers ran meanwhile"
    assert max(latencies) < BOUND_SEC and statistics.median(latencies) < 0.05, (max(latencies), statistics.median(latencies))


def test_window_reading_agrees_with_the_segment_by_segment_reading(tmp_path):
    """Random segments and changes (ties, changes on a window's edge, segments around it)."""
    rng = random.Random(7)
    path = tmp_path / "history.sqlite"
    History(path, clock=lambda: 0.0).close()
    segments, changes, wall = [], [], 0.0
    for row in range(1, 41):
        started = wall + rng.choice([0.0, 5.0, 300.0])
        ended = started + rng.choice([0.0, 10.0, 600.0, 7200.0])
        segments.append((started, ended))
        for appliance in SEED.names:
            walls = sorted([started] + [round(rng.uniform(started, ended)) for _ in range(rng.randrange(6))])
            changes += [(row, appliance, rng.random() < 0.5, w) for w in walls]
        wall = ended
    _write_rows(path, segments, changes)
    edges = [w for _, _, _, w in changes] + [s for span in segments for s in span]
    history = History(path, clock=lambda: wall)
    with history.reading() as connection:
        for _ in range(300):
            since = rng.choice(edges) if rng.random() < 0.5 else rng.uniform(-100, wall + 100)
            until = since + rng.choice([0.0, 10.0, 3600.0, DAY])
            ours, theirs = intervals(connection, since, until), intervals_by_segment(connection, since, until)
            assert sorted(map(dataclasses.astuple, ours)) == sorted(map(dataclasses.astuple, theirs)), (since, until)
    history.close()
