"""A real Ray cluster on this machine, for the tests and `humwatch bench-cluster`: a head and worker
nodes, each a `ray start --block` process of its own (with the raylet, object store and workers it
starts), on free ports, in a temporary folder of its own; stop() ends those processes by their ids.
Ray gives each node this machine's address; the driver reaches the head on 127.0.0.1."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

STARTED = "Ray runtime started"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def ray_command() -> str:
    """The `ray` script beside this Python (a venv's), else the one on PATH."""
    beside = Path(sys.executable).parent / "ray"
    return str(beside) if beside.is_file() else shutil.which("ray") or "ray"


class LocalCluster:
    """`workers` worker nodes and a head, `cpus` CPUs each (the head runs work too)."""

    def __init__(self, workers: int = 1, cpus: int = 1, object_store_mb: int = 200) -> None:
        self.workers, self.cpus, self.object_store_mb = workers, cpus, object_store_mb
        self.port, self.client_port = free_port(), free_port()
        self.folder = Path(tempfile.mkdtemp(prefix="hwray-", dir="/tmp"))  # short: Ray's socket paths must fit 107 bytes
        self.nodes: list[subprocess.Popen] = []

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def client_address(self) -> str:
        return f"ray://127.0.0.1:{self.client_port}"

    def _node(self, name: str, *options: str, timeout: float = 90.0) -> None:
        log = self.folder / f"{name}.log"
        common = ["--block", f"--num-cpus={self.cpus}", f"--object-store-memory={self.object_store_mb * 1_000_000}",
                  f"--dashboard-agent-listen-port={free_port()}", "--disable-usage-stats"]
        with open(log, "w") as output:
            self.nodes.append(subprocess.Popen([ray_command(), "start", *common, *options], stdout=output,
                                               stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL))
        deadline = time.monotonic() + timeout
        while STARTED not in log.read_text(errors="replace"):
            if self.nodes[-1].poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"ray start ({name}) did not start:\n{log.read_text(errors='replace')[-3000:]}")
            time.sleep(0.2)

    def start(self) -> LocalCluster:
        self._node("head", "--head", f"--port={self.port}", f"--ray-client-server-port={self.client_port}",
                   "--include-dashboard=false", f"--temp-dir={self.folder}")
        for index in range(self.workers):
            self._node(f"worker{index}", f"--address={self.address}")
        return self

    def stop(self) -> None:
        """End the worker nodes, then the head (each drains and stops what it started)."""
        for node in reversed(self.nodes):
            node.send_signal(signal.SIGTERM)
            try:
                node.wait(timeout=40)
            except subprocess.TimeoutExpired:
                node.kill()
                node.wait()
        self.nodes.clear()
        shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *_) -> None:
        self.stop()


def actor_processes(name: str) -> dict[int, Path]:
    """{pid: /proc/<pid>} of this machine's Ray actors of class `name` (Ray titles them ray::<name>)."""
    found = {}
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and (entry / "cmdline").read_bytes().startswith(f"ray::{name}".encode()):
                found[int(entry.name)] = entry
        except OSError:  # it ended meanwhile
            continue
    return found
