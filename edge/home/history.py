"""What the states mean for the home: a SQLite history of each appliance, its statistics, alarms.

The database (stdlib sqlite3, WAL, synchronous=FULL) holds:
- ``segments``: spans of wall clock the monitor heard and decided (its first and last hop), so
  "no data" is never counted as "off": a stop, a restart, a hop that decided nothing (no signal,
  no audio), or a hop arriving later than :func:`gap_sec` after the previous one ends a segment;
- ``changes``: every change of each appliance's debounced detector (and its state at the first
  decision of a segment), with wall-clock and audio time, and its `kind` (:data:`KINDS`). An
  appliance is a name in a row, so a history holds any appliances: those the bundle of each run
  decided. One added later has rows only from then on, and no statistics for the time before;
- ``gaps``: the spans whose hops decided nothing, with why (``no-signal``, ``no-audio``); time in
  no segment and no gap is time the monitor did not run.

The rule for gaps: time not heard counts neither as running nor as off, and a run heard on both
sides of a gap is one run (one cycle; its length is the time heard of it). So a camera that drops
out, a muted microphone or a restart never restarts the clock of a run-time alarm, and a fridge
that starts during a gap counts one cycle, of unknown start.
A segment is written at its first decision, so a monitor that never hears anything writes none.
Each hop is one transaction: a SIGKILL or a power cut loses at most that hop and never corrupts
the file. A hop that cannot be written (a full disk) is kept in memory and written with the next
one, with its own times. One monitor per database: a second one is refused (an advisory lock on
the database file itself, so another name for it, a symbolic or hard link, finds it too; freed by
the kernel when the holder dies; the holder's pid and host are in the database). Readers use
connections of their own (:func:`reading`) and never wait on, or hold up, the monitor's writes.
Statistics and alarms are computed from the rows, so they survive restarts.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import errno
import fcntl
import itertools
import logging
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Callable, Iterator

from edge.core.files import identity
from edge.engine.hop import HopLine

log = logging.getLogger("humwatch.history")

SCHEMA_VERSION = 2
SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS segments (id INTEGER PRIMARY KEY, started REAL NOT NULL, ended REAL NOT NULL);
CREATE TABLE IF NOT EXISTS changes (
    id INTEGER PRIMARY KEY, segment INTEGER NOT NULL REFERENCES segments(id), appliance TEXT NOT NULL,
    running INTEGER NOT NULL, wall REAL NOT NULL, audio_t REAL NOT NULL, kind TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS changes_by_time ON changes (appliance, wall);
CREATE INDEX IF NOT EXISTS changes_by_segment ON changes (segment, appliance, wall);
CREATE TABLE IF NOT EXISTS gaps (id INTEGER PRIMARY KEY, started REAL NOT NULL, ended REAL NOT NULL, reason TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS gaps_by_time ON gaps (ended);
"""
# A change row's kind: an appliance's first decision in the history; a change heard in a segment;
# the first decision of a segment that agrees with the last one before the gap (the run goes on);
# or one that does not (the change happened unheard, during the gap).
FIRST, CHANGE, SAME, UNSEEN = "first", "change", "same", "unseen"
KINDS = (FIRST, CHANGE, SAME, UNSEEN)
# Version 1 had no kinds and no gaps: each segment's first row is classed by the row before it.
_MIGRATE_FROM_1 = """
ALTER TABLE changes ADD COLUMN kind TEXT NOT NULL DEFAULT 'change';
UPDATE changes SET kind = COALESCE(
    (SELECT CASE WHEN earlier.running = changes.running THEN 'same' ELSE 'unseen' END FROM changes earlier
     WHERE earlier.appliance = changes.appliance AND earlier.segment < changes.segment
     ORDER BY earlier.wall DESC, earlier.id DESC LIMIT 1), 'first')
WHERE id = (SELECT opening.id FROM changes opening WHERE opening.segment = changes.segment
            AND opening.appliance = changes.appliance ORDER BY opening.wall, opening.id LIMIT 1);
"""
DAY = 86_400.0
GAP_MIN_SEC = 10.0  # a hop later than this (or GAP_HOPS hops) after the previous one starts a new segment
GAP_HOPS = 3
_HELD: weakref.WeakValueDictionary = weakref.WeakValueDictionary()  # identity of a database -> its History here


