"""`humwatch live` starts or says why not, and stops when told (issue 29, item 6), as a real process.

Every refusal at start prints its reason and ends the process with a non-zero code within seconds,
with every output configured (the page over HTTP, a real MQTT broker, a history, --output, clips),
whichever of them were already made when the refusal came. As PID 1 of its own PID namespace (as
in a container without an init, where a signal with no handler is ignored), the process stops on
SIGTERM while it loads the model and while it runs.
"""

from __future__ import annotations

import os
import pty
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from broker import Broker, free_port
from conftest import REPO
from live_process import retained_messages

BUNDLE = Path(__file__).parent / "fixtures" / "bundle-v2"  # a committed bundle (fp32 and student): it loads in a second
STDIN = ["--source", "-", "--source-format", "s16le:16000:1"]
EXIT_WITHIN_SEC = 30  # typically 1-2 s; the code before this fix never exited at all
TWO_MONITORS = """bundle = "{bundle}"
mqtt = "mqtt://127.0.0.1:{mqtt}"
http = "127.0.0.1:{http}"

[[monitor]]
name = "Kitchen"
source = "-"
source_format = "s16le:16000:1"
output = "{tmp}/kitchen.jsonl"
history = "{tmp}/kitchen.sqlite"

[[monitor]]
name = "Cellar"
source = "rtsp://127.0.0.1:9/stream"
output = "{tmp}/a-file/cellar.jsonl"
"""


def humwatch_live(*args) -> list[str]:
    return [sys.executable, "-c", "from edge.cli import main; main()", "live", *map(str, args)]


def every_sink(tmp: Path, broker: Broker) -> list[str]:
    return ["--http", free_port(), "--mqtt", f"mqtt://127.0.0.1:{broker.port}", "--history", tmp / "history.sqlite",
            "--output", tmp / "lines.jsonl", "--clips", tmp / "clips"]


def refused(command: list[str], stdin=subprocess.DEVNULL) -> tuple[str, float]:
    """(stderr, seconds) of a process that must end by itself with a non-zero code."""
    started = time.monotonic()
    try:
        result = subprocess.run(command, cwd=REPO, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, timeout=EXIT_WITHIN_SEC)
    except subprocess.TimeoutExpired as hung:
        raise AssertionError(f"still running after {EXIT_WITHIN_SEC} s; it said: {hung.stderr!r}") from None
    seconds = time.monotonic() - started
    assert result.returncode != 0, result.stderr
    print(f"refused in {seconds:.2f} s: {result.stderr.strip().splitlines()[-1]}")
    return result.stderr, seconds


@pytest.fixture(scope="module")
def mqtt_broker(tmp_path_factory):
    running = Broker(tmp_path_factory.mktemp("broker")).start()
    yield running
    running.stop()


@pytest.fixture
def tmp(tmp_path) -> Path:
    """A folder with a regular file, a-file, to put what cannot be made under, and a settings file with a typo."""
    (tmp_path / "a-file").write_text("not a folder")
    (tmp_path / "typo.toml").write_text('bundle = "x"\nsorce = "-"\n')
    return tmp_path


REFUSALS = {  # what refuses (options after every sink's, so they win): what stderr says
    "no bundle": (["--bundle", "{tmp}/nothing", *STDIN], "not a bundle"),
    "a precision the bundle lacks": (["--precision", "int8", *STDIN], "no int8 model in this bundle"),
    "a decision setting of no appliance": (["--level", "t_dehumidifier=0.6", *STDIN], "dehumidifier: not an appliance"),
    "a settings file with an unknown key": (["--config", "{tmp}/typo.toml"], "unknown key 'sorce'"),
    "--source - without --source-format": (["--source", "-"], "needs its format"),
    "a --source-format that is none": (["--source", "-", "--source-format", "s16le:fast:1"], "ENCODING:RATE:CHANNELS"),
    "--source-format for a device": (["--source", "USB", "--source-format", "s16le:16000:1"], "only raw PCM"),
    "a stream of an unknown scheme": (["--source", "ftp://camera/stream"], "a stream is rtsp://"),
    # with no PortAudio (this machine) or without that device (a machine with PortAudio)
    "a microphone by name": (["--source", "USB Mic"], "PortAudio is missing|no such input device"),
    "the system's microphone": ([], "PortAudio is missing|no such input device"),
    "the shipped container settings, no sound server": (["--config", REPO / "edge/container/humwatch.toml"],
                                                        "PortAudio is missing|no such input device"),
    "the shipped systemd settings, no microphone": (["--config", REPO / "edge/systemd/humwatch.toml"],
                                                    "PortAudio is missing|no such input device"),
    "an alarm of no appliance": ([*STDIN, "--alarm", "dehumidifier-run-max=1h"], "dehumidifier is not one of the bundle"),
    "an alarm with no duration": ([*STDIN, "--alarm", "fridge-run-max=soon"], "expected a duration"),
    "watts of no appliance": ([*STDIN, "--watts", "dehumidifier=300"], "dehumidifier is not one of the bundle"),
    "an audit fallback with no student": ([*STDIN, "--precision", "fp32", "--audit-fallback", "0.5"], "no student to audit"),
    "a history that cannot be made": ([*STDIN, "--history", "{tmp}/a-file/history.sqlite"], "a-file"),
    "an --http address of another machine": ([*STDIN, "--http", "192.0.2.1:8321"], "cannot listen there"),
    "an MQTT URL of another scheme": ([*STDIN, "--mqtt", "http://broker"], "expected mqtt://"),
    "clips that cannot be kept": ([*STDIN, "--clips", "{tmp}/a-file/clips"], "--clips .*: cannot make this folder"),
    "an --output that cannot be opened": ([*STDIN, "--output", "{tmp}/a-file/lines.jsonl"], "--output .*: cannot open it"),
}


