"""`humwatch live` as a user runs it, as a real process fed raw PCM on stdin, and what a broker retained:
shared by the tests that look at a live monitor from outside (the seed pinned, any appliance, the
monitor that tells the truth)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt
from broker import Broker, free_port
from conftest import REPO

CHUNK = 1600  # samples at 16 kHz written at a time: 0.1 s


STDIN = ("--source", "-", "--source-format", "f32le:16000:1")


class LiveProcess:
    """`humwatch live --bundle BUNDLE --source - --source-format f32le:16000:1 --hop 1.5 --http PORT
    --output FILE ARGS` in a process of its own (`source`: other --source options); the test feeds it
    audio (or pauses), reads its pages and lines, and stops it with SIGTERM."""

    def __init__(self, bundle: Path, tmp: Path, args: list[str], name: str = "live", source=STDIN) -> None:
        self.port, self.output, self.stderr_path = free_port(), tmp / f"{name}-lines.jsonl", tmp / f"{name}-stderr.txt"
        command = [sys.executable, "-c", "from edge.cli import main; main()", "live", "--bundle", str(bundle),
                   *source, "--hop", "1.5", "--http", str(self.port), "--output", str(self.output), *args]
        with open(self.stderr_path, "w") as stderr:
            self.process = subprocess.Popen(command, cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                            stderr=stderr)

    def feed(self, audio: np.ndarray, speed: float = 10.0) -> None:
        """Write 16 kHz `audio` at `speed` times real time (the monitor ending early stops it quietly)."""
        try:
            for start in range(0, len(audio), CHUNK):
                self.process.stdin.write(audio[start : start + CHUNK].astype("<f4").tobytes())
                self.process.stdin.flush()
                time.sleep(CHUNK / 16_000 / speed)
        except (OSError, ValueError):  # the monitor ended early: the caller's wait says why
            pass

    def feed_in_background(self, audio: np.ndarray, speed: float = 10.0) -> threading.Thread:
        feeder = threading.Thread(target=self.feed, args=(audio, speed), daemon=True)
        feeder.start()
        return feeder

    def lines(self) -> list[dict]:
        """The lines written so far (whole ones: a line being written is left for the next call)."""
        text = self.output.read_text() if self.output.exists() else ""
        return [json.loads(line) for line in text[: text.rfind("\n") + 1].splitlines()]

    def wait_for(self, predicate, timeout: float = 60.0) -> bool:
        """Wait until `predicate(lines)` holds (False at the timeout or when the process ended)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.process.poll() is None:
            if predicate(self.lines()):
                return True
            time.sleep(0.1)
        return predicate(self.lines())

    def get(self, path: str) -> tuple[int, str]:
        """(status, body) of GET path on its HTTP server (a 503 is an answer too)."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()

    def stop(self) -> tuple[int, str]:
        """SIGTERM; (returncode, stderr)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        returncode = self.process.wait(timeout=20)
        self.process.stdin.close()
        return returncode, self.stderr_path.read_text()


def run_live(bundle: Path, audio: np.ndarray, tmp: Path, args: list[str], hops: int, until: str = "") -> dict:
    """Run `humwatch live` (:class:`LiveProcess`) on 16 kHz `audio` (fed at 10x real time) until `hops` lines
    (and `until`, when given, in the output) are written; then read /state, /metrics, /api/page, stop
    it with SIGTERM. Returns returncode, stderr, served pages and lines."""
    live = LiveProcess(bundle, tmp, args)
    feeder = live.feed_in_background(audio)
    try:
        live.wait_for(lambda lines: sum("t" in line for line in lines) >= hops and until in live.output.read_text())
        served = {path: live.get(path)[1] for path in ("/state", "/metrics", "/api/page")}
    finally:
        returncode, stderr = live.stop()
        feeder.join(5)
    return {"returncode": returncode, "stderr": stderr, "served": served, "lines": live.lines()}


def retained_messages(port: int) -> dict[str, str]:
    """Every retained message on the broker: topic -> payload (waits until none arrive for 0.5 s)."""
    received: dict[str, str] = {}
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    client.on_message = lambda client, userdata, message: received.__setitem__(message.topic, message.payload.decode())
    client.connect("127.0.0.1", port)
    client.subscribe("#")
    client.loop_start()
    try:
        deadline, seen = time.monotonic() + 10, -1
        while time.monotonic() < deadline and len(received) != seen:
            seen = len(received)
            time.sleep(0.5)
    finally:
        client.loop_stop()
        client.disconnect()
    return received


def run_live_with_broker(bundle: Path, audio: np.ndarray, tmp: Path, args: list[str], hops: int, until: str = "") -> dict:
    """:func:`run_live` with a real MQTT broker and a history (adds --mqtt and --history): also what the
    broker retained and the history's path."""
    broker = Broker(tmp).start()
    history = tmp / "history.sqlite"
    try:
        run = run_live(bundle, audio, tmp, ["--mqtt", f"mqtt://127.0.0.1:{broker.port}", "--history", str(history),
                                            *args], hops, until)
        run.update(retained=retained_messages(broker.port), history=history)
    finally:
        broker.stop()
    return run
