"""What the states mean for the home: a SQLite history of each appliance, its statistics, alarms.

The database (stdlib sqlite3, WAL, synchronous=FULL) holds:
- ``segments``: when the monitor was running (start and last hop, wall clock), so "no data" is
  never counted as "off";
- ``changes``: every change of each appliance's debounced detector (and its state at the first
  decision of a segment), with wall-clock and audio time.
Each hop is one transaction: a SIGKILL or a power cut loses at most that hop and never corrupts
the file. One monitor per database: a second one is refused (an advisory lock, freed by the
kernel when the holder dies). Statistics and alarms are computed from the rows, so they survive
restarts.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import fcntl
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

from edge.core.defaults import LABELS
from edge.monitor.hop import HopLine

SCHEMA_VERSION = 1
SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS segments (id INTEGER PRIMARY KEY, started REAL NOT NULL, ended REAL NOT NULL);
CREATE TABLE IF NOT EXISTS changes (
    id INTEGER PRIMARY KEY, segment INTEGER NOT NULL REFERENCES segments(id), appliance TEXT NOT NULL,
    running INTEGER NOT NULL, wall REAL NOT NULL, audio_t REAL NOT NULL);
CREATE INDEX IF NOT EXISTS changes_by_time ON changes (appliance, wall);
"""
DAY = 86_400.0


class HistoryError(RuntimeError):
    """A history database that cannot be used; the message names it and the fix."""


@dataclasses.dataclass(frozen=True)
class Interval:
    """One appliance, in one state, from `start` to `end` (wall clock), all of it observed."""

    appliance: str
    running: bool
    start: float
    end: float
    begins_with_change: bool  # False when it began with the monitor (the state was already on or off)
    ends_with_change: bool


def connect(path: Path, read_only: bool = False) -> sqlite3.Connection:
    if read_only:
        source = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        copy = sqlite3.connect(":memory:")
        source.backup(copy)  # a consistent snapshot, even while a monitor writes
        source.close()
        return copy
    connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)  # History serialises its use
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=FULL")
    return connection


def intervals(connection: sqlite3.Connection, since: float, until: float) -> list[Interval]:
    """Every observed interval of each appliance overlapping [since, until], clipped to it."""
    found = []
    segments = connection.execute("SELECT id, started, ended FROM segments WHERE ended >= ? AND started <= ? ORDER BY id",
                                  (since, until)).fetchall()
    for segment, started, ended in segments:
        for appliance in LABELS:
            rows = connection.execute("SELECT running, wall FROM changes WHERE segment = ? AND appliance = ? ORDER BY wall, id",
                                      (segment, appliance)).fetchall()
            for index, (running, wall) in enumerate(rows):
                end = rows[index + 1][1] if index + 1 < len(rows) else ended
                start, stop = max(wall, since), min(end, until)
                if stop >= start:  # (a run that starts at this very hop counts as a cycle already)
                    found.append(Interval(appliance, bool(running), start, stop,
                                          begins_with_change=index > 0 and wall >= since,  # not one before `since`
                                          ends_with_change=index + 1 < len(rows) and end <= until))
    return found


def midnight(wall: float) -> float:
    """Local midnight before `wall`."""
    day = dt.datetime.fromtimestamp(wall).date()
    return dt.datetime.combine(day, dt.time()).timestamp()


@dataclasses.dataclass(frozen=True)
class ApplianceStats:
    appliance: str
    running: bool | None  # None: no decision yet in this segment
    current_sec: float  # how long the current run (or pause) has been observed
    runtime_1h_sec: float
    duty_1h: float | None  # share of the observed time it ran (None: nothing observed)
    runtime_24h_sec: float
    duty_24h: float | None
    runtime_today_sec: float
    cycles_today: int
    mean_cycle_24h_sec: float | None  # complete runs (start and end observed) that ended in the last 24 h
    longest_cycle_24h_sec: float | None
    energy_today_kwh: float | None  # with --watts


def _runtime(found: list[Interval], appliance: str) -> tuple[float, float]:
    mine = [i for i in found if i.appliance == appliance]
    return sum(i.end - i.start for i in mine if i.running), sum(i.end - i.start for i in mine)


def current(connection: sqlite3.Connection, appliance: str) -> tuple[bool | None, float]:
    """(running, seconds observed in that state) in the latest segment; (None, 0) before a decision."""
    row = connection.execute(
        "SELECT c.running, c.wall, s.ended FROM changes c JOIN segments s ON s.id = c.segment "
        "WHERE c.appliance = ? AND c.segment = (SELECT MAX(id) FROM segments) ORDER BY c.wall DESC, c.id DESC LIMIT 1",
        (appliance,)).fetchone()
    return (None, 0.0) if row is None else (bool(row[0]), row[2] - row[1])


def household_stats(connection: sqlite3.Connection, now: float, watts: dict[str, float]) -> dict[str, ApplianceStats]:
    """Every appliance's statistics at `now`, from the rows alone (each time window read once)."""
    windows = (intervals(connection, now - 3600, now), intervals(connection, now - DAY, now),
               intervals(connection, midnight(now), now))
    return {appliance: _appliance_stats(connection, appliance, *windows, watts.get(appliance)) for appliance in LABELS}


