"""The HTTP server is bounded (issue 29, item 9): connections at once are capped from the open-file
limit (one more is answered 503 at once), a client that trickles its request is cut off, a client's
own failure (a reset, a timeout) is one short log line per kind, and the monitor's own files (clips,
history, --output) stay writable under any HTTP load: `humwatch live` as a real process under a
real small RLIMIT_NOFILE, against hundreds of slow and abandoned connections.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import resource
import signal
import socket
import sqlite3
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from broker import free_port
from conftest import REPO

from edge.home import http_status
from edge.home.http_status import REQUEST_SEC, FailureLog, StatusServer, connection_cap

BUNDLE = Path(__file__).parent / "fixtures" / "bundle-v2"
OPEN_FILES = 64  # the monitor's RLIMIT_NOFILE below: 4 connections at once
SLOW_CLIENTS = 300
SILENT_CLIENTS = 100


def test_the_cap_is_a_quarter_of_the_open_file_limit():
    assert [connection_cap(n) for n in (8, 64, 128, 1024, 524_288, resource.RLIM_INFINITY)] == [1, 4, 8, 64, 64, 64]


def test_each_kind_of_failure_is_one_line_at_most_every_minute(caplog):
    now = [0.0]
    failures = FailureLog(every_sec=60, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, "humwatch.http"):
        for second in range(0, 150, 2):  # a reset and a timeout every 2 s for 150 s
            now[0] = second
            failures.note("ConnectionResetError", "reset")
            failures.note("TimeoutError", "timed out")
    assert [record.getMessage() for record in caplog.records] == [
        "HTTP: reset", "HTTP: timed out", "HTTP: reset (29 more since the last such line)",
        "HTTP: timed out (29 more since the last such line)", "HTTP: reset (29 more since the last such line)",
        "HTTP: timed out (29 more since the last such line)"]


def slow_client(port: int) -> socket.socket:
    """A connection whose request never ends (slowloris: a header line, then a byte now and then)."""
    client = socket.create_connection(("127.0.0.1", port), timeout=10)
    client.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
    return client


def get(port: int, path: str = "/healthz") -> tuple[int, dict]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


@pytest.fixture
def server():
    """A StatusServer with no monitor (its /healthz says so): the connections are what is tested."""
    served = StatusServer()
    served.start()
    yield served
    served.close()


def _handler_threads() -> int:
    return sum("process_request_thread" in thread.name for thread in threading.enumerate())


def test_beyond_the_cap_a_client_is_answered_503_at_once(monkeypatch):
    monkeypatch.setattr(http_status, "connection_cap", lambda: 2)
    server = StatusServer()
    server.start()
    port = server.address[1]
    held = [slow_client(port) for _ in range(2)]
    try:
        deadline = time.monotonic() + 10
        while _handler_threads() < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        status, answer = get(port)
        assert status == 503 and "busy: 2 connections at once" in answer["error"], answer
        assert _handler_threads() == 2
    finally:
        for client in held:
            client.close()
        deadline = time.monotonic() + 10
        while _handler_threads() and time.monotonic() < deadline:
            time.sleep(0.05)
    assert get(port)[0] == 200
    server.close()


def test_a_client_that_trickles_its_request_is_cut_off(server, caplog):
    client = slow_client(server.address[1])
    started = time.monotonic()
    with caplog.at_level(logging.DEBUG, "humwatch.http"):
        try:
            while time.monotonic() - started < 4 * REQUEST_SEC:  # a byte every 0.5 s: never 10 s without one
                client.sendall(b"x")
                time.sleep(0.5)
        except OSError:  # the server closed it
            pass
        finally:
            client.close()
        seconds = time.monotonic() - started
        assert seconds < 4 * REQUEST_SEC, "a client sending a byte now and then held its connection for good"
        deadline = time.monotonic() + 10
        while not caplog.records and time.monotonic() < deadline:
            time.sleep(0.05)
    print(f"cut off after {seconds:.1f} s")
    warnings = [record for record in caplog.records if record.levelno >= logging.WARNING]
    assert [record.getMessage() for record in warnings] == [
        f"HTTP: a client's connection ended: TimeoutError: no whole request within {REQUEST_SEC:g} s"]
    assert warnings[0].exc_info is None


class Attack:
    """`count` slow clients and `silent` ones that connect and say nothing, each replaced as soon as
    the server ends it (as a slowloris does), until stopped."""

    def __init__(self, port: int, count: int, silent: int) -> None:
        self.port, self.count, self.silent = port, count, silent
        self.clients: list[socket.socket] = []
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _connect(self, index: int) -> socket.socket | None:
        try:
            if index < self.silent:
                return socket.create_connection(("127.0.0.1", self.port), timeout=10)
            return slow_client(self.port)
        except OSError:
            return None

    def _run(self) -> None:
        self.clients = [self._connect(index) for index in range(self.count + self.silent)]
        while not self.stopped.wait(1.0):
            for index, client in enumerate(self.clients):
                try:
                    if client is None:
                        raise ConnectionError
                    if index >= self.silent:
                        client.sendall(b"x")
                except OSError:
                    if client is not None:
                        client.close()
                    self.clients[index] = self._connect(index)

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join(30)
        for client in self.clients:
            if client is not None:
                client.close()


class LimitedMonitor:
    """`humwatch live` with the page, a history, --output and clips, its open files limited to
    OPEN_FILES, fed on stdin 12 s of a quiet room and 12 s of the AC in turn at 3x real time (a
    change, so a clip and a history row, every 4 s)."""

    def __init__(self, tmp: Path) -> None:
        from train.synth import synthesize

        self.tmp, self.port = tmp, free_port()
        self.stderr = tmp / "stderr.txt"
        command = [sys.executable, "-c", "from edge.cli import main; main()", "live", "--bundle", BUNDLE,
                   "--precision", "fp32", "--source", "-", "--source-format", "f32le:44100:2", "--hop", "1.5",
                   "--http", self.port, "--history", tmp / "history.sqlite", "--output", tmp / "lines.jsonl",
                   "--clips", tmp / "clips", "--only-changes"]
        with open(self.stderr, "w") as stderr:
            self.process = subprocess.Popen(list(map(str, command)), cwd=REPO, stdin=subprocess.PIPE,
                                            stdout=subprocess.DEVNULL, stderr=stderr, preexec_fn=self._limit)
        self.audio = [synthesize({"ac": ac, "fridge": False}, "night", 12, seed).T.astype("<f4").tobytes()
                      for seed, ac in enumerate((False, True))]
        threading.Thread(target=self._feed, daemon=True).start()

    @staticmethod
    def _limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (OPEN_FILES, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))

    def _feed(self) -> None:
        block = 44_100 // 10 * 8  # 0.1 s of two float channels
        try:
            for turn in range(1000):
                audio = self.audio[turn % 2]
                for start in range(0, len(audio), block):
                    self.process.stdin.write(audio[start : start + block])
                    self.process.stdin.flush()
                    time.sleep(0.1 / 3)
        except (OSError, ValueError):  # it ended: the test says why
            pass

    def counts(self) -> dict[str, int]:
        """Clips, history changes and --output lines written so far."""
        with sqlite3.connect(f"{(self.tmp / 'history.sqlite').as_uri()}?mode=ro", uri=True) as history:
            changes = history.execute("SELECT count(*) FROM changes").fetchone()[0]
        return {"clips": len(list((self.tmp / "clips").glob("*.flac"))), "history": changes,
                "output": (self.tmp / "lines.jsonl").read_text().count("\n")}

    def usage(self) -> tuple[int, int]:
        """(threads, open files) of the process now."""
        return len(os.listdir(f"/proc/{self.process.pid}/task")), len(os.listdir(f"/proc/{self.process.pid}/fd"))

    def log_bytes(self) -> int:
        return self.stderr.stat().st_size


def until(condition, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"{what} within {seconds:g} s"
        time.sleep(0.1)


def reset_requests(port: int, count: int) -> None:
    """Requests the server refuses (a foreign Host) whose clients reset the connection at once."""
    for _ in range(count):
        client = socket.create_connection(("127.0.0.1", port), timeout=10)
        client.sendall(b"GET /state HTTP/1.1\r\nHost: evil.example\r\n\r\n")
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.close()


def test_the_monitor_keeps_writing_its_files_under_any_http_load(tmp_path):
    monitor = LimitedMonitor(tmp_path)
    try:
        until(lambda: "INFO humwatch.http" in monitor.stderr.read_text(), 60, "the page served")
        assert f"at most {connection_cap(OPEN_FILES)} connections at once" in monitor.stderr.read_text()
        until(lambda: monitor.counts()["clips"] >= 1, 90, "a first change and its clip")
        idle_threads, idle_files = monitor.usage()

        before = monitor.log_bytes()
        reset_requests(monitor.port, 100)
        time.sleep(1)
        reset_log = monitor.log_bytes() - before
        print(f"100 requests reset by their clients: {reset_log} bytes of log")
        assert reset_log < 2000

        start = monitor.counts()
        attack = Attack(monitor.port, SLOW_CLIENTS, SILENT_CLIENTS)
        most_threads, most_files, answers = 0, 0, []
        try:
            started = time.monotonic()
            while time.monotonic() - started < 15:  # (about 3 changes, each with its clip)
                threads, files = monitor.usage()
                most_threads, most_files = max(most_threads, threads), max(most_files, files)
                if len(answers) < 5 and time.monotonic() - started > 5:
                    answers.append(get(monitor.port))  # an answer, never a reset or a hang
                time.sleep(0.5)
            during = monitor.counts()
            stopping = time.monotonic()  # with the slow clients still there
            monitor.process.send_signal(signal.SIGTERM)
            assert monitor.process.wait(30) == 0
            stopped = time.monotonic() - stopping
        finally:
            attack.stop()
        print(f"idle: {idle_threads} threads, {idle_files} files; under load at most {most_threads} threads, "
              f"{most_files} files; written during the load: { {k: during[k] - start[k] for k in start} }; "
              f"answers {[status for status, _ in answers]}; stopped in {stopped:.1f} s")
        cap = connection_cap(OPEN_FILES)
        assert most_threads <= idle_threads + cap + 2
        assert most_files <= idle_files + OPEN_FILES // 4 + 2
        assert all(status == 200 or (status == 503 and "busy" in answer["error"]) for status, answer in answers)
        assert any(status == 503 for status, _ in answers), "the slow clients never filled the connections"
        assert all(during[what] >= start[what] + 2 for what in start), (start, during)
        log = monitor.stderr.read_text()
        for failure in ("Too many open files", "cannot write", "Traceback"):
            assert failure not in log, log[-3000:]
        assert monitor.log_bytes() - before < 5000, log[-3000:]
    finally:
        if monitor.process.poll() is None:
            monitor.process.kill()
            monitor.process.wait(10)
