"""`humwatch live` as a user runs it, as a real process fed raw PCM on stdin, and what a broker retained:
shared by the tests that look at a live monitor from outside (the seed pinned, any appliance)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt

from broker import Broker, free_port
from conftest import REPO


def run_live(bundle: Path, audio: np.ndarray, tmp: Path, args: list[str], hops: int, until: str = "") -> dict:
    """Run `humwatch live --bundle BUNDLE --source - ... ARGS --http PORT --output FILE` on 16 kHz `audio`
    (fed at 10x real time) until `hops` lines (and `until`, when given, in the output) are written; then
    read /state and /metrics, stop it with SIGTERM. Returns returncode, stderr, served pages and lines."""
    port, output = free_port(), tmp / "lines.jsonl"
    command = [sys.executable, "-c", "from edge.cli import main; main()", "live", "--bundle", str(bundle),
               "--source", "-", "--source-format", "f32le:16000:1", "--hop", "1.5", "--http", str(port),
               "--output", str(output), *args]
    with open(tmp / "stderr.txt", "w") as stderr:
        process = subprocess.Popen(command, cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=stderr)

    def feed():
        try:
            for start in range(0, len(audio), 1600):
                process.stdin.write(audio[start : start + 1600].astype("<f4").tobytes())
                process.stdin.flush()
                time.sleep(0.01)
        except (OSError, ValueError):  # the monitor ended early: the wait below says why
            pass

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    served = {}
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and process.poll() is None:
            text = output.read_text() if output.exists() else ""
            if text.count('"t": ') >= hops and until in text:
                break
            time.sleep(0.1)
        for path in ("/state", "/metrics", "/api/page"):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
                served[path] = response.read().decode()
    finally:
        process.send_signal(signal.SIGTERM)
        returncode = process.wait(timeout=20)
        process.stdin.close()
        feeder.join(5)
    return {"returncode": returncode, "stderr": (tmp / "stderr.txt").read_text(), "served": served,
            "lines": [json.loads(line) for line in output.read_text().splitlines()]}


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
