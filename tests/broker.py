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

import paho.mqtt.client as mqtt

MOSQUITTO = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").is_file() else None)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Broker:
    """Start, stop and restart a broker on one port (mosquitto, or amqtt where mosquitto is absent)."""

    def __init__(self, directory: Path, allow_anonymous: bool = True) -> None:
        """allow_anonymous=False: a broker that refuses every client (no user is configured)."""
        self.port = free_port()
        allow = str(allow_anonymous).lower()
        if MOSQUITTO:
            self.name = "mosquitto"
            config = directory / "mosquitto.conf"
            config.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous {allow}\n")
            self.command = [MOSQUITTO, "-c", str(config)]
        else:
            self.name = "amqtt"
            config = directory / "amqtt.yaml"
            config.write_text(
                f"listeners:\n  default:\n    type: tcp\n    bind: 127.0.0.1:{self.port}\n"
                f"plugins:\n  amqtt.plugins.authentication.AnonymousAuthPlugin:\n    allow_anonymous: {allow}\n"
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


class Subscriber:
    """A paho client that records every message on humwatch/# and homeassistant/#."""

    def __init__(self, port: int) -> None:
        self.messages: list[tuple[str, str, bool]] = []
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        self.client.on_message = lambda c, u, m: self.messages.append((m.topic, m.payload.decode(errors="replace"), bool(m.retain)))
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe([("humwatch/#", 1), ("homeassistant/#", 1)])
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def wait(self, predicate, timeout: float = 20.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(predicate(*message) for message in list(self.messages)):
                return True
            time.sleep(0.05)
        return False

    def payloads(self, topic: str) -> list[str]:
        return [payload for t, payload, _ in list(self.messages) if t == topic]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