@pytest.mark.parametrize("name", REFUSALS)
def test_every_refusal_ends_the_process_with_its_reason(name, tmp, mqtt_broker):
    options, reason = REFUSALS[name]
    options = [str(option).format(tmp=tmp) for option in options]
    stderr, _ = refused(humwatch_live("--bundle", BUNDLE, *every_sink(tmp, mqtt_broker), *options))
    assert re.search(reason, stderr), stderr


def test_a_history_in_use_and_a_port_taken_end_the_process(tmp, mqtt_broker):
    from edge.home.history import History

    holder = History(tmp / "history.sqlite")  # another monitor holds this history
    try:
        stderr, _ = refused(humwatch_live("--bundle", BUNDLE, *every_sink(tmp, mqtt_broker), *STDIN))
        assert "already in use by a running monitor" in stderr
    finally:
        holder.close()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        stderr, _ = refused(humwatch_live("--bundle", BUNDLE, *every_sink(tmp, mqtt_broker), *STDIN, "--http", port))
        assert "the port is in use" in stderr


def test_standard_input_that_is_a_terminal_ends_the_process(tmp, mqtt_broker):
    terminal, other_end = pty.openpty()
    try:
        stderr, _ = refused(humwatch_live("--bundle", BUNDLE, *every_sink(tmp, mqtt_broker), *STDIN), stdin=other_end)
    finally:
        os.close(terminal)
        os.close(other_end)
    assert "it is a terminal" in stderr


def test_a_refusal_after_a_monitor_connected_leaves_its_device_offline(tmp, mqtt_broker):
    """The second monitor's --output refuses after the first one connected to the broker."""
    settings = tmp / "two.toml"
    settings.write_text(TWO_MONITORS.format(bundle=BUNDLE, mqtt=mqtt_broker.port, http=free_port(), tmp=tmp))
    stderr, _ = refused(humwatch_live("--config", settings))
    assert "cellar.jsonl" in stderr
    assert retained_messages(mqtt_broker.port).get("humwatch/kitchen/availability") in (None, "offline")


class Pid1:
    """`humwatch live` as PID 1 of a PID namespace of its own (unshare), as in a container with no init."""

    def __init__(self, command: list[str], tmp: Path, stdin=subprocess.DEVNULL) -> None:
        self.stderr = tmp / "stderr.txt"
        with open(self.stderr, "w") as stderr:
            self.unshare = subprocess.Popen(["unshare", "--map-root-user", "--pid", "--fork", "--mount-proc", *command],
                                            cwd=REPO, stdin=stdin, stdout=subprocess.DEVNULL, stderr=stderr)
        self.pid = self._child()

    def _child(self) -> int:
        """The process's pid here (it is 1 in its namespace)."""
        children = Path(f"/proc/{self.unshare.pid}/task/{self.unshare.pid}/children")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not children.read_text().split():
            time.sleep(0.05)
        pid = int(children.read_text().split()[0])
        namespaced = next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith("NSpid:"))
        assert namespaced.split()[-1] == "1", f"not PID 1 in its namespace: {namespaced}"
        return pid

    def wchan(self) -> str:
        try:
            return Path(f"/proc/{self.pid}/wchan").read_text()
        except OSError:
            return ""

    def terminate(self) -> tuple[int, float]:
        """SIGTERM; (exit code, seconds to exit)."""
        started = time.monotonic()
        os.kill(self.pid, signal.SIGTERM)
        try:
            code = self.unshare.wait(EXIT_WITHIN_SEC)
        except subprocess.TimeoutExpired:
            os.kill(self.pid, signal.SIGKILL)
            self.unshare.wait(10)
            raise AssertionError(f"SIGTERM ignored for {EXIT_WITHIN_SEC} s; it said: {self.stderr.read_text()[-2000:]}") from None
        return code, time.monotonic() - started


def until(condition, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"{what} within {seconds:g} s"
        time.sleep(0.05)


def test_as_pid_1_sigterm_stops_it_while_it_loads_the_model(tmp, mqtt_broker):
    """The encoder is a FIFO no one writes: loading it waits as on a very slow card, until SIGTERM."""
    bundle = shutil.copytree(BUNDLE, tmp / "bundle")
    (bundle / "encoder.onnx").unlink()
    os.mkfifo(bundle / "encoder.onnx")
    process = Pid1(humwatch_live("--bundle", bundle, "--precision", "fp32", *every_sink(tmp, mqtt_broker), *STDIN), tmp)
    until(lambda: "wait_for_partner" in process.wchan(), 60, "reading the model's encoder")
    code, seconds = process.terminate()
    print(f"stopped in {seconds:.2f} s while loading the model")
    assert code == 0 and "SIGTERM while starting: stopped" in process.stderr.read_text()


def test_as_pid_1_sigterm_stops_it_while_it_runs(tmp, mqtt_broker):
    lines = tmp / "lines.jsonl"
    process = Pid1(humwatch_live("--bundle", BUNDLE, *every_sink(tmp, mqtt_broker), *STDIN, "--hop", "1.5"), tmp,
                   stdin=subprocess.PIPE)
    noise = (np.random.default_rng(0).normal(0, 0.05, 16_000 * 20) * 32767).astype("<i2").tobytes()
    process.unshare.stdin.write(noise)  # 20 s of audio at once: six or more hops
    process.unshare.stdin.flush()
    until(lambda: lines.exists() and lines.read_text().count('"t": ') >= 3, 60, "three hops decided")
    code, seconds = process.terminate()
    print(f"stopped in {seconds:.2f} s while running")
    assert code == 0 and "INFO humwatch.live: stopped" in process.stderr.read_text()
