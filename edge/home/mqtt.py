"""Home Assistant over MQTT: discovery, retained state, attributes, availability with last will.

Topics (``<base>`` = ``humwatch/<device_id>``, the id defaulting to the monitor's name as a slug,
a long one cut to 40 characters with a hash of the whole):
- ``<base>/attributes``: the hop's JSON line (``debounced_status``, ``<appliance>_running`` for each
  appliance, the raw detectors and probabilities; retained). The state and every running entity read
  this one message, so they agree at every moment.
- ``<base>/state``: the debounced status alone, retained, for other consumers
- ``<base>/availability``: ``online`` from the first decision on; ``offline`` on a clean stop and as
  the last will, so a restarted monitor never shows a dead run's state as current. A running
  monitor that sees ``offline`` there (a twin under the same id stopping or dying) says ``online``
  again at once.
- ``<base>/instances``: each monitor announces itself here, so two monitors under one id are seen
- ``<base>/stats``: with a history, each appliance's statistics and each alarm's state
- ``homeassistant/.../config``: one device named after the monitor, with an enum sensor and, per
  appliance of the bundle, a running binary sensor (``sensor.<name>_state``,
  ``binary_sensor.<name>_ac_running``, ``binary_sensor.<name>_dehumidifier_running``, ...) and with
  a history its statistics (duty cycle, run-time, cycles, energy) and alarms. The seed's entities
  (the AC and the fridge) keep their names and ids. An entity of this device that the monitor no
  longer has (an appliance gone from the bundle, an alarm dropped) is removed when it connects.

The broker being down never stops the monitor: paho reconnects in its own thread with backoff
(logged, with each delay); nothing is queued, only the latest line is kept and sent on reconnect.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import json
import logging
import os
import re
import secrets
import socket
import threading
import time
import unicodedata
import urllib.parse

import paho.mqtt.client as mqtt

from edge.core.labels import SEED, Appliances
from edge.core.redact import redact
from edge.monitor.hop import HopLine

log = logging.getLogger("humwatch.mqtt")
DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}
BACKOFF_SEC = (1, 60)
MAX_NAME = 40  # characters of a name-derived topic id and of the device name Home Assistant sees
DEVICE_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")  # a topic level and Home Assistant's node id allow these


def slug(name: str) -> str:
    """'Kitchen fridge' -> 'kitchen_fridge': how Home Assistant turns a name into an entity id."""
    value = re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")
    if not value:
        raise ValueError(f"--name {name!r}: needs at least one letter or digit")
    return value


def shorten(text: str, separator: str) -> str:
    """`text` if it fits in MAX_NAME characters, else its beginning + a hash of the whole: bounded,
    and two long names that share a beginning still differ."""
    if len(text) <= MAX_NAME:
        return text
    digest = hashlib.sha256(text.encode()).hexdigest()[:6]
    head = text[:MAX_NAME - 1 - len(digest)]
    if separator in head[len(head) // 2:]:  # cut between words where one ends in the second half
        head = head[:head.rindex(separator)]
    return f"{head.rstrip(separator)}{separator}{digest}"


@dataclasses.dataclass(frozen=True)
class MqttSettings:
    host: str
    port: int
    tls: bool
    username: str | None = None
    password: str | None = dataclasses.field(default=None, repr=False)  # never printed
    name: str = "humwatch"
    device_id: str | None = None  # topic id; default: the name's slug (shortened)
    discovery_prefix: str = "homeassistant"
    heartbeat_sec: float = 60.0

    def __post_init__(self) -> None:
        """Refuse at start what a broker or Home Assistant would refuse on every reconnect."""
        if any(unicodedata.category(character) == "Cc" for character in self.name):
            raise ValueError(f"--name {self.name!r}: control characters are not allowed; use a plain name such as Kitchen")
        if self.device_id is not None and not DEVICE_ID.fullmatch(self.device_id):
            raise ValueError(f"--mqtt-device-id {self.device_id!r}: use 1 to 64 letters, digits, '_' or '-' (it is a "
                             "topic level, humwatch/<id>/..., and Home Assistant's node id; '/', '#', '+', spaces and "
                             "control characters break both), e.g. --mqtt-device-id kitchen")
        if self.device_id is None:
            slug(self.name)  # a name without a letter or digit is refused here, not on the first publish

    @classmethod
    def from_url(cls, url: str, **options) -> MqttSettings:
        try:
            parsed = urllib.parse.urlsplit(url)
            port = parsed.port
        except ValueError:  # a port that is no number (its text perhaps a password's), an unclosed [
            parsed = None
        # An '@' after the host: a '/', '?' or '#' in the password ended the host early; refused, never guessed at
        if parsed is None or parsed.scheme not in DEFAULT_PORTS or not parsed.hostname or "@" in url.partition(parsed.netloc)[2]:
            raise ValueError(f"--mqtt {redact(url)!r}: expected mqtt://HOST[:PORT] or mqtts://HOST[:PORT] (in a user "
                             "name or password, write / ? # as %2F %3F %23)")
        # Credentials may also sit in the URL (mqtt://user:password@host); options win.
        options["username"] = options.get("username") or (urllib.parse.unquote(parsed.username) if parsed.username else None)
        options["password"] = options.get("password") or (urllib.parse.unquote(parsed.password) if parsed.password else None)
        return cls(host=parsed.hostname, port=port or DEFAULT_PORTS[parsed.scheme], tls=parsed.scheme == "mqtts",
                   **options)

    @property
    def topic_id(self) -> str:
        return self.device_id or shorten(slug(self.name), "_")

    @property
    def device_name(self) -> str:
        """The device name Home Assistant shows and derives the entity ids from (bounded like the id)."""
        return shorten(self.name, " ")

    @property
    def base_topic(self) -> str:
        return f"humwatch/{self.topic_id}"

    @property
    def node(self) -> str:
        """The device's id in Home Assistant and its discovery topics' node level."""
        return f"humwatch_{self.topic_id}"


TITLES = {"ac": "AC"}  # how an entity name starts; other appliances: 'washing_machine' -> 'Washing machine'
ICONS = {"ac": "mdi:air-conditioner", "fridge": "mdi:fridge"}  # others: the device class's icon


def title(appliance: str) -> str:
    """The appliance as entity names start with it: 'ac' -> 'AC', 'fridge' -> 'Fridge'."""
    return TITLES.get(appliance) or appliance.replace("_", " ").capitalize()


def json_path(*keys: str) -> str:
    """A template's path into the message: value_json.ac.cycles_today, or value_json['2nd_fridge_running']
    where a key is no name Jinja reads after a dot (an alarm's '-', a leading digit)."""
    return "value_json" + "".join(f".{key}" if key.isidentifier() else f"['{key}']" for key in keys)


def discovery_messages(settings: MqttSettings, household=None, appliances: Appliances = SEED) -> dict[str, dict]:
    """Home Assistant discovery configs: topic -> payload. Entity ids follow from the device name
    and the entity names (has_entity_name), e.g. "Kitchen" + "State" -> sensor.kitchen_state."""
    base, node = settings.base_topic, settings.node
    device = {"identifiers": [node], "name": settings.device_name, "manufacturer": "humwatch",
              "model": "humwatch live monitor", "sw_version": importlib.metadata.version("humwatch")}
    attributes = f"{base}/attributes"
    common = {"availability_topic": f"{base}/availability", "device": device, "state_topic": attributes}
    messages = {
        f"{settings.discovery_prefix}/sensor/{node}/state/config": {
            **common, "name": "State", "unique_id": f"{node}_state", "value_template": "{{ value_json.debounced_status }}",
            "device_class": "enum", "options": list(appliances.statuses), "json_attributes_topic": attributes,
            "icon": "mdi:home-sound-in",
        },
    }
    for appliance in appliances.names:
        messages[f"{settings.discovery_prefix}/binary_sensor/{node}/{appliance}/config"] = {
            **common, "name": f"{title(appliance)} running", "unique_id": f"{node}_{appliance}",
            "value_template": f"{{{{ 'ON' if {json_path(f'{appliance}_running')} else 'OFF' }}}}",
            "device_class": "running", **({"icon": ICONS[appliance]} if appliance in ICONS else {}),
        }
    if household is not None:
        messages.update(stats_discovery(settings, common, node, appliances.names, household.watts,
                                        list(household.alarms.active)))
    return messages


# statistic -> (entity name suffix, unit, device_class, state_class): what Home Assistant's statistics
# and Energy dashboard accept (total_increasing resets to 0 at local midnight: a new cycle for HA)
STAT_ENTITIES = {
    "duty_cycle_pct": ("duty cycle", "%", None, "measurement"),
    "current_run_min": ("current run", "min", "duration", "measurement"),
    "runtime_today_h": ("run-time today", "h", "duration", "total_increasing"),
    "cycles_today": ("cycles today", None, None, "total_increasing"),
}
ENERGY_ENTITY = ("energy today", "kWh", "energy", "total_increasing")


def stats_discovery(settings: MqttSettings, common: dict, node: str, appliances: tuple[str, ...],
                    watts: dict[str, float], alarms: list[str]) -> dict:
    """Discovery of the history's entities: statistics per appliance, energy with watts, one problem
    binary sensor per alarm; all read `<base>/stats`."""
    stats = {**common, "state_topic": f"{settings.base_topic}/stats"}
    messages = {}
    for appliance in appliances:
        entities = dict(STAT_ENTITIES, **({"energy_today_kwh": ENERGY_ENTITY} if appliance in watts else {}))
        for key, (name, unit, device_class, state_class) in entities.items():
            config = {**stats, "name": f"{title(appliance)} {name}", "unique_id": f"{node}_{appliance}_{key}",
                      "value_template": f"{{{{ {json_path(appliance, key)} }}}}", "state_class": state_class}
            config.update({k: v for k, v in (("unit_of_measurement", unit), ("device_class", device_class)) if v})
            messages[f"{settings.discovery_prefix}/sensor/{node}/{appliance}_{key}/config"] = config
    for alarm in alarms:
        messages[f"{settings.discovery_prefix}/binary_sensor/{node}/{alarm}/config"] = {
            **stats, "name": f"Alarm {alarm}", "unique_id": f"{node}_alarm_{alarm}", "device_class": "problem",
            "value_template": f"{{{{ 'ON' if {json_path('alarms', alarm)} else 'OFF' }}}}",
        }
    return messages


def stats_payload(snapshot: dict) -> dict:
    """The `<base>/stats` message: per appliance of the snapshot the published statistics, and each
    alarm's state."""
    payload: dict = {"alarms": snapshot["alarms"]}
    for appliance, stats in snapshot.items():
        if appliance == "alarms":
            continue
        payload[appliance] = {
            "running": stats["running"],
            "duty_cycle_pct": round(100 * (stats["duty_24h"] or 0.0), 1),
            "duty_cycle_1h_pct": round(100 * (stats["duty_1h"] or 0.0), 1),
            "current_run_min": round(stats["current_sec"] / 60, 1) if stats["running"] else 0.0,
            "current_pause_min": round(stats["current_sec"] / 60, 1) if stats["running"] is False else 0.0,
            "runtime_today_h": round(stats["runtime_today_sec"] / 3600, 4),
            "cycles_today": stats["cycles_today"],
            "mean_cycle_24h_min": None if stats["mean_cycle_24h_sec"] is None else round(stats["mean_cycle_24h_sec"] / 60, 1),
            "longest_cycle_24h_min": None if stats["longest_cycle_24h_sec"] is None else round(stats["longest_cycle_24h_sec"] / 60, 1),
            "energy_today_kwh": None if stats["energy_today_kwh"] is None else round(stats["energy_today_kwh"], 4),
        }
    return payload


def attributes_payload(line: HopLine) -> dict:
    """The one JSON message every entity reads: the hop's JSON line less `changed` and `lag_sec`
    (no key Home Assistant reserves, such as `state` or `name`, so all of it shows as attributes)."""
    return {key: value for key, value in line.to_json().items() if key not in ("changed", "lag_sec")}


class MqttPublisher:
    """A live-line sink that publishes to an MQTT broker."""

    def __init__(self, settings: MqttSettings, clock=time.monotonic, household=None,
                 appliances: Appliances = SEED) -> None:
        self.settings = settings
        self.household = household  # with a history: statistics and alarms too
        self.clock = clock
        self.latest: HopLine | None = None
        self.rivals: dict[str, dict] = {}  # other monitors seen publishing under this id
        self._published: tuple | None = None
        self._last_publish = float("-inf")
        self._online = False  # 'online' sent on this connection
        self._closing = False
        self._delay: int | None = None  # paho's reconnect delay, mirrored: None until the first wait
        self._lock = threading.Lock()
        self.connected = threading.Event()
        base = settings.base_topic
        self.topics = {name: f"{base}/{name}" for name in ("state", "attributes", "availability", "instances", "stats")}
        self.discovery = discovery_messages(settings, household, appliances)  # topic -> config; the bundle's appliances
        self._own_configs = f"{settings.discovery_prefix}/+/{settings.node}/+/config"  # those left by earlier runs too
        host = socket.gethostname()
        self.instance = {"id": f"{host}-{os.getpid()}-{secrets.token_hex(3)}", "host": host, "pid": os.getpid(),
                         "name": settings.name}
        # id + host + pid + a random part: two monitors never share a client id, so the broker never
        # drops one for the other
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                                  client_id=f"humwatch-{settings.topic_id}-{self.instance['id']}")
        if settings.username:
            self.client.username_pw_set(settings.username, settings.password)
        if settings.tls:
            self.client.tls_set()
        self.client.will_set(self.topics["availability"], "offline", qos=1, retain=True)
        self.client.reconnect_delay_set(*BACKOFF_SEC)
        self.client.max_queued_messages_set(64)  # a safety bound; nothing is published while disconnected
        self.client.on_connect = self._on_connect
        self.client.on_connect_fail = self._on_connect_fail
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message

    def start(self) -> None:
        log.info("MQTT: connecting to %s:%d%s as %r (topics %s/...)", self.settings.host, self.settings.port,
                 " (TLS)" if self.settings.tls else "", self.settings.name, self.settings.base_topic)
        self.client.connect_async(self.settings.host, self.settings.port, keepalive=30)
        self.client.loop_start()

    def close(self) -> None:
        """Clean shutdown: say offline, then disconnect (the last will covers a crash). `_closing` is
        set first, so this monitor never answers its own 'offline' with 'online'."""
        with self._lock:
            self._closing = True
        if self.connected.is_set():
            self.client.publish(self.topics["availability"], "offline", qos=1, retain=True).wait_for_publish(2)
        self.client.disconnect()
        self.client.loop_stop()

    def _next_delay(self) -> int:
        """The delay paho waits next. paho waits once after each failed try (on_connect_fail) and
        each lost or refused connection (on_disconnect), doubling from 1 s to 60 s, and starts
        again at 1 s after a successful connection: the same steps here."""
        self._delay = BACKOFF_SEC[0] if self._delay is None else min(self._delay * 2, BACKOFF_SEC[1])
        return self._delay

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:  # the broker closes the connection next: on_disconnect logs the delay
            log.warning("MQTT: broker %s:%d refused the connection (%s); check --mqtt-user / --mqtt-password",
                        self.settings.host, self.settings.port, reason_code)
            return
        self._delay = None
        log.info("MQTT: connected to %s:%d", self.settings.host, self.settings.port)
        client.subscribe([(self.topics["instances"], 1), (self.topics["availability"], 1), (self._own_configs, 1)])
        for topic, payload in self.discovery.items():
            client.publish(topic, json.dumps(payload), qos=1, retain=True)
        self._announce()
        self.connected.set()
        with self._lock:
            self._online = False
            if self.latest is not None:
                self._publish(self.latest)

    def _on_connect_fail(self, client, userdata) -> None:
        log.warning("MQTT: cannot reach the broker at %s:%d; the monitor keeps deciding; retrying in %d s",
                    self.settings.host, self.settings.port, self._next_delay())

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self.connected.clear()
        if self._closing:
            log.info("MQTT: disconnected: the monitor stopped")
            return
        log.warning("MQTT: disconnected (%s); the monitor keeps deciding, reconnecting in %d s with backoff and "
                    "keeping only the latest state to send", reason_code, self._next_delay())

    def _announce(self) -> None:
        self.client.publish(self.topics["instances"], json.dumps(self.instance), qos=1)

    def _on_message(self, client, userdata, message) -> None:
        if message.topic == self.topics["availability"]:
            self._stay_online(message)
        elif message.topic == self.topics["instances"]:  # a broker may also send retained messages of other topics
            self._note_rival(message.payload)
        elif mqtt.topic_matches_sub(self._own_configs, message.topic):
            self._remove_stale(message)

    def _remove_stale(self, message) -> None:
        """A retained config of this device that this monitor does not publish (an earlier run's, for
        an appliance no longer in the bundle or an alarm no longer set): emptied, so Home Assistant
        removes the entity instead of showing it stale."""
        if message.retain and message.payload and message.topic not in self.discovery:
            log.info("MQTT: removing %s: this monitor no longer has that entity", message.topic)
            self.client.publish(message.topic, b"", qos=1, retain=True)

    def _stay_online(self, message) -> None:
        """'offline' on this id's availability while this monitor runs (a twin under the same id
        stopping, or its last will): say 'online' again at once, with this monitor's latest state.
        A retained 'offline' is what the broker held when this connection subscribed: the 'online'
        this monitor sends with its next decision replaces it anyway."""
        if message.payload != b"offline" or message.retain:
            return
        with self._lock:
            if self._closing or not self._online or self.latest is None:
                return
            log.warning("MQTT: another client set %s offline (a monitor under the same id stopped or died); this "
                        "monitor runs, so it says online again", self.topics["availability"])
            self._online = False
            self._publish(self.latest)

    def _note_rival(self, payload: bytes) -> None:
        try:
            other = json.loads(payload)
        except ValueError:
            return
        if (not isinstance(other, dict) or not isinstance(other.get("id"), str)
                or other["id"] in (self.instance["id"], *self.rivals)):
            return
        self.rivals[other["id"]] = other
        log.warning("MQTT: another monitor publishes under %s: %r on host %s (pid %s); this one is %r on host %s "
                    "(pid %s). They overwrite each other's state: give each its own --name.",
                    self.settings.base_topic, other.get("name"), other.get("host"), other.get("pid"),
                    self.settings.name, self.instance["host"], self.instance["pid"])

    def __call__(self, line: HopLine) -> None:
        """Publish on a change of state or detectors, and at the heartbeat; otherwise just remember."""
        with self._lock:
            self.latest = line
            key = self._key(line)
            due = self.clock() - self._last_publish >= self.settings.heartbeat_sec
            if self.connected.is_set() and (key != self._published or due):
                if due:
                    self._announce()
                self._publish(line)

    def _publish(self, line: HopLine) -> None:
        self.client.publish(self.topics["attributes"], json.dumps(attributes_payload(line)), qos=1, retain=True)
        self.client.publish(self.topics["state"], line.debounced_status, qos=1, retain=True)
        if not self._online:  # only now: Home Assistant never shows a dead run's state as current
            self.client.publish(self.topics["availability"], "online", qos=1, retain=True)
            self._online = True
        if self.household is not None:
            self.client.publish(self.topics["stats"], json.dumps(stats_payload(self.household.snapshot())), qos=1, retain=True)
        self._published = self._key(line)
        self._last_publish = self.clock()

    def _key(self, line: HopLine) -> tuple:
        """What, when it changes, is published at once (else at the heartbeat)."""
        alarms = tuple(self.household.alarms.active.values()) if self.household is not None else ()
        return (line.debounced_status, tuple(line.running.items()), tuple(line.on.items()), alarms)
