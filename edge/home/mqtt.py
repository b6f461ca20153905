"""Home Assistant over MQTT: discovery, retained state, attributes, input health, availability with last will.

Topics (``<base>`` = ``humwatch/<device_id>``, the id defaulting to the monitor's name as a slug,
a long one cut to 40 characters with a hash of the whole):
- ``<base>/attributes``: the last decided hop's JSON line (``debounced_status``, ``<appliance>_running``
  for each appliance, the raw detectors and probabilities; retained). The state and every running
  entity read this one message, so they agree at every moment.
- ``<base>/state``: the debounced status alone, retained, for other consumers; while the hops decide
  nothing, why (``no-signal``, ``no-audio``)
- ``<base>/input``: what the input gives, retained: ``{"state": "ok"}`` while the hops decide, else
  ``{"state": "no-signal" | "no-audio", "reason": ..., "since": ...}``. The state and running entities
  are available only while it says ok (a second availability topic, ``availability_mode: all``),
  so Home Assistant shows them unavailable within one hop of a silent input and within the stall
  timeout (10 s) of a lost one, and the "Input" problem sensor says why. They also expire
  (``expire_after``: three heartbeats) should the monitor hang with its connection up.
- ``<base>/availability``: ``online`` from the first hop on; ``offline`` on a clean stop and as
  the last will, so a restarted monitor never shows a dead run's state as current. A running
  monitor that sees ``offline`` there (a twin under the same id stopping or dying) says ``online``
  again at once.
- ``<base>/instances``: each monitor says hello here when it connects (and at each heartbeat), and
  those running answer: the first to have started holds the id. One that finds an older monitor
  alive there publishes nothing at all under the id (no discovery, no removal, no state), says so
  in its log and /healthz, and takes over only once that monitor says offline.
- ``<base>/stats``: with a history, each appliance's statistics and each alarm's state
- ``homeassistant/.../config``: one device named after the monitor, with an enum sensor and, per
  appliance of the bundle, a running binary sensor (``sensor.<name>_state``,
  ``binary_sensor.<name>_ac_running``, ``binary_sensor.<name>_dehumidifier_running``, ...), the
  input's problem sensor (``binary_sensor.<name>_input``) and with a history its statistics (duty
  cycle, run-time, cycles, energy) and alarms. The seed's entities (the AC and the fridge) keep
  their names and ids. Once it holds the id, a monitor removes the entities of this device that
  it no longer has (an appliance gone from the bundle, an alarm dropped). When Home Assistant
  comes online (its birth message on ``homeassistant/status``) every config and state is sent again.

The broker being down never stops the monitor: paho reconnects in its own thread with backoff
(logged, with each delay). Nothing is queued: states go out at QoS 0, so a reconnection never
replays old ones, and the first state sent after it is the current one.
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

from edge.core.labels import SEED, Appliances
from edge.core.redact import redact
from edge.engine.hop import HopLine
from edge.home.household import HouseholdSnapshot

log = logging.getLogger("humwatch.mqtt")
DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}
BACKOFF_SEC = (1, 60)
TWIN_WAIT_SEC = 1.0  # after connecting, how long a monitor listens for another one alive on its id (answers take ms)
EXPIRE_HEARTBEATS = 3  # the state and running entities expire after this many heartbeats without a message
INPUT_OK = "ok"  # the input topic's state while the hops decide
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
    attributes, device_available = f"{base}/attributes", {"topic": f"{base}/availability"}
    common = {"availability": [device_available], "device": device, "state_topic": attributes}
    heard = {**common, "availability": [device_available, {"topic": f"{base}/input", "value_template":
                                                          f"{{{{ 'online' if value_json.state == '{INPUT_OK}' else 'offline' }}}}"}],
             "availability_mode": "all", "expire_after": round(EXPIRE_HEARTBEATS * settings.heartbeat_sec)}
    messages = {
        f"{settings.discovery_prefix}/sensor/{node}/state/config": {
            **heard, "name": "State", "unique_id": f"{node}_state", "value_template": "{{ value_json.debounced_status }}",
            "device_class": "enum", "options": list(appliances.statuses), "json_attributes_topic": attributes,
            "icon": "mdi:home-sound-in",
        },
        # '-' is in no appliance's name: this topic and id never meet an appliance's
        f"{settings.discovery_prefix}/binary_sensor/{node}/input-health/config": {
            **common, "state_topic": f"{base}/input", "name": "Input", "unique_id": f"{node}_input-health",
            "device_class": "problem", "entity_category": "diagnostic", "json_attributes_topic": f"{base}/input",
            "value_template": f"{{{{ 'OFF' if value_json.state == '{INPUT_OK}' else 'ON' }}}}",
        },
    }
    for appliance in appliances.names:
        messages[f"{settings.discovery_prefix}/binary_sensor/{node}/{appliance}/config"] = {
            **heard, "name": f"{title(appliance)} running", "unique_id": f"{node}_{appliance}",
            "value_template": f"{{{{ 'ON' if {json_path(f'{appliance}_running')} else 'OFF' }}}}",
            "device_class": "running", **({"icon": ICONS[appliance]} if appliance in ICONS else {}),
        }
    if household is not None:
        messages.update(stats_discovery(settings, common, node, appliances.names, household.watts,
                                        list(household.alarms.active)))
    return messages


def input_payload(line: HopLine, since: float) -> dict:
    """The `<base>/input` message for a hop: ok while it decided, else why not and since when."""
    if line.decided:
        return {"state": INPUT_OK}
    return {"state": line.status, "reason": line.reason,
            "since": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(since))}


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


def stats_payload(snapshot: HouseholdSnapshot) -> dict:
    """The `<base>/stats` message: each alarm's state, and per appliance the published statistics (an
    appliance may not be named "alarms": labels.RESERVED_NAMES)."""
    def minutes(seconds: float | None) -> float | None:
        return None if seconds is None else round(seconds / 60, 1)

    payload: dict = {"alarms": dict(snapshot.alarms)}
    for appliance, stats in snapshot.appliances.items():
        payload[appliance] = {
            "running": stats.running,
            "duty_cycle_pct": round(100 * (stats.duty_24h or 0.0), 1),
            "duty_cycle_1h_pct": round(100 * (stats.duty_1h or 0.0), 1),
            "current_run_min": minutes(stats.current_sec) if stats.running else 0.0,
            "current_pause_min": minutes(stats.current_sec) if stats.running is False else 0.0,
            "runtime_today_h": round(stats.runtime_today_sec / 3600, 4),
            "cycles_today": stats.cycles_today,
            "mean_cycle_24h_min": minutes(stats.mean_cycle_24h_sec),
            "longest_cycle_24h_min": minutes(stats.longest_cycle_24h_sec),
            "energy_today_kwh": None if stats.energy_today_kwh is None else round(stats.energy_today_kwh, 4),
        }
    return payload


def attributes_payload(line: HopLine) -> dict:
    """The one JSON message every entity reads: the hop's JSON line less `changed` and `lag_sec`
    (no key Home Assistant reserves, such as `state` or `name`, so all of it shows as attributes)."""
    return {key: value for key, value in line.to_json().items() if key not in ("changed", "lag_sec")}


class IdTaken(ValueError):
    """Another monitor, started earlier, runs under this monitor's MQTT id: this one publishes nothing there."""