class HistoryError(OSError):
    """A history database that cannot be used or written; the message names it, the cause and the fix
    (a write that failed carries the errno: ENOSPC for a full disk)."""


def _this_process() -> str:
    return f"pid {os.getpid()} on {os.uname().nodename}"


def gap_sec(hop_sec: float | None) -> float:
    """The longest wall-clock time between two hops of one segment; more is time without audio."""
    return max(GAP_HOPS * (hop_sec or 0.0), GAP_MIN_SEC)


def _disk_full(error: Exception) -> bool:
    return getattr(error, "sqlite_errorname", None) == "SQLITE_FULL" or getattr(error, "errno", None) == errno.ENOSPC


def cause(error: Exception) -> str:
    """What went wrong, in words: 'disk full' for no space, else the error's own text."""
    return "disk full" if _disk_full(error) else str(error) or type(error).__name__


@dataclasses.dataclass(frozen=True)
class Interval:
    """One appliance, in one state, from `start` to `end` (wall clock), all of it observed."""

    appliance: str
    running: bool
    start: float
    end: float
    begins_with_change: bool  # a change heard at its start (not: the monitor began, or a gap ended)
    ends_with_change: bool  # a change heard at its end
    starts_run: bool = False  # a new run (or pause) was first heard at its start: a cycle (its start may be unheard)
    continues_run: bool = False  # it goes on with the run heard before a gap


def connect(path: Path, read_only: bool = False) -> sqlite3.Connection:
    """The monitor's connection (WAL, every commit synced), or a read-only one of the caller's own."""
    if read_only:
        return sqlite3.connect(f"{Path(path).absolute().as_uri()}?mode=ro", uri=True, isolation_level=None)
    connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)  # History serialises its use
    try:
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=FULL")
    except BaseException:  # (a full disk): no file left open
        connection.close()
        raise
    return connection


@contextlib.contextmanager
def reading(path: Path) -> Iterator[sqlite3.Connection]:
    """A read-only connection of its own in one read transaction (a consistent snapshot), closed
    after the block. Under WAL it neither waits for the monitor's writes nor holds them up."""
    connection = connect(path, read_only=True)
    try:
        connection.execute("BEGIN")
        yield connection
    finally:
        connection.close()


# The appliances a history holds, each read from the index by one step: (SELECT MIN(appliance) ...
# WHERE appliance > the last one), not a scan of every row.
_STORED = """
WITH RECURSIVE names(name) AS (
    SELECT MIN(appliance) FROM changes
    UNION ALL SELECT (SELECT MIN(appliance) FROM changes WHERE appliance > name) FROM names WHERE name IS NOT NULL)
SELECT name FROM names WHERE name IS NOT NULL
"""


def stored_appliances(connection: sqlite3.Connection) -> list[str]:
    """Every appliance the history holds rows of, in the order they first appear in it (in one hop:
    the order the bundle lists them)."""
    names = [row[0] for row in connection.execute(_STORED)]
    first = "SELECT wall, id FROM changes WHERE appliance = ? ORDER BY wall, id LIMIT 1"
    return sorted(names, key=lambda name: connection.execute(first, (name,)).fetchone())