def _appliance_stats(connection: sqlite3.Connection, appliance: str, hour: list[Interval], day: list[Interval],
                     today: list[Interval], watts: float | None) -> ApplianceStats:
    run_1h, seen_1h = _runtime(hour, appliance)
    run_24h, seen_24h = _runtime(day, appliance)
    run_today, _ = _runtime(today, appliance)
    complete = [i.end - i.start for i in day if i.appliance == appliance and i.running
                and i.begins_with_change and i.ends_with_change]
    running, current_sec = current(connection, appliance)
    return ApplianceStats(
        appliance=appliance, running=running, current_sec=current_sec,
        runtime_1h_sec=run_1h, duty_1h=run_1h / seen_1h if seen_1h else None,
        runtime_24h_sec=run_24h, duty_24h=run_24h / seen_24h if seen_24h else None,
        runtime_today_sec=run_today,
        cycles_today=sum(1 for i in today if i.appliance == appliance and i.running and i.begins_with_change),
        mean_cycle_24h_sec=sum(complete) / len(complete) if complete else None,
        longest_cycle_24h_sec=max(complete) if complete else None,
        energy_today_kwh=watts * run_today / 3.6e6 if watts is not None else None,
    )


def daily_table(connection: sqlite3.Connection, days: int, now: float, watts: dict[str, float]) -> list[dict]:
    """Per day (newest first) and appliance: run-time, cycles, longest run, energy."""
    rows = []
    end = now
    start = midnight(now)
    for _ in range(days):
        found = intervals(connection, start, end)
        for appliance in LABELS:
            mine = [i for i in found if i.appliance == appliance]
            run, seen = _runtime(found, appliance)
            runs = [i.end - i.start for i in mine if i.running]
            rows.append({
                "day": dt.date.fromtimestamp(start + 1).isoformat(), "appliance": appliance,
                "observed_h": round(seen / 3600, 3), "runtime_h": round(run / 3600, 3),
                "cycles": sum(1 for i in mine if i.running and i.begins_with_change),
                "longest_run_min": round(max(runs) / 60, 1) if runs else None,
                "energy_kwh": round(watts[appliance] * run / 3.6e6, 3) if appliance in watts else None,
            })
        end, start = start, midnight(start - 1)
    return rows


class History:
    """A live-line sink that records the debounced detectors; one per database (locked)."""

    def __init__(self, path: Path, retention_days: float = 400, clock: Callable[[], float] = time.time) -> None:
        self.path = Path(path)
        self.clock = clock
        self.retention_days = retention_days
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = open(self.path.with_name(self.path.name + ".lock"), "a+")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.seek(0)
            holder = self._lock.read().strip() or "another process"
            self._lock.close()
            raise HistoryError(f"--history {self.path}: already in use by a running monitor ({holder}); "
                               "give each monitor its own database") from None
        self._lock.seek(0)
        self._lock.truncate()
        self._lock.write(f"pid {os.getpid()} on {os.uname().nodename}")
        self._lock.flush()
        self.connection = connect(self.path)
        self._in_use = threading.RLock()  # the monitor writes, HTTP and MQTT threads read
        self.connection.executescript(SCHEMA)
        version = self.connection.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        if version is None:
            self.connection.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        elif int(version[0]) != SCHEMA_VERSION:
            raise HistoryError(f"--history {self.path}: schema version {version[0]}, this humwatch writes "
                               f"{SCHEMA_VERSION}; move the old file aside")
        self._prune()
        now = self.clock()
        self.segment = self.connection.execute("INSERT INTO segments (started, ended) VALUES (?, ?)", (now, now)).lastrowid
        self._running: dict[str, bool] = {}

    @contextlib.contextmanager
    def reading(self) -> Iterator[sqlite3.Connection]:
        """The connection, held by this thread until the block ends."""
        with self._in_use:
            yield self.connection

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Cursor]:
        with self._in_use:
            cursor = self.connection.cursor()
            cursor.execute("BEGIN IMMEDIATE")
            try:
                yield cursor
                cursor.execute("COMMIT")
            except BaseException:
                cursor.execute("ROLLBACK")
                raise

    def _prune(self) -> None:
        cutoff = self.clock() - self.retention_days * DAY
        with self._transaction() as cursor:
            cursor.execute("DELETE FROM changes WHERE segment IN (SELECT id FROM segments WHERE ended < ?)", (cutoff,))
            cursor.execute("DELETE FROM segments WHERE ended < ?", (cutoff,))

    def __call__(self, line: HopLine) -> None:
        now = self.clock()
        with self._transaction() as cursor:
            for appliance, running in (("ac", line.ac_running), ("fridge", line.fridge_running)):
                if self._running.get(appliance) != running:
                    cursor.execute("INSERT INTO changes (segment, appliance, running, wall, audio_t) VALUES (?, ?, ?, ?, ?)",
                                   (self.segment, appliance, int(running), now, line.t))
                    self._running[appliance] = running
            cursor.execute("UPDATE segments SET ended = ? WHERE id = ?", (now, self.segment))

    def stats(self, watts: dict[str, float] | None = None) -> dict[str, ApplianceStats]:
        with self.reading() as connection:
            return household_stats(connection, self.clock(), watts or {})

    def close(self) -> None:
        with self._in_use:
            self.connection.close()
        self._lock.close()
