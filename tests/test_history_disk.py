"""The history on a real disk that fills and frees again (a small tmpfs), and a corrupt file at start."""

import errno
import logging
import os
import sqlite3
import subprocess
import threading
import time
import types

import numpy as np
import pytest
from test_history import Clock, hop_line, line_at
from test_live import FakeSource

from edge.core.decision import DecisionConfig
from edge.core.window import WindowConfig
from edge.engine.detector import Detector
from edge.engine.hop import HopLine
from edge.home.alarms import Alarms
from edge.home.history import History, HistoryError
from edge.home.household import Household
from edge.monitor.live import LiveMonitor

HOP = 1.5


@pytest.fixture
def small_disk(tmp_path):
    """A real 4 MiB tmpfs, unmounted afterwards (mounting needs root, as CI has)."""
    if os.geteuid() != 0:
        pytest.skip("the full-disk tests mount a tmpfs, which needs root (CI runs them as root)")
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(disk)], check=True)
    yield disk
    if subprocess.run(["umount", str(disk)]).returncode != 0:
        subprocess.run(["umount", "--lazy", str(disk)], check=True)
        pytest.fail(f"{disk}: a file on it was left open")


def fill(disk):
    """Write one big file until the filesystem has no byte left; deleting it frees the space."""
    big = disk / "filler"
    descriptor = os.open(big, os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(descriptor, bytes(4096))
    except OSError as error:
        assert error.errno == errno.ENOSPC
    finally:
        os.close(descriptor)
    assert os.statvfs(disk).f_bavail == 0
    return big


def hop(t: float, ac: bool, fridge: bool) -> HopLine:
    return hop_line(t, {"ac": ac, "fridge": fridge}, HOP)


def decided_changes(lines, wall_of) -> list[tuple]:
    """What the history must hold: each appliance's state at the first line, then every change."""
    states, changes = {}, []
    for line in lines:
        for appliance, running in line.running.items():
            if states.get(appliance) != running:
                states[appliance] = running
                changes.append((appliance, int(running), wall_of(line), line.t))
    return changes


def recorded(path) -> tuple[list, list]:
    connection = sqlite3.connect(path)
    try:
        assert connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        return (connection.execute("SELECT started, ended FROM segments ORDER BY id").fetchall(),
                connection.execute("SELECT appliance, running, wall, audio_t FROM changes ORDER BY id").fetchall())
    finally:
        connection.close()


def test_a_full_disk_loses_no_decision_and_invents_none(small_disk):
    """The AC turns off and on again while the disk is full: both changes are written, with their
    times, once it frees; the AC never 'ran through' the time it was off."""
    path, clock = small_disk / "history.sqlite", Clock(1_000_000.0)
    history = History(path, clock=clock)
    plan = [(False, False)] * 40 + [(True, False)] * 40 + [(False, True)] * 40 + [(True, True)] * 40 + [(False, False)] * 40
    lines = [hop(step * HOP, *states) for step, states in enumerate(plan)]
    errors, filler, during = [], None, []
    for step, line in enumerate(lines):
        if step == 60:
            filler = fill(small_disk)
        if step == 180:
            filler.unlink()
        clock.now = 1_000_000.0 + line.t
        try:
            history(line)
        except HistoryError as error:
            errors.append((step, error))
        if step in (119, 159):  # the alarms go on with the decisions the disk could not take
            during.append(history.current())
    history.close()
    assert [step for step, _ in errors] == list(range(60, 180)), "every hop on the full disk failed, none after"
    message = str(errors[0][1])
    assert str(path) in message and "disk full" in message and errors[0][1].errno == errno.ENOSPC
    assert errors[0][1].__suppress_context__ and errors[0][1].__cause__ is None, "one line, no chained traceback"
    assert during == [{"ac": (False, 58.5), "fridge": (True, 58.5)}, {"ac": (True, 58.5), "fridge": (True, 118.5)}]
    segments, changes = recorded(path)
    assert segments == [(1_000_000.0, 1_000_000.0 + lines[-1].t)]
    assert changes == decided_changes(lines, lambda line: 1_000_000.0 + line.t)
    reopened = History(path, clock=clock, appliances=("ac", "fridge"))  # as a monitor of the seed's bundle opens it
    stats = reopened.stats()
    reopened.close()
    assert stats["ac"].runtime_1h_sec == pytest.approx(2 * 40 * HOP)  # not 160 hops: it was off from 120 to 180 s
    assert stats["fridge"].runtime_1h_sec == pytest.approx(2 * 40 * HOP)


class LevelClassifier:
    """Hears the AC where the window ends above zero and the fridge where it ends loud: the test
    scripts the monitor's decisions through the audio it feeds."""

    precision = "fp32"

    def __init__(self) -> None:
        self.bundle = types.SimpleNamespace(window=WindowConfig())
        self.decision = DecisionConfig()

    def predict(self, windows: np.ndarray) -> np.ndarray:
        last = windows[:, -1]
        return np.stack([last > 0, np.abs(last) > 0.3], axis=1).astype(np.float32)


def _lines_after(seconds: float) -> int:
    return int((seconds - WindowConfig().window_sec) / HOP) + 1


def test_a_live_monitor_on_a_disk_that_fills_and_frees(small_disk):
    """A LiveMonitor records into the history while the disk fills for a while and frees: the
    history afterwards holds exactly the changes in the lines the monitor printed."""
    path, clock = small_disk / "history.sqlite", Clock(0.0)
    household = Household(History(path, clock=clock), Alarms([]), {}, lambda event: None)
    lines, errors = [], []

    def sink(line: HopLine) -> None:  # the history's wall clock follows the audio: no gap, exact times
        lines.append(line)
        clock.now = 1_000_000.0 + line.t
        try:
            household(line)
        except HistoryError as error:  # (the monitor's outputs log it and report it in /healthz: test_live)
            errors.append(error)

    source = FakeSource()
    monitor = LiveMonitor(Detector(LevelClassifier()), source, sink, max_lag_sec=100.0, backoff_sec=(0.01, 0.05))
    thread = threading.Thread(target=monitor.run, daemon=True)
    thread.start()
    fed = 0.0

    def feed(level: float, seconds: float) -> None:
        nonlocal fed
        hiss = np.random.default_rng(int(fed)).standard_normal(int(seconds * 16_000)) * 1e-3  # a constant is no sound
        source.feed((np.full(int(seconds * 16_000), level) + hiss).astype(np.float32))
        fed += seconds
        deadline = time.monotonic() + 30
        while len(lines) < _lines_after(fed) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(lines) == _lines_after(fed), "the monitor decided every hop"

    try:
        feed(-0.2, 15)  # both off
        feed(0.2, 15)  # the AC
        filler = fill(small_disk)
        full_from = len(lines)
        feed(-0.2, 15)
        feed(0.5, 15)  # the AC and the fridge
        feed(-0.5, 15)  # the fridge alone
        full_until = len(lines)
        filler.unlink()
        feed(-0.2, 12)
    finally:
        monitor.stop.set()
        thread.join(10)
        household.close()
    assert not thread.is_alive()
    ac = [line.running["ac"] for line in lines[full_from - 1 : full_until]]
    assert sum(a != b for a, b in zip(ac, ac[1:])) >= 2, "the AC changed at least twice on the full disk"
    assert len(errors) == full_until - full_from, "each hop on the full disk failed, every one after worked"
    assert str(path) in str(errors[0]) and "disk full" in str(errors[0])
    segments, changes = recorded(path)
    assert segments == [(1_000_000.0 + lines[0].t, 1_000_000.0 + lines[-1].t)]
    assert changes == decided_changes(lines, lambda line: 1_000_000.0 + line.t)


def test_no_space_at_start_names_the_file(small_disk):
    fill(small_disk)
    with pytest.raises(HistoryError, match=rf"--history {small_disk}/new\.sqlite: disk full .*free space on {small_disk}"):
        History(small_disk / "new.sqlite")


def test_closing_on_a_full_disk_says_what_is_lost_and_keeps_what_was_written(small_disk, caplog):
    path, clock = small_disk / "history.sqlite", Clock(1_000_000.0)
    history = History(path, clock=clock)
    lines = [hop(0.0, False, False)]
    history(lines[0])
    filler = fill(small_disk)
    with pytest.raises(HistoryError, match="disk full"):
        for step in range(1, 500):  # the first hops may fit in pages the database's files hold already
            clock.now += HOP
            lines.append(hop(step * HOP, step % 2 == 1, False))
            history(lines[-1])
    with caplog.at_level(logging.WARNING, logger="humwatch.history"):
        history.close()
    assert f"--history {path}: the last hops could not be written before closing (disk full); 1 change(s)" in caplog.text
    filler.unlink()
    written = lines[:-1]  # all but the hop the full disk refused
    wall = {line.t: 1_000_000.0 + line.t for line in lines}
    assert recorded(path) == ([(1_000_000.0, wall[written[-1].t])], decided_changes(written, lambda line: wall[line.t]))


@pytest.fixture(scope="module")
def good_history(tmp_path_factory) -> bytes:
    """A history of a few hours, some ten pages long."""
    path, clock = tmp_path_factory.mktemp("good") / "history.sqlite", Clock(1_000_000.0)
    history = History(path, clock=clock)
    for step in range(36):
        history(line_at(step * 600.0))
        clock.now += 600
    history.close()
    with sqlite3.connect(path) as connection:  # a month of fridge cycles more, in one transaction
        connection.executemany("INSERT INTO changes (segment, appliance, running, wall, audio_t, kind) "
                               "VALUES (1, 'fridge', ?, ?, ?, 'change')",
                               [(step % 2, 1_000_000.0 + step * 600, step * 600.0) for step in range(36, 2000)])
    connection.close()
    return path.read_bytes()


@pytest.mark.parametrize("damage", ["random bytes", "cut in half", "a page zeroed"])
def test_a_corrupt_history_at_start_names_the_file_and_the_fix(tmp_path, good_history, damage):
    path, clock, good = tmp_path / "history.sqlite", Clock(1_000_000.0), good_history
    assert len(good) >= 10 * 4096
    broken = {"random bytes": np.random.default_rng(0).bytes(len(good)), "cut in half": good[: len(good) // 2],
              "a page zeroed": good[:8192] + bytes(4096) + good[12288:]}[damage]
    path.write_bytes(broken)
    with pytest.raises(HistoryError) as raised:
        History(path, clock=clock)
    assert str(raised.value).startswith(f"--history {path}: not a readable history database (")
    assert f"move it aside with any history.sqlite-wal and -shm beside it (mv {path} {path}.broken)" in str(raised.value)
    assert path.read_bytes() == broken, "the file is left as it was, for the user to look at"