# Per segment and appliance in the window: its last change before `since` (the state at `since`),
# then every change inside the window; both read through an index, with the segment's end.
_CHANGES_IN_WINDOW = """
WITH overlapping(id, ended) AS (SELECT id, ended FROM segments WHERE ended >= :since AND started <= :until),
     appliances(name) AS (VALUES {names})
SELECT c.segment, c.appliance, c.running, c.wall, c.id, s.ended, c.kind FROM overlapping s JOIN appliances a
    JOIN changes c ON c.id = (SELECT id FROM changes WHERE segment = s.id AND appliance = a.name AND wall < :since
                              ORDER BY wall DESC, id DESC LIMIT 1)
UNION ALL
SELECT c.segment, c.appliance, c.running, c.wall, c.id, s.ended, c.kind FROM overlapping s JOIN appliances a
    JOIN changes c ON c.segment = s.id AND c.appliance = a.name AND c.wall >= :since AND c.wall <= :until
ORDER BY 1, 2, 4, 5
"""


def intervals(connection: sqlite3.Connection, since: float, until: float,
              appliances: Sequence[str] | None = None) -> list[Interval]:
    """Every observed interval of these appliances (default: every one the history holds) overlapping
    [since, until], clipped to it (one query)."""
    names = stored_appliances(connection) if appliances is None else list(appliances)
    if not names:
        return []
    found = []
    query = _CHANGES_IN_WINDOW.format(names=", ".join(f"(:a{index})" for index in range(len(names))))
    parameters = {"since": since, "until": until, **{f"a{index}": name for index, name in enumerate(names)}}
    rows = connection.execute(query, parameters).fetchall()
    for (_, appliance), group in itertools.groupby(rows, key=lambda row: row[:2]):
        group = list(group)
        for index, (_, _, running, wall, _, ended, kind) in enumerate(group):
            end = group[index + 1][3] if index + 1 < len(group) else ended
            start, stop = max(wall, since), min(end, until)
            inside = wall >= since  # a row before `since` only gives the state at `since`
            if stop >= start:  # (a run that starts at this very hop counts as a cycle already)
                found.append(Interval(appliance, bool(running), start, stop,
                                      begins_with_change=inside and kind == CHANGE,
                                      ends_with_change=index + 1 < len(group) and end <= until,
                                      starts_run=inside and kind in (FIRST, CHANGE, UNSEEN),
                                      continues_run=inside and kind == SAME))
    return found


def runs(found: list[Interval], appliance: str) -> list[list[Interval]]:
    """One appliance's intervals, in time order, joined into runs (and pauses): an interval that goes
    on with the run before a gap joins it."""
    joined: list[list[Interval]] = []
    for interval in sorted((i for i in found if i.appliance == appliance), key=lambda i: i.start):
        if joined and interval.continues_run and joined[-1][-1].running == interval.running:
            joined[-1].append(interval)
        else:
            joined.append([interval])
    return joined


def gaps(connection: sqlite3.Connection, since: float, until: float) -> list[tuple[float, float, str]]:
    """(start, end, reason) of every span overlapping [since, until] whose hops decided nothing, clipped."""
    rows = connection.execute("SELECT started, ended, reason FROM gaps WHERE ended >= ? AND started <= ? ORDER BY started",
                              (since, until))
    return [(max(start, since), min(end, until), reason) for start, end, reason in rows]


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
    """(running, seconds heard of the current run or pause, across gaps) as of the latest segment;
    (None, 0) when the latest segment has not decided the appliance."""
    latest = connection.execute(
        "SELECT 1 FROM changes c WHERE c.appliance = ? AND c.segment = (SELECT MAX(id) FROM segments) LIMIT 1",
        (appliance,)).fetchone()
    return last_run(connection, appliance) if latest else (None, 0.0)


def last_run(connection: sqlite3.Connection, appliance: str) -> tuple[bool | None, float]:
    """(running, seconds heard) of the appliance's last run or pause in the history, across gaps;
    (None, 0) when it has no rows."""
    last = connection.execute("SELECT running FROM changes WHERE appliance = ? ORDER BY wall DESC, id DESC LIMIT 1",
                              (appliance,)).fetchone()
    if last is None:
        return None, 0.0
    began = connection.execute(  # where the run began: the latest row that does not go on with one (or the oldest kept)
        "SELECT wall, segment FROM changes WHERE appliance = ? AND kind != ? ORDER BY wall DESC, id DESC LIMIT 1",
        (appliance, SAME)).fetchone() or connection.execute(
        "SELECT wall, segment FROM changes WHERE appliance = ? ORDER BY wall, id LIMIT 1", (appliance,)).fetchone()
    heard = connection.execute(
        "SELECT TOTAL(s.ended - MAX(s.started, :wall)) FROM segments s WHERE s.id >= :segment AND EXISTS "
        "(SELECT 1 FROM changes c WHERE c.segment = s.id AND c.appliance = :appliance)",
        {"wall": began[0], "segment": began[1], "appliance": appliance}).fetchone()[0]
    return bool(last[0]), heard


