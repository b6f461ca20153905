"""Home Assistant over MQTT: discovery, retained state, attributes, availability with last will.

Topics (``<base>`` = ``humwatch/<device_id>``):
- ``<base>/state``: the debounced status, retained (``ac-on`` | ``fridge-on`` | ``both-off``)
- ``<base>/attributes``: JSON (p_ac, p_fridge, medians, ac_on, fridge_on, infer_ms, drops, overflows)
- ``<base>/availability``: ``online`` / ``offline`` (retained; ``offline`` is the last will)
- ``homeassistant/.../config``: discovery for one enum sensor and two binary sensors, one device.

The broker being down never stops the monitor: paho reconnects in its own thread with backoff;
while disconnected nothing is queued, only the latest line is kept and published on reconnect.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import logging
import threading
import time
import urllib.parse

import paho.mqtt.client as mqtt

from edge.core.labels import STATES
from edge.monitor.hop import HopLine

log = logging.getLogger("humwatch.mqtt")
DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}


@dataclasses.dataclass(frozen=True)
class MqttSettings:
    host: str
    port: int
    tls: bool
    username: str | None = None
    password: str | None = dataclasses.field(default=None, repr=False)  # never printed
    device_id: str = "humwatch"
    device_name: str = "humwatch"
    discovery_prefix: str = "homeassistant"
    heartbeat_sec: float = 60.0

    @classmethod
    def from_url(cls, url: str, **options) -> MqttSettings:
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in DEFAULT_PORTS or not parsed.hostname:
            raise ValueError(f"--mqtt {url!r}: expected mqtt://HOST[:PORT] or mqtts://HOST[:PORT]")
        # Credentials may also sit in the URL (mqtt://user:password@host); options win.
        options["username"] = options.get("username") or (urllib.parse.unquote(parsed.username) if parsed.username else None)
        options["password"] = options.get("password") or (urllib.parse.unquote(parsed.password) if parsed.password else None)
        return cls(host=parsed.hostname, port=parsed.port or DEFAULT_PORTS[parsed.scheme], tls=parsed.scheme == "mqtts",
                   **options)

    @property
    def base_topic(self) -> str:
        return f"humwatch/{self.device_id}"


def discovery_messages(settings: MqttSettings) -> dict[str, dict]:
    """Home Assistant discovery configs: topic -> payload."""
    base, node = settings.base_topic, f"humwatch_{settings.device_id}"
    device = {"identifiers": [node], "name": settings.device_name, "manufacturer": "humwatch",
              "model": "humwatch live monitor", "sw_version": importlib.metadata.version("humwatch")}
    common = {"availability_topic": f"{base}/availability", "device": device}
    attributes = f"{base}/attributes"
    return {
        f"{settings.discovery_prefix}/sensor/{node}/state/config": {
            **common, "name": "State", "unique_id": f"{node}_state", "state_topic": f"{base}/state",
            "device_class": "enum", "options": list(STATES), "json_attributes_topic": attributes,
            "icon": "mdi:home-sound-in",
        },
        f"{settings.discovery_prefix}/binary_sensor/{node}/ac/config": {
            **common, "name": "AC running", "unique_id": f"{node}_ac", "state_topic": attributes,
            "value_template": "{{ 'ON' if value_json.ac_on else 'OFF' }}", "device_class": "running",
            "icon": "mdi:air-conditioner",
        },
        f"{settings.discovery_prefix}/binary_sensor/{node}/fridge/config": {
            **common, "name": "Fridge running", "unique_id": f"{node}_fridge", "state_topic": attributes,
            "value_template": "{{ 'ON' if value_json.fridge_on else 'OFF' }}", "device_class": "running",
            "icon": "mdi:fridge",
        },
    }


class MqttPublisher:
    """A live-line sink that publishes to an MQTT broker."""

    def __init__(self, settings: MqttSettings, clock=time.monotonic) -> None:
        self.settings = settings
        self.clock = clock
        self.latest: HopLine | None = None
        self._published: tuple | None = None
        self._last_publish = float("-inf")
        self._lock = threading.Lock()
        self.connected = threading.Event()
        base = settings.base_topic
        self.topics = {"state": f"{base}/state", "attributes": f"{base}/attributes", "availability": f"{base}/availability"}
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"humwatch-{settings.device_id}")
        if settings.username:
            self.client.username_pw_set(settings.username, settings.password)
        if settings.tls:
            self.client.tls_set()
        self.client.will_set(self.topics["availability"], "offline", qos=1, retain=True)
        self.client.reconnect_delay_set(min_delay=1, max_delay=60)
        self.client.max_queued_messages_set(64)  # a safety bound; nothing is published while disconnected
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect

    def start(self) -> None:
        log.info("MQTT: connecting to %s:%d%s", self.settings.host, self.settings.port, " (TLS)" if self.settings.tls else "")
        self.client.connect_async(self.settings.host, self.settings.port, keepalive=30)
        self.client.loop_start()

    def close(self) -> None:
        """Clean shutdown: say offline, then disconnect (the last will covers a crash)."""
        if self.connected.is_set():
            self.client.publish(self.topics["availability"], "offline", qos=1, retain=True).wait_for_publish(2)
        self.client.disconnect()
        self.client.loop_stop()

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.warning("MQTT: broker refused the connection: %s", reason_code)
            return
        log.info("MQTT: connected to %s:%d", self.settings.host, self.settings.port)
        for topic, payload in discovery_messages(self.settings).items():
            client.publish(topic, json.dumps(payload), qos=1, retain=True)
        client.publish(self.topics["availability"], "online", qos=1, retain=True)
        self.connected.set()
        with self._lock:
            if self.latest is not None:
                self._publish(self.latest)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self.connected.clear()
        log.warning("MQTT: disconnected (%s); the monitor keeps deciding, reconnecting with backoff and "
                    "keeping only the latest state to send", reason_code)

    def __call__(self, line: HopLine) -> None:
        """Publish on a change of state or detectors, and at the heartbeat; otherwise just remember."""
        with self._lock:
            self.latest = line
            key = (line.debounced_status, line.ac_on, line.fridge_on)
            due = self.clock() - self._last_publish >= self.settings.heartbeat_sec
            if self.connected.is_set() and (key != self._published or due):
                self._publish(line)

    def _publish(self, line: HopLine) -> None:
        attributes = {key: value for key, value in line.to_json().items() if key not in ("debounced_status", "changed", "lag_sec")}
        self.client.publish(self.topics["state"], line.debounced_status, qos=1, retain=True)
        self.client.publish(self.topics["attributes"], json.dumps(attributes), qos=1, retain=True)
        self._published = (line.debounced_status, line.ac_on, line.fridge_on)
        self._last_publish = self.clock()