class MqttPublisher:
    """A live-line sink that publishes to an MQTT broker (see the module's docstring for the topics
    and the rule between two monitors on one id)."""

    def __init__(self, settings: MqttSettings, clock=time.monotonic, household=None,
                 appliances: Appliances = SEED, twin_wait_sec: float = TWIN_WAIT_SEC) -> None:
        self.settings = settings
        self.household = household  # with a history: statistics and alarms too
        self.clock = clock
        self.twin_wait_sec = twin_wait_sec
        self.latest: HopLine | None = None  # the last hop's line
        self.rivals: dict[str, dict] = {}  # other monitors seen under this id
        self.holder: dict | None = None  # the older monitor holding this id: this one then publishes nothing
        self._connection = 0  # counts connections: a claim's timer belongs to one
        self._stale: set[str] = set()  # retained configs of this device seen on connecting that it does not publish
        self._published: tuple | None = None
        self._last_publish = float("-inf")
        self._heard, self._input_since = INPUT_OK, time.time()  # what the input gives, since when
        self._online = False  # 'online' sent on this connection
        self._closing = False
        self._delay: int | None = None  # paho's reconnect delay, mirrored: None until the first wait
        self._lock = threading.RLock()
        self.connected = threading.Event()
        self.holding = threading.Event()  # this connection holds the id: its discovery is published
        base = settings.base_topic
        self.topics = {name: f"{base}/{name}" for name in ("state", "attributes", "availability", "instances", "stats",
                                                           "input")}
        self.birth_topic = f"{settings.discovery_prefix}/status"  # Home Assistant's birth and last will
        self.discovery = discovery_messages(settings, household, appliances)  # topic -> config; the bundle's appliances
        self._own_configs = f"{settings.discovery_prefix}/+/{settings.node}/+/config"  # those left by earlier runs too
        host = socket.gethostname()
        self.instance = {"id": f"{host}-{os.getpid()}-{secrets.token_hex(3)}", "host": host, "pid": os.getpid(),
                         "name": settings.name, "started": time.time()}
        import paho.mqtt.client as mqtt  # here: a monitor without --mqtt never loads paho (~8 MB)

        self._matches = mqtt.topic_matches_sub
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
        """Clean shutdown: say offline (only if this monitor holds the id), then disconnect (the last
        will covers a crash). `_closing` is set first, so this monitor never answers its own
        'offline' with 'online'."""
        with self._lock:
            self._closing = True
            holding = self.holding.is_set()
        if self.connected.is_set() and holding:
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
        with self._lock:
            self._connection += 1
            self._online = False
            self.holding.clear()
            self.holder, self._stale = None, set()
            self.connected.set()
        client.subscribe([(self.topics["instances"], 1), (self.topics["availability"], 1), (self._own_configs, 1),
                          (self.birth_topic, 1)])
        self._ask_for_the_id()

    def _ask_for_the_id(self) -> None:
        """Say hello on the instances topic, and claim the id after `twin_wait_sec` unless an older
        monitor answered meanwhile."""
        self._announce("hello")
        timer = threading.Timer(self.twin_wait_sec, self._claim, args=(self._connection,))
        timer.daemon = True
        timer.start()

    def _claim(self, connection: int) -> None:
        """Hold the id: publish every config, remove this device's stale ones, send the latest state."""
        with self._lock:
            if connection != self._connection or not self.connected.is_set() or self._closing or self.holder is not None:
                return
            self.holding.set()
            self._publish_everything()
            for topic in sorted(self._stale - set(self.discovery)):
                log.info("MQTT: removing %s: this monitor no longer has that entity", topic)
                self.client.publish(topic, b"", qos=1, retain=True)
            self._stale.clear()

    def _publish_everything(self) -> None:
        """Every config, then the latest state as new (on claiming the id, and when Home Assistant comes online)."""
        for topic, payload in self.discovery.items():
            self.client.publish(topic, json.dumps(payload), qos=1, retain=True)
        self._online, self._published = False, None
        if self.latest is not None:
            self._publish(self.latest)

    def set_appliances(self, appliances: Appliances) -> None:
        """Another bundle decides (a push or a rollback): its appliances' entities appear, a dropped
        one's are removed, the others stay as they are (the same ids)."""
        with self._lock:
            before, self.discovery = self.discovery, discovery_messages(self.settings, self.household, appliances)
            if not (self.holding.is_set() and self.connected.is_set()):
                return  # claiming the id publishes the new configs and removes the stale ones
            for topic in sorted(set(before) - set(self.discovery)):
                log.info("MQTT: removing %s: the new bundle has no such appliance", topic)
                self.client.publish(topic, b"", qos=1, retain=True)
            for topic, payload in self.discovery.items():
                if before.get(topic) != payload:
                    self.client.publish(topic, json.dumps(payload), qos=1, retain=True)

    def _on_connect_fail(self, client, userdata) -> None:
        log.warning("MQTT: cannot reach the broker at %s:%d; the monitor keeps deciding; retrying in %d s",
                    self.settings.host, self.settings.port, self._next_delay())

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self.connected.clear()
        self.holding.clear()
        if self._closing:
            log.info("MQTT: disconnected: the monitor stopped")
            return
        log.warning("MQTT: disconnected (%s); the monitor keeps deciding, reconnecting in %d s with backoff and "
                    "keeping only the latest state to send", reason_code, self._next_delay())

    def _announce(self, kind: str) -> None:
        self.client.publish(self.topics["instances"], json.dumps({**self.instance, "kind": kind}), qos=1)

    def _on_message(self, client, userdata, message) -> None:
        if message.topic == self.topics["availability"]:
            self._on_availability(message)
        elif message.topic == self.topics["instances"]:  # a broker may also send retained messages of other topics
            self._on_instance(message.payload)
        elif message.topic == self.birth_topic:
            self._on_home_assistant(message.payload)
        elif self._matches(self._own_configs, message.topic):
            if message.retain and message.payload and message.topic not in self.discovery:
                with self._lock:
                    self._stale.add(message.topic)  # removed when this monitor claims the id, never before

    def _on_home_assistant(self, payload: bytes) -> None:
        """Home Assistant (re)started: send every config and the current state again."""
        with self._lock:
            if payload == b"online" and self.holding.is_set() and not self._closing:
                log.info("MQTT: Home Assistant came online: sending the discovery and the state again")
                self._publish_everything()

    def _on_availability(self, message) -> None:
        """'offline' on this id's availability while this monitor runs: from a twin stopping or dying
        (say 'online' again at once, with this monitor's latest state), or from the monitor this one
        gave way to (ask for the id again). A retained 'offline' is what the broker held when this
        connection subscribed: the 'online' this monitor sends with its next hop replaces it anyway."""
        if message.payload != b"offline" or message.retain:
            return
        with self._lock:
            if self._closing:
                return
            if self.holder is not None:
                log.warning("MQTT: %s said offline: asking for the id again", _who(self.holder))
                self.holder = None
                self._ask_for_the_id()
            elif self.holding.is_set() and self._online and self.latest is not None:
                log.warning("MQTT: another client set %s offline (a monitor under the same id stopped or died); this "
                            "monitor runs, so it says online again", self.topics["availability"])
                self._online = False
                self._publish(self.latest)

    def _on_instance(self, payload: bytes) -> None:
        """Another monitor's hello or answer: the one started first holds the id; the other gives way."""
        try:
            other = json.loads(payload)
        except ValueError:
            return
        if (not isinstance(other, dict) or not isinstance(other.get("id"), str) or other["id"] == self.instance["id"]
                or not isinstance(other.get("started"), (int, float)) or isinstance(other.get("started"), bool)):
            return
        with self._lock:
            if other["id"] not in self.rivals:
                log.warning("MQTT: another monitor is on %s: %s; this one is %s", self.settings.base_topic, _who(other),
                            _who(self.instance))
            self.rivals[other["id"]] = other
            if (other["started"], other["id"]) < (self.instance["started"], self.instance["id"]):
                if self.holder is None:
                    log.error("MQTT: %s holds %s, started before this one: this monitor publishes nothing there (its "
                              "entities stay that monitor's). Give this one its own --name (or --mqtt-device-id), or "
                              "stop the other.", _who(other), self.settings.base_topic)
                self.holder = other
                self.holding.clear()
            elif other.get("kind") == "hello" and self.connected.is_set():
                self._announce("here")  # the newcomer learns that this monitor holds the id

    def __call__(self, line: HopLine) -> None:
        """Publish on a change of state, detectors or input, and at the heartbeat; otherwise just
        remember. While another monitor holds the id, publish nothing and say so (IdTaken)."""
        with self._lock:
            heard = INPUT_OK if line.decided else line.status
            if heard != self._heard:
                self._heard, self._input_since = heard, time.time()
            self.latest = line
            if self.holder is not None:
                raise IdTaken(f"MQTT: {_who(self.holder)} holds {self.settings.base_topic}; this monitor publishes "
                              "nothing there: give it its own --name or --mqtt-device-id, or stop the other")
            due = self.clock() - self._last_publish >= self.settings.heartbeat_sec
            if self.holding.is_set() and self.connected.is_set() and (self._key(line) != self._published or due):
                if due:
                    self._announce("heartbeat")
                self._publish(line)

    def _publish(self, line: HopLine) -> None:
        """The hop's messages. Home Assistant sees the input's state change last when it comes back
        (the fresh state first) and first when it goes (the entities go unavailable before the state
        topic says why). States go at QoS 0: after a reconnection none is replayed."""
        send = self.client.publish
        heard = json.dumps(input_payload(line, self._input_since))
        if line.decided:
            send(self.topics["attributes"], json.dumps(attributes_payload(line)), qos=0, retain=True)
            send(self.topics["state"], line.debounced_status, qos=0, retain=True)
            send(self.topics["input"], heard, qos=0, retain=True)
        else:
            send(self.topics["input"], heard, qos=0, retain=True)
            send(self.topics["state"], line.status, qos=0, retain=True)
        if not self._online:  # only now: Home Assistant never shows a dead run's state as current
            send(self.topics["availability"], "online", qos=1, retain=True)
            self._online = True
        if self.household is not None:
            send(self.topics["stats"], json.dumps(stats_payload(self.household.snapshot())), qos=0, retain=True)
        self._published = self._key(line)
        self._last_publish = self.clock()

    def _key(self, line: HopLine) -> tuple:
        """What, when it changes, is published at once (else at the heartbeat)."""
        alarms = tuple(self.household.alarms.active.values()) if self.household is not None else ()
        return (line.debounced_status, tuple(line.running.items()), tuple(line.on.items()), alarms)


def _who(instance: dict) -> str:
    """Another monitor in words: its name, host, pid and start."""
    started = instance.get("started")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)) if isinstance(started, (int, float)) else "?"
    return (f"the monitor {str(instance.get('name'))[:60]!r} on host {str(instance.get('host'))[:60]} "
            f"(pid {str(instance.get('pid'))[:12]}, started {when})")