def household_stats(connection: sqlite3.Connection, now: float, appliances: Sequence[str],
                    watts: dict[str, float]) -> dict[str, ApplianceStats]:
    """These appliances' statistics at `now`, from the rows alone (each time window read once)."""
    windows = (intervals(connection, now - 3600, now, appliances), intervals(connection, now - DAY, now, appliances),
               intervals(connection, midnight(now), now, appliances))
    return {appliance: _appliance_stats(connection, appliance, *windows, watts.get(appliance))
            for appliance in appliances}


def _appliance_stats(connection: sqlite3.Connection, appliance: str, hour: list[Interval], day: list[Interval],
                     today: list[Interval], watts: float | None) -> ApplianceStats:
    run_1h, seen_1h = _runtime(hour, appliance)
    run_24h, seen_24h = _runtime(day, appliance)
    run_today, _ = _runtime(today, appliance)
    complete = [sum(i.end - i.start for i in run) for run in runs(day, appliance)
                if run[0].running and run[0].begins_with_change and run[-1].ends_with_change]
    running, current_sec = current(connection, appliance)
    return ApplianceStats(
        appliance=appliance, running=running, current_sec=current_sec,
        runtime_1h_sec=run_1h, duty_1h=run_1h / seen_1h if seen_1h else None,
        runtime_24h_sec=run_24h, duty_24h=run_24h / seen_24h if seen_24h else None,
        runtime_today_sec=run_today,
        cycles_today=sum(1 for i in today if i.appliance == appliance and i.running and i.starts_run),
        mean_cycle_24h_sec=sum(complete) / len(complete) if complete else None,
        longest_cycle_24h_sec=max(complete) if complete else None,
        energy_today_kwh=watts * run_today / 3.6e6 if watts is not None else None,
    )


def daily_table(connection: sqlite3.Connection, days: int, now: float, watts: dict[str, float]) -> list[dict]:
    """Per day (newest first) and appliance the history holds: the hours it was observed, and for a
    day it was, run-time, cycles, longest run, energy (None where it was not: no data is not "off")."""
    appliances = stored_appliances(connection)
    rows = []
    end = now
    start = midnight(now)
    for _ in range(days):
        found = intervals(connection, start, end, appliances)
        for appliance in appliances:
            mine = [i for i in found if i.appliance == appliance]
            run, seen = _runtime(found, appliance)
            lengths = [sum(i.end - i.start for i in run) for run in runs(mine, appliance) if run[0].running]
            row = {"day": dt.date.fromtimestamp(start + 1).isoformat(), "appliance": appliance,
                   "observed_h": round(seen / 3600, 3), "runtime_h": None, "cycles": None, "longest_run_min": None,
                   "energy_kwh": None}
            if mine:
                row.update(runtime_h=round(run / 3600, 3), cycles=sum(1 for i in mine if i.running and i.starts_run),
                           longest_run_min=round(max(lengths) / 60, 1) if lengths else None,
                           energy_kwh=round(watts[appliance] * run / 3.6e6, 3) if appliance in watts else None)
            rows.append(row)
        end, start = start, midnight(start - 1)
    return rows


