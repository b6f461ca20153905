"""A real MQTT broker on a free loopback port for the tests: mosquitto when installed, else amqtt.

amqtt is a pure-Python broker in the dev group, so `uv run pytest` needs nothing from apt;
`.ci/run` installs mosquitto and the same tests then run against it.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

MOSQUITTO = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").is_file() else None)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Broker:
    """Start, stop and restart a broker on one port (mosquitto, or amqtt where mosquitto is absent)."""

    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        if MOSQUITTO:
            self.name = "mosquitto"
            config = directory / "mosquitto.conf"
            config.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\n")
            self.command = [MOSQUITTO, "-c", str(config)]
        else:
            self.name = "amqtt"
            config = directory / "amqtt.yaml"
            config.write_text(
                f"listeners:\n  default:\n    type: tcp\n    bind: 127.0.0.1:{self.port}\n"
                "plugins:\n  amqtt.plugins.authentication.AnonymousAuthPlugin:\n    allow_anonymous: true\n"
            )
            self.command = [str(Path(sys.executable).with_name("amqtt")), "-c", str(config)]
        self.process: subprocess.Popen | None = None

    def start(self) -> Broker:
        self.process = subprocess.Popen(self.command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                if self.process.poll() is not None:
                    break
                time.sleep(0.05)
        raise RuntimeError(f"{self.name} did not start on port {self.port}: {' '.join(self.command)}")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