@dataclasses.dataclass
class _Segment:
    """A segment being recorded: its row once written, its span, the states decided in it
    (appliance -> (running, since when, seconds of that run heard before this segment)) and the
    changes not yet written. A hop that decided nothing closes it."""

    started: float
    ended: float
    row: int | None = None
    states: dict[str, tuple[bool, float, float]] = dataclasses.field(default_factory=dict)
    unwritten: list[tuple[str, bool, float, float, str]] = dataclasses.field(default_factory=list)  # appliance, running, wall, t, kind
    closed: bool = False

    def runs(self) -> dict[str, tuple[bool, float]]:
        """appliance -> (running, seconds heard of its current run) at the segment's end."""
        return {name: (running, carried + self.ended - since) for name, (running, since, carried) in self.states.items()}


@dataclasses.dataclass
class _Gap:
    """A span whose hops decided nothing, for one reason (the status: no-signal, no-audio)."""

    started: float
    ended: float
    reason: str
    row: int | None = None
    closed: bool = False


class History:
    """A live-line sink that records the debounced detectors of every appliance its lines decide; one
    per database (locked). `appliances`: those whose state and statistics it gives (the monitor's:
    its bundle's), before their first decision too; any other a line decides is added.

    A hop that cannot be written raises HistoryError (path and cause) and stays in memory, with
    its times, until a later hop writes it: the file never holds a state the monitor did not decide."""

    def __init__(self, path: Path, retention_days: float = 400, clock: Callable[[], float] = time.time,
                 appliances: Sequence[str] = ()) -> None:
        self.path = Path(path)
        self.appliances = tuple(appliances)
        self.clock = clock
        self.retention_days = retention_days
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock, self._identity = self._claim()
        self.connection: sqlite3.Connection | None = None
        try:
            self.connection = connect(self.path)
            self._open()
            self.connection.execute("INSERT OR REPLACE INTO meta VALUES ('holder', ?)", (_this_process(),))
            self.connection.execute("PRAGMA wal_checkpoint(PASSIVE)")  # into the file itself, for _holder
        except BaseException as error:
            if self.connection is not None:
                self.connection.close()
            self._release()
            if isinstance(error, (sqlite3.Error, OSError)) and not isinstance(error, HistoryError):
                raise HistoryError(self._start_error(error)) from None
            raise
        self._writing = threading.Lock()  # the monitor's hops and close()
        self._segments: list[_Segment] = []  # the open segment last, after any written only in part
        self._gaps: list[_Gap] = []  # likewise
        self._behind = False  # the last write failed: self._segments holds what it could not write
        with self.reading() as connection:  # each appliance's last run before this monitor: a run may go on
            self._before = {name: run for name in stored_appliances(connection)
                            if (run := last_run(connection, name))[0] is not None}

    def _claim(self):
        """The database file, open (created empty when new: SQLite takes that for a new database)
        and locked, and what it is (edge.core.files.identity); a HistoryError naming the holder when
        a monitor has it. The lock is on the file, not on a name. The handle is never opened on a
        file this process holds already, and is closed only after SQLite's connection: closing any
        handle on a file drops the process's POSIX locks on it, SQLite's too."""
        if identity(self.path) in _HELD:
            raise HistoryError(self._in_use(_this_process()))
        try:
            handle = open(self.path, "a+b", buffering=0)  # (nothing to flush on close)
        except OSError as error:
            raise HistoryError(self._start_error(error)) from None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            handle.close()
            raise HistoryError(self._in_use(self._holder()) if isinstance(error, BlockingIOError)
                               else self._start_error(error)) from None
        held = identity(self.path)
        _HELD[held] = self
        return handle, held

    def _in_use(self, holder: str) -> str:
        return (f"--history {self.path}: already in use by a running monitor ({holder}); "
                "give each monitor its own database")

    def _holder(self) -> str:
        """Who holds the database (of another process), as its holder wrote it there. Read as
        immutable: no -wal or -shm is opened, or made, beside this name of the file."""
        try:
            connection = sqlite3.connect(f"{self.path.absolute().as_uri()}?mode=ro&immutable=1", uri=True)
            try:
                row = connection.execute("SELECT value FROM meta WHERE key = 'holder'").fetchone()
            finally:
                connection.close()
        except sqlite3.Error:
            row = None
        return row[0] if row else "another process"

    def _release(self) -> None:
        _HELD.pop(self._identity, None)
        self._lock.close()

    def _open(self) -> None:
        """Check the file, create or check the schema, drop rows past retention."""
        problems = [row[0] for row in self.connection.execute("PRAGMA quick_check")]
        if problems != ["ok"]:
            raise HistoryError(self._corrupt("; ".join(problems[:3])))
        self.connection.executescript(SCHEMA)
        version = self.connection.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        if version is None:
            self.connection.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        elif version[0] == "1":
            self.connection.executescript(f"BEGIN IMMEDIATE; {_MIGRATE_FROM_1} "
                                          f"UPDATE meta SET value = '{SCHEMA_VERSION}' WHERE key = 'schema_version'; COMMIT;")
        elif int(version[0]) != SCHEMA_VERSION:
            raise HistoryError(f"--history {self.path}: schema version {version[0]}, this humwatch writes "
                               f"{SCHEMA_VERSION}; move the old file aside")
        cutoff = self.clock() - self.retention_days * DAY
        self.connection.execute("BEGIN IMMEDIATE")
        self.connection.execute("DELETE FROM changes WHERE segment IN (SELECT id FROM segments WHERE ended < ?)", (cutoff,))
        # ... and segments without a decision (older humwatch wrote one at each start, even with a dead microphone)
        self.connection.execute("DELETE FROM segments WHERE ended < ? OR id NOT IN (SELECT segment FROM changes)", (cutoff,))
        self.connection.execute("DELETE FROM gaps WHERE ended < ?", (cutoff,))
        self.connection.execute("COMMIT")

    def _corrupt(self, detail: str) -> str:
        return (f"--history {self.path}: not a readable history database ({detail}); move it aside with any "
                f"{self.path.name}-wal and -shm beside it (mv {self.path} {self.path}.broken) and start again: "
                "the monitor begins a new history")

    def _start_error(self, error: Exception) -> str:
        if getattr(error, "sqlite_errorname", None) in ("SQLITE_NOTADB", "SQLITE_CORRUPT"):
            return self._corrupt(str(error))
        if cause(error) == "disk full":
            return (f"--history {self.path}: disk full ({error}); free space on {self.path.parent} "
                    "or give --history a file on another disk")
        return f"--history {self.path}: cannot open it: {cause(error)}"

    def reading(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        """A read-only snapshot of the history (see :func:`reading`): safe from any thread, never
        in the monitor's way. It shows what is written; a full disk holds back the newest hops."""
        return reading(self.path)

    def __call__(self, line: HopLine) -> None:
        now = self.clock()
        with self._writing:
            if line.decided:
                self._decided(line, now)
            else:
                self._undecided(line, now)
            try:
                self._write()
            except (sqlite3.Error, OSError) as error:
                code = errno.ENOSPC if _disk_full(error) else getattr(error, "errno", None) or errno.EIO
                raise HistoryError(code, f"--history {self.path}: {cause(error)}; the changes decided meanwhile are "
                                         "kept in memory and written, with their times, once it can") from None

    def _decided(self, line: HopLine, now: float) -> None:
        """Record each appliance's state: a change, or at a segment's start how it relates to the run
        heard before the gap (the same run going on, or one that changed unheard)."""
        segment = self._segments[-1] if self._segments else None
        if segment is None or segment.closed or not 0 <= now - segment.ended <= gap_sec(line.hop_sec):
            if segment is not None:
                self._before.update(segment.runs())
            segment = _Segment(started=now, ended=now)  # the first decision, or one after time without it
            self._segments.append(segment)
        if self._gaps:
            self._gaps[-1].closed = True
        if not set(line.running) <= set(self.appliances):
            self.appliances += tuple(name for name in line.running if name not in self.appliances)
        for appliance, running in line.running.items():
            state = segment.states.get(appliance)
            if state is not None and state[0] == running:
                continue
            before = self._before.get(appliance)
            if state is not None:
                kind, carried = CHANGE, 0.0
            elif before is None:
                kind, carried = FIRST, 0.0
            else:
                kind, carried = (SAME, before[1]) if before[0] == running else (UNSEEN, 0.0)
            segment.states[appliance] = (running, now, carried)
            segment.unwritten.append((appliance, running, now, line.t, kind))
        segment.ended = now

    def _undecided(self, line: HopLine, now: float) -> None:
        """A hop that decided nothing: the segment ends, and a gap (with its reason) begins or goes on."""
        if self._segments:
            self._segments[-1].closed = True
        gap = self._gaps[-1] if self._gaps else None
        if gap is None or gap.closed or gap.reason != line.status or not 0 <= now - gap.ended <= gap_sec(line.hop_sec):
            self._gaps.append(_Gap(started=now, ended=now, reason=line.status))
        else:
            gap.ended = now

    def _write(self) -> None:
        """One transaction with everything not yet written; on failure all of it stays for the next hop."""
        self._behind = True
        with contextlib.closing(self.connection.cursor()) as cursor:  # a failed statement kept alive would keep the file open
            try:
                cursor.execute("BEGIN IMMEDIATE")
                rows = []
                for segment in self._segments:
                    if segment.row is None:
                        rows.append(cursor.execute("INSERT INTO segments (started, ended) VALUES (?, ?)",
                                                   (segment.started, segment.ended)).lastrowid)
                    else:
                        rows.append(segment.row)
                        cursor.execute("UPDATE segments SET ended = ? WHERE id = ?", (segment.ended, segment.row))
                    cursor.executemany("INSERT INTO changes (segment, appliance, running, wall, audio_t, kind) "
                                       "VALUES (?, ?, ?, ?, ?, ?)",
                                       [(rows[-1], a, int(running), wall, t, kind)
                                        for a, running, wall, t, kind in segment.unwritten])
                gap_rows = []
                for gap in self._gaps:
                    if gap.row is None:
                        gap_rows.append(cursor.execute("INSERT INTO gaps (started, ended, reason) VALUES (?, ?, ?)",
                                                       (gap.started, gap.ended, gap.reason)).lastrowid)
                    else:
                        gap_rows.append(gap.row)
                        cursor.execute("UPDATE gaps SET ended = ? WHERE id = ?", (gap.ended, gap.row))
                cursor.execute("COMMIT")
            except BaseException:
                if self.connection.in_transaction:
                    self.connection.execute("ROLLBACK")
                raise
        for segment, row in zip(self._segments, rows):
            segment.row = row
            segment.unwritten.clear()
        for gap, row in zip(self._gaps, gap_rows):
            gap.row = row
        del self._segments[:-1]
        del self._gaps[:-1]
        self._behind = False

    def current(self) -> dict[str, tuple[bool | None, float]]:
        """Each appliance's decided state and for how long its run (or pause) has been heard, across
        gaps ((None, 0) before a decision), from memory: it counts hops a full disk held back. While
        the hops decide nothing the clock stands still."""
        runs = self._segments[-1].runs() if self._segments else {}
        return {appliance: runs.get(appliance, (None, 0.0)) for appliance in self.appliances}

    def stats(self, watts: dict[str, float] | None = None) -> dict[str, ApplianceStats]:
        """Each of its appliances' statistics now."""
        with self.reading() as connection:
            return household_stats(connection, self.clock(), self.appliances, watts or {})

    def close(self) -> None:
        """Write what a full disk held back if it can (else say what is lost), and free the file."""
        with self._writing:
            if self._behind:
                try:
                    self._write()
                except (sqlite3.Error, OSError) as error:
                    lost = sum(len(segment.unwritten) for segment in self._segments)
                    log.warning("--history %s: the last hops could not be written before closing (%s); "
                                "%d change(s) and the time since the last write are missing", self.path, cause(error), lost)
            self.connection.close()
        self._release()
