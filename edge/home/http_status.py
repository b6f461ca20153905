"""A small HTTP server for the live monitor (standard library only).

GET  /              the page (edge.home.page): state, last hour, 24-h timeline, clips
GET  /favicon.svg   the page's icon (also at /favicon.ico, and under each monitor's path)
GET  /api/page      what the page shows, as JSON
GET  /clips/NAME    a clip's FLAC
POST /api/relabel   {"clip", a boolean per appliance ("ac", "fridge", ...), "daypart"}
POST /api/record    {a boolean per appliance, "daypart", "seconds"}: record a sample from the input
POST /api/recordings/delete  {"name"}: delete a recording
GET  /api/samples   the relabel folder's samples (recordings and relabelled clips), sha256, pulled or not
GET  /samples/NAME  a sample's FLAC (a Range request resumes)
POST /api/samples/pulled  {"pulled": {NAME: SHA256}}: what 'humwatch pull' fetched and checked
                    (the writes: JSON only, from the page's own origin; off loopback with the token)
GET  /api/bundle    the bundle that runs and the one a rollback restores        } with [deploy] dir: always
POST /api/bundle    a pushed bundle (a tar, 'humwatch push'): verified, swapped } the token, on loopback
POST /api/bundle/rollback  back to the previous bundle                          } too (see edge.monitor.deploy)
GET  /api/bundle/current.tar  the running bundle, for 'humwatch judge'          }
GET  /api/monitors  the monitors of the process: [{"id", "name"}] (id null: the only one, at /)
GET  /state         the last JSON line (503 before the first decision)
GET  /healthz       200 while audio arrives and inference keeps up, else 503 with the reason
GET  /metrics       Prometheus text format: inference time histogram, overflows, drops, device
                    losses, the state as a gauge, probabilities, uptime (a series per appliance
                    of the bundle, labelled label= or appliance=)

With several monitors in one process (a settings file's [[monitor]] tables), / is an index of
them and each one's page and endpoints are under /monitor/<id>/ (its MQTT id); /state and
/healthz cover them all (the reason names each monitor not healthy), and every /metrics series
is labelled monitor="<name>".

Reads are open to whoever reaches the server; it listens on loopback unless told otherwise. No
other web page may use the user's browser to read or write: every request's Host must be an IP
address, localhost, the listen address or a name allowed with --http-host (a DNS-rebinding page
names its own host), and a write must be JSON (a cross-origin JSON POST needs a CORS preflight,
which is never granted) with no foreign Origin or Sec-Fetch-Site.

The server is bounded, so no client can take what the monitor needs: at most
:func:`connection_cap` connections at once (a share of the open-file limit, so the history,
--output and clips stay writable), each in its own thread; one more is answered 503 at once, with
no thread. A connection's whole request must arrive within REQUEST_SEC (a client that sends a
byte now and then cannot stretch it) and each answer is written within ANSWER_SEC; bodies are
bounded. Any request gets an answer, a failure a 500 naming the log. Each kind of failure is one
log line at most every FAILURE_LOG_SEC: a client's own (a reset, a hang-up, a timeout) and a
refusal a short line, never a traceback; the monitor's own failure with its traceback.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import hmac
import html
import io
import ipaddress
import json
import logging
import os
import re
import resource
import socket
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from edge.core.bundle_archive import pack_bundle
from edge.core.hearing import UNDECIDED
from edge.core.labels import Appliances
from edge.core.proc import memory_mb, own_cpu_sec
from edge.engine.hop import HopLine
from edge.home.household import HouseholdSnapshot
from edge.home.page import Page, Refused, clip_path, favicon, page_html, parse_body, parse_record, parse_relabel

log = logging.getLogger("humwatch.http")
INFER_BUCKETS_SEC = (0.05, 0.1, 0.25, 0.5, 1.0, 1.5, 2.5, 5.0, 10.0)
MAX_BODY_BYTES = 4096
REQUEST_SEC = 10.0  # a connection's whole request (line, headers, body) arrives within this
ANSWER_SEC = 30.0  # writing an answer (the page, a clip) to a slow reader
MAX_CONNECTIONS = 64  # at once, whatever the open-file limit
FILES_PER_CONNECTION = 4  # its socket, a history read (the database and its WAL), a clip
FAILURE_LOG_SEC = 60.0  # one log line per kind of failure at most this often
TOKEN_HEADER = "X-Humwatch-Token"
HOST = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[0-9A-Za-z.-]+)(?::\d{1,5})?")  # a Host header: name or [IPv6], port
WRITING_SITES = (None, "same-origin", "none")  # Sec-Fetch-Site of the page itself, or not a browser
MONITOR_PATH = re.compile(r"/monitor/[^/]+")  # a monitor's page without its final slash
DEPLOY_PATHS = ("/api/bundle", "/api/bundle/rollback", "/api/bundle/current.tar")  # the process's: its monitors share one model
UPLOAD_BYTES_PER_SEC = 256_000  # a push's body may take REQUEST_SEC plus its size at this rate to arrive
ARCHIVE_OVERHEAD_BYTES = 1 << 20  # a tar's headers and padding around a bundle's files
DRAIN_BYTES = 16 << 20  # of a refused push's body, read and dropped so that the client reads the refusal


def connection_cap(open_files: int | None = None) -> int:
    """Connections served at once: a quarter of the open-file limit (soft RLIMIT_NOFILE, `ulimit -n`)
    at FILES_PER_CONNECTION each, at most MAX_CONNECTIONS, at least 1; the other three quarters
    are the monitor's own (the model, history, --output, clips, MQTT)."""
    if open_files is None:
        open_files = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if open_files == resource.RLIM_INFINITY:
        return MAX_CONNECTIONS
    return max(1, min(MAX_CONNECTIONS, open_files // 4 // FILES_PER_CONNECTION))


class FailureLog:
    """One log line per kind of failure at most every `every_sec`, saying how many it held back (a
    warning; an error with its traceback when given `exc_info`)."""

    def __init__(self, every_sec: float = FAILURE_LOG_SEC, clock=time.monotonic) -> None:
        self.every_sec, self.clock = every_sec, clock
        self._next: dict[str, float] = {}  # kind -> when its next line may be logged
        self._held: dict[str, int] = {}
        self._lock = threading.Lock()

    def note(self, kind: str, text: str, exc_info=None) -> None:
        with self._lock:
            now = self.clock()
            if now < self._next.get(kind, now):
                self._held[kind] = self._held.get(kind, 0) + 1
                return
            self._next[kind] = now + self.every_sec
            held = self._held.pop(kind, 0)
        log.log(logging.ERROR if exc_info else logging.WARNING, "HTTP: %s%s", text,
                f" ({held} more since the last such line)" if held else "", exc_info=exc_info)


class _Server(ThreadingHTTPServer):
    """At most `cap` connections at once, a thread each; one more is answered 503 at once, without
    a thread, and closed. Failures are noted in `failures` (a client's own: one short line)."""

    daemon_threads = True  # closing never waits for a client: a stop is prompt
    request_queue_size = MAX_CONNECTIONS  # the listen backlog: a burst waits to be served or refused, not dropped

    def __init__(self, address: tuple[str, int], handler, cap: int) -> None:
        self.cap, self.failures = cap, FailureLog()
        self._slots = threading.BoundedSemaphore(cap)
        super().__init__(address, handler)

    def process_request(self, request, client_address) -> None:
        if not self._slots.acquire(blocking=False):
            self.failures.note("busy", f"{self.cap} connections at once is the limit (a quarter of the open-file "
                                       "limit, ulimit -n); one more was answered 503")
            self._busy(request)
            return
        try:
            super().process_request(request, client_address)  # its thread
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def _busy(self, request: socket.socket) -> None:
        """503 without waiting on the client (what it sent is read first, so closing is not a reset)."""
        body = json.dumps({"error": f"busy: {self.cap} connections at once is this monitor's limit; try again"}).encode()
        request.setblocking(False)
        with contextlib.suppress(OSError):
            request.recv(MAX_BODY_BYTES)
        with contextlib.suppress(OSError):
            request.send(b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
                         b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        self.shutdown_request(request)

    def handle_error(self, request, client_address) -> None:
        """A connection's failure: the client's own one short line, anything else with its traceback."""
        error = sys.exc_info()[1]
        if isinstance(error, (ConnectionError, TimeoutError)):
            self.client_failed(error)
        else:
            self.failures.note(type(error).__name__, f"a connection failed: {type(error).__name__}", exc_info=error)

    def client_failed(self, error: OSError) -> None:
        """A client's own failure (a reset, a hang-up, a timeout): one short line per kind."""
        kind = type(error).__name__
        self.failures.note(kind, f"a client's connection ended: {kind}: {error.strerror or error}")


class _Connection(io.RawIOBase):
    """A client's socket as its handler reads and writes it: the whole request must arrive within
    REQUEST_SEC of the connection, however the client spreads its bytes; each answer is written
    within ANSWER_SEC."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock, self.deadline = sock, time.monotonic() + REQUEST_SEC

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        left = self.deadline - time.monotonic()
        if left > 0:
            self.sock.settimeout(left)
            with contextlib.suppress(TimeoutError):
                return self.sock.recv_into(buffer)
        raise TimeoutError(f"no whole request within {REQUEST_SEC:g} s")

    def write(self, data) -> int:
        self.sock.settimeout(ANSWER_SEC)
        try:
            self.sock.sendall(data)
        except TimeoutError:
            raise TimeoutError(f"its answer not read within {ANSWER_SEC:g} s") from None
        return len(data)


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def host_name(header: str | None) -> str | None:
    """The host in a Host header ('pi.local:8321', '[::1]:8321'), lower case, without port,
    brackets or final dot; None when it is not one."""
    match = HOST.fullmatch(header or "")
    return match.group(1).strip("[]").rstrip(".").lower() if match else None


def allowed_hosts(listen_host: str, names: tuple[str, ...] | list[str]) -> frozenset[str]:
    """The names requests may be addressed to: localhost, the listen address and `names` (--http-host)."""
    allowed = {"localhost", listen_host.lower()}
    for name in names:
        if host_name(name) is None:
            raise ValueError(f"--http-host {name!r}: expected a host name such as pi.local (no scheme, no path)")
        allowed.add(host_name(name))
    return frozenset(allowed)


def is_ip_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return False


def pull_command(host: str, ident: str | None, loopback: bool) -> str:
    """The workstation's command that fetches a monitor's samples, at the address the browser reached (`host`,
    the request's checked Host header); off loopback it needs the token."""
    return " ".join(["humwatch pull", f"http://{host}/", *(["--monitor", ident] if ident is not None else []),
                     *([] if loopback else ["--token", "TOKEN"])])


def parse_listen(value: str) -> tuple[str, int]:
    """'PORT' or 'HOST:PORT' -> (host, port); a bare port listens on loopback only."""
    host, _, port = value.rpartition(":")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"--http {value!r}: expected PORT or HOST:PORT, e.g. 8321 or 0.0.0.0:8321")
    return host or "127.0.0.1", int(port)


class Histogram:
    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.buckets = buckets
        self.counts = [0] * len(buckets)
        self.total = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        for index, bound in enumerate(self.buckets):
            if value <= bound:
                self.counts[index] += 1
        self.total += value
        self.count += 1

    def samples(self) -> list[tuple[str, dict, str]]:
        rows = [("_bucket", {"le": str(bound)}, str(count)) for bound, count in zip(self.buckets, self.counts)]
        return rows + [("_bucket", {"le": "+Inf"}, str(self.count)), ("_sum", {}, f"{self.total:.6f}"),
                       ("_count", {}, str(self.count))]


@dataclasses.dataclass
class Family:
    """One Prometheus metric: its samples are (name suffix, labels, value)."""

    name: str
    kind: str
    help: str
    samples: list[tuple[str, dict, str]] = dataclasses.field(default_factory=list)


def label_text(labels: dict) -> str:
    escaped = {key: str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") for key, value in labels.items()}
    return "{" + ",".join(f'{key}="{value}"' for key, value in escaped.items()) + "}" if labels else ""


class View:
    """One monitor as the server shows it: a live-line sink feeding its page and inference histogram.
    `ident` is None for the only monitor of a process (served at /), else its id (at /monitor/<id>/)."""

    def __init__(self, monitor, household=None, page: Page | None = None, name: str | None = None,
                 ident: str | None = None) -> None:
        self.monitor, self.household, self.page, self.name, self.ident = monitor, household, page, name, ident
        self.started = time.monotonic()
        self.inference = Histogram(INFER_BUCKETS_SEC)
        self._lock = threading.Lock()

    def __call__(self, line: HopLine) -> None:
        if line.decided:
            with self._lock:
                self.inference.observe(line.infer_ms / 1000)
        if self.page is not None:
            self.page(line)

    def families(self) -> list[Family]:
        """/metrics of this monitor, unlabelled."""
        health, line = self.monitor.health(), self.monitor.last_line
        with self._lock:
            families = [Family("humwatch_inference_seconds", "histogram", "Inference time per window.",
                               self.inference.samples())]
        for name, text, value in (
            ("humwatch_input_overflows_total", "Audio input overflows reported by the device.", health.overflows),
            ("humwatch_dropped_audio_seconds_total", "Audio dropped because inference fell behind.", health.dropped_sec),
            ("humwatch_device_losses_total", "Times the audio device was lost and reopened.", health.device_losses),
        ):
            families.append(Family(name, "counter", text, [("", {}, str(value))]))
        appliances = self.monitor.detector.decision.appliances  # the bundle's, in its priority order
        current = line.debounced_status if line else None
        families.append(Family("humwatch_state", "gauge", "Debounced state (1 for the current one; none while the hops "
                               "decide nothing).",
                               [("", {"state": state}, str(int(state == current))) for state in appliances.statuses]))
        families.append(Family("humwatch_input", "gauge", "What the input gives (1 for the current one): heard (the hops "
                               "decide), no-signal or no-audio (they decide nothing).",
                               [("", {"state": state}, str(int(state == (current if line and not line.decided else "heard"))))
                                for state in ("heard", *UNDECIDED)] if line else []))
        families.append(Family("humwatch_probability", "gauge", "Latest window probability.",
                               [("", {"label": name}, f"{p:.6f}") for name, p in line.probabilities.items()]
                               if line else []))
        if line and line.cpu_share is not None:  # (a hop that decided nothing cost no inference)
            families += [Family("humwatch_hop_seconds", "gauge", "Seconds between decisions (chosen from the CPU budget "
                                "with --hop auto).", [("", {}, f"{line.hop_sec:g}")]),
                         Family("humwatch_inference_cpu_share", "gauge", "Share of all cores this monitor's inference "
                                "uses at this hop (the hop planner's measure; the process's is humwatch_cpu_share).",
                                [("", {}, f"{line.cpu_share:.4f}")])]
        if self.monitor.auditor is not None:
            families += _audit_families(self.monitor.auditor)
        if self.household is not None:
            families += _household_families(self.household.snapshot(), appliances)
        families.append(Family("humwatch_uptime_seconds", "gauge", "Seconds since the monitor started.",
                               [("", {}, f"{time.monotonic() - self.started:.3f}")]))
        return families


def _audit_families(auditor) -> list[Family]:
    families = []
    for name, kind, text, value in (
        ("humwatch_audits_total", "counter", "Windows the teacher (BEATs) also decided.", auditor.audits),
        ("humwatch_audit_disagreements_total", "counter", "Audits where teacher and student disagreed.", auditor.disagreements),
        ("humwatch_audit_disagreement_rate", "gauge", "Share of the last hour's audits that disagreed.", auditor.hour_rate),
        ("humwatch_audit_fallback", "gauge", "1 once the monitor switched to the teacher.", int(auditor.fell_back)),
        ("humwatch_audit_teacher_memory_mb", "gauge", "Memory the teacher took when loaded into the monitor's process "
         "(a fallback).", auditor.teacher_mb),
        ("humwatch_audit_teacher_process_peak_mb", "gauge", "Peak resident memory of the last audit's teacher process "
         "(it exits after each audit).", auditor.teacher_process_peak_mb),
    ):
        if value is not None:
            families.append(Family(name, kind, text, [("", {}, f"{value:g}")]))
    return families


def _household_families(snapshot: HouseholdSnapshot, appliances: Appliances) -> list[Family]:
    families = [Family("humwatch_alarm", "gauge", "An alarm's state (1 raised).",
                       [("", {"alarm": name}, str(int(active))) for name, active in snapshot.alarms.items()])]
    for name, text, key in (("humwatch_runtime_today_seconds", "Seconds the appliance ran today.", "runtime_today_sec"),
                            ("humwatch_duty_cycle_24h", "Share of the observed last 24 h the appliance ran.", "duty_24h"),
                            ("humwatch_current_state_seconds", "Seconds in the current run or pause.", "current_sec"),
                            ("humwatch_cycles_today", "Runs started today.", "cycles_today")):
        values = {a: getattr(snapshot.appliances[a], key) for a in appliances.names if a in snapshot.appliances}
        families.append(Family(name, "gauge", text, [("", {"appliance": a}, f"{value:.3f}")
                                                     for a, value in values.items() if value is not None]))
    return families


class StatusServer:
    """Serves the page and /state, /healthz, /metrics from a daemon thread, for one monitor (given
    here: the server is then its live-line sink, and everything is at /) or several (each added with
    :meth:`add` under its id: /monitor/<id>/..., with an index at / and every metric labelled)."""

    def __init__(self, monitor=None, host: str = "127.0.0.1", port: int = 0, household=None, page: Page | None = None,
                 token: str | None = None, hosts: tuple[str, ...] = (), deploy=None) -> None:
        self.token, self.deploy = token, deploy  # deploy: edge.monitor.deploy.Deployer's receive/rollback/status
        self.since = (time.monotonic(), own_cpu_sec())  # where humwatch_cpu_share counts from
        self.loopback = is_loopback(host)
        self.hosts = allowed_hosts(host, hosts)
        self.views: list[View] = []
        handler = type("Handler", (_Handler,), {"status": self})
        try:
            self.server = _Server((host, port), handler, connection_cap())
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                raise ValueError(f"--http {host}:{port}: the port is in use (another humwatch or program "
                                           f"listens there); pick another, e.g. --http {port + 1}, or stop that program") from error
            raise ValueError(f"--http {host}:{port}: cannot listen there ({error.strerror}); "
                                       "use an address of this machine, or a bare port for loopback") from error
        self.thread = threading.Thread(target=self.server.serve_forever, name="humwatch-http", daemon=True)
        if monitor is not None:
            self.add(monitor, household, page)

    def add(self, monitor, household=None, page: Page | None = None, name: str | None = None,
            ident: str | None = None) -> View:
        """Serve one more monitor (`ident` None: the only one, at /); its View is its live-line sink."""
        if self.single is not None or (ident is None and self.views):
            raise ValueError("a server shows one monitor at /, or several, each under its id")
        view = View(monitor, household, page, name, ident)
        self.views.append(view)
        return view

    @property
    def single(self) -> View | None:
        return self.views[0] if self.views and self.views[0].ident is None else None

    def view(self, ident: str) -> View | None:
        return next((view for view in self.views if view.ident == ident), None)

    @property
    def address(self) -> tuple[str, int]:
        return self.server.server_address[:2]

    def start(self) -> None:
        self.thread.start()
        where = "the page" if self.single else f"the index and a page per monitor ({len(self.views)})"
        log.info("HTTP: %s and /state, /healthz, /metrics on http://%s:%d/ (at most %d connections at once)", where,
                 *self.address, self.server.cap)

    def close(self) -> None:
        """Stop serving (if it started: shutdown() waits for a serving loop) and free the port."""
        if self.thread.is_alive():
            self.server.shutdown()
        self.server.server_close()

    def __call__(self, line: HopLine) -> None:
        """The only monitor's live-line sink."""
        self.single(line)

    def check_host(self, header: str | None) -> None:
        """Refused (421) unless the request is addressed to this monitor: an IP address (a browser
        sends one only for a page of that very address), localhost, or an allowed name."""
        name = host_name(header)
        if name is None or not (name in self.hosts or is_ip_address(name)):
            said = f"Host {header[:100]!r}" if header is not None else "no Host header"
            raise Refused(421, f"{said}: not a name of this monitor; open it by IP address or as localhost, or start "
                               "it with --http-host NAME for the name you use (a guard against DNS rebinding)")

    def check_write(self, headers, content_type: str = "application/json", token_always: bool = False) -> None:
        """Refused unless a write comes from this monitor's own page (or no browser) as `content_type`,
        and carries the token off loopback (or always, with `token_always`: pushes and rollbacks)."""
        site, origin = headers.get("Sec-Fetch-Site"), headers.get("Origin")
        if site not in WRITING_SITES:
            raise Refused(403, f"a request from another site (Sec-Fetch-Site: {site[:40]}) may not write; "
                               "relabel from the monitor's own page")
        host = (headers.get("Host") or "").lower()
        if origin is not None and origin.lower() not in (f"http://{host}", f"https://{host}"):
            raise Refused(403, f"Origin {origin[:100]!r} is not this monitor's page; relabel from the monitor's own page")
        if token_always or not self.loopback:
            self.check_token(headers)
        if headers.get_content_type() != content_type:
            raise Refused(415, f"Content-Type {headers.get('Content-Type')!r}: this write must be {content_type}")

    def check_token(self, headers) -> None:
        """Refused unless the request carries the monitor's token."""
        if not self.token:
            raise Refused(403, "writes over the network are off: start the monitor with --http-token "
                               "(or HUMWATCH_HTTP_TOKEN), or relabel from the Pi itself")
        token = headers.get(TOKEN_HEADER)
        if not token or not hmac.compare_digest(token.encode(), self.token.encode()):
            raise Refused(401, f"a valid token is needed (the {TOKEN_HEADER} header)")

    def health(self) -> dict:
        """/healthz: the only monitor's health, or every monitor's (the reason names those not healthy)."""
        if self.single:
            health, name = self.single.monitor.health(), self.single.name
            return {"ok": health.ok, "reason": health.reason if health.ok or not name else f"{name}: {health.reason}"}
        healths = {view.name: view.monitor.health() for view in self.views}
        problems = [f"{name}: {health.reason}" for name, health in healths.items() if not health.ok]
        return {"ok": not problems, "reason": "; ".join(problems) or f"all {len(healths)} monitors: audio arriving, "
                                                                      "inference keeping up, outputs written",
                "monitors": {name: {"ok": health.ok, "reason": health.reason} for name, health in healths.items()}}

    def state(self) -> tuple[int, dict]:
        """/state: the only monitor's last line, or {name: last line or null} of every monitor (503
        until each has decided)."""
        if self.single:
            line = self.single.monitor.last_line
            return (200, line.to_json()) if line else (503, {"error": "no decision yet"})
        lines = {view.name: view.monitor.last_line for view in self.views}
        return (200 if all(lines.values()) else 503), {name: line.to_json() if line else None for name, line in lines.items()}

    def metrics(self) -> str:
        """Prometheus text: each metric once, with a sample per monitor (labelled monitor="<name>" when several)."""
        families: dict[str, Family] = {}
        for view in self.views:
            extra = {} if view.ident is None else {"monitor": view.name}
            for family in view.families():
                merged = families.setdefault(family.name, Family(family.name, family.kind, family.help))
                merged.samples += [(suffix, {**extra, **labels}, value) for suffix, labels, value in family.samples]
        families.update((family.name, family) for family in self._process_families())
        rows = []
        for family in families.values():
            rows += [f"# HELP {family.name} {family.help}", f"# TYPE {family.name} {family.kind}"]
            rows += [f"{family.name}{suffix}{label_text(labels)} {value}" for suffix, labels, value in family.samples]
        return "\n".join(rows) + "\n"

    def _process_families(self) -> list[Family]:
        """The whole process's CPU share, since the server started (after the load and the warm-up), and memory."""
        cores = os.cpu_count() or 1
        wall, cpu = time.monotonic() - self.since[0], own_cpu_sec() - self.since[1]
        return [Family("humwatch_cpu_share", "gauge", f"Share of all {cores} cores the whole process (with its audit's "
                       "teacher processes) used since the monitor started: user + system CPU seconds over wall seconds, "
                       "as /proc counts them (x 100 x cores: percent of one core).",
                       [("", {}, f"{cpu / max(wall, 1e-9) / cores:.5f}")]),
                Family("humwatch_resident_memory_mb", "gauge", "The process's resident memory now (VmRSS).",
                       [("", {}, f"{memory_mb('VmRSS'):.1f}")]),
                Family("humwatch_peak_memory_mb", "gauge", "The process's peak resident memory (VmHWM).",
                       [("", {}, f"{memory_mb('VmHWM'):.1f}")])]

    def index_html(self) -> str:
        """The index of several monitors: each one's state and health, linking to its page."""
        rows = []
        for view in self.views:
            line, health = view.monitor.last_line, view.monitor.health()
            state = line.debounced_status if line else "waiting for the first decision"
            rows.append(f'<li><a href="monitor/{urllib.parse.quote(view.ident)}/">{html.escape(view.name)}</a>: '
                        f'<span class="state">{html.escape(state)}</span>'
                        f'{"" if health.ok else f" <span class=problem>({html.escape(health.reason)})</span>"}</li>')
        return INDEX_PAGE.format(count=len(self.views), rows="\n".join(rows))


INDEX_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="refresh" content="10"><title>humwatch: {count} monitors</title>
<style>body {{ font-family: system-ui, sans-serif; max-width: 760px; margin: 0 auto; padding: 12px; }}
li {{ margin: 8px 0; font-size: 1.2rem; }} .state {{ font-weight: 700; }} .problem {{ color: #b00; font-size: .9rem; }}</style>
</head><body><h1>humwatch: {count} monitors</h1>
<ul>
{rows}
</ul><p>Each page shows its monitor's state, last hour, day and clips; <a href="metrics">/metrics</a> labels
every series by monitor.</p></body></html>
"""


class _Handler(BaseHTTPRequestHandler):
    status: StatusServer

    def setup(self) -> None:
        """Read and write through a _Connection (the request's deadline, the answer's timeout)."""
        self.connection = self.request
        self.wfile = _Connection(self.request)
        self.rfile = io.BufferedReader(self.wfile)

    def do_GET(self) -> None:  # noqa: N802 (the standard library's name)
        self._answer(self._get)

    def do_POST(self) -> None:  # noqa: N802
        self._answer(self._post)

    def _answer(self, respond) -> None:
        """Every request: its body read (bounded), its Host checked, then the endpoint. A refusal is
        its status with the reason; any other failure a 500 (and the log), never a dropped reply."""
        try:
            url = urllib.parse.urlsplit(self.path)
            if url.path in DEPLOY_PATHS:  # the process's own: its body (a bundle) is read once the request is allowed
                try:
                    self.status.check_host(self.headers.get("Host"))
                    self._deploy(url.path)
                except Refused:
                    self._drain()  # so that the client, still sending, reads the refusal
                    raise
                return
            body = self._body() if self.command == "POST" else b""
            self.status.check_host(self.headers.get("Host"))
            respond(url, body)
        except Refused as error:
            self._send(error.status, {"error": str(error)})
        except (ConnectionError, TimeoutError):
            raise  # the client went away or stalled: the server notes it (one short line)
        except Exception as error:
            self.server.failures.note(type(error).__name__, f"{self.command} {self.path[:200]} failed: "
                                                            f"{type(error).__name__}", exc_info=error)
            self._send(500, {"error": "the monitor could not answer this request; its log says why"})

    def _body(self, limit: int = MAX_BODY_BYTES) -> bytes:
        return self.rfile.read(self._length(limit))

    def _length(self, limit: int) -> int:
        length = self.headers.get("Content-Length", "")
        if not length.isdigit():
            raise Refused(411, "a Content-Length header is needed")
        if int(length) > limit:
            raise Refused(413, f"body of {length} bytes; the limit is {limit}")
        return int(length)

    def _drain(self) -> None:
        """Read (and drop) what remains of a refused request's body, up to DRAIN_BYTES within its deadline."""
        length = self.headers.get("Content-Length", "")
        with contextlib.suppress(OSError):
            left = min(int(length), DRAIN_BYTES) if length.isdigit() else 0
            while left > 0 and (block := self.rfile.read(min(left, 1 << 20))):
                left -= len(block)

    def _deploy(self, path: str) -> None:
        """The bundle endpoints: each needs the token, on loopback too; a push's archive is received
        into the deploy folder (bounded, within a deadline that grows with its size) and deployed."""
        deploy = self.status.deploy
        if deploy is None:
            raise Refused(404, f"{path}: pushing bundles is off: start the monitor with --deploy-dir DIR")
        if self.command == "GET" and path != "/api/bundle/rollback":
            self.status.check_token(self.headers)
            if path == "/api/bundle":
                self._send(200, deploy.status())
            else:
                archive = io.BytesIO()
                pack_bundle(deploy.current, archive)
                self._send(200, archive.getvalue(), "application/x-tar")
            return
        if self.command != "POST" or path == "/api/bundle/current.tar":
            raise Refused(405, f"{self.command} {path}: not allowed here")
        if path == "/api/bundle/rollback":
            self.status.check_write(self.headers, token_always=True)
            self._body()
            self._deployed(deploy.rollback)
            return
        self.status.check_write(self.headers, "application/x-tar", token_always=True)
        length = self._length(deploy.max_bytes + ARCHIVE_OVERHEAD_BYTES)
        self.wfile.deadline = time.monotonic() + REQUEST_SEC + length / UPLOAD_BYTES_PER_SEC
        with deploy.incoming() as archive:
            try:
                with open(archive, "wb") as file:
                    left = length
                    while left:
                        block = self.rfile.read(min(left, 1 << 20))
                        if not block:
                            raise ConnectionError("the push ended before its Content-Length")
                        file.write(block)
                        left -= len(block)
            except OSError as error:
                if isinstance(error, (ConnectionError, TimeoutError)):
                    raise
                raise Refused(507 if error.errno == errno.ENOSPC else 500,
                              f"could not store the bundle in {archive.parent}: {error.strerror or error}") from error
            self._deployed(lambda: deploy.receive(archive))

    def _deployed(self, act) -> None:
        """A push or rollback's answer: the bundles then, or why it was refused (the model unchanged)."""
        try:
            self._send(200, act())
        except ValueError as error:  # DeployError, ArchiveError, BundleError: refused, nothing changed
            log.warning("HTTP: a bundle was refused: %s", error)
            self._send(getattr(error, "status", 422), {"error": str(error)})
        except OSError as error:
            raise Refused(507 if error.errno == errno.ENOSPC else 500,
                          f"could not deploy the bundle: {error.strerror or error}") from error

    def _get(self, url: urllib.parse.SplitResult, body: bytes) -> None:
        status, path = self.status, url.path
        if path.rsplit("/", 1)[1] in ("favicon.svg", "favicon.ico"):  # the page's link, and what browsers ask for
            self._send(200, favicon(), "image/svg+xml")
        elif path == "/metrics":
            self._send(200, status.metrics(), "text/plain; version=0.0.4")
        elif path == "/healthz":
            health = status.health()
            self._send(200 if health["ok"] else 503, health)
        elif path == "/state":
            self._send(*status.state())
        elif path == "/api/monitors":
            self._send(200, [{"id": view.ident, "name": view.name} for view in status.views])
        elif status.single is None and path in ("/", "/index.html"):
            self._send(200, status.index_html(), "text/html; charset=utf-8")
        elif status.single is None and MONITOR_PATH.fullmatch(path):  # its page's relative links need the slash
            self._redirect(path.rsplit("/", 1)[1] + "/")
        else:
            view, rest = self._route(path)
            self._monitor_get(view, rest, url)

    def _route(self, path: str) -> tuple[View, str]:
        """The monitor a path is for, and the path within its pages (Refused 404 when none is)."""
        status = self.status
        if status.single is not None:
            return status.single, path
        ident, _, rest = path.removeprefix("/monitor/").partition("/")
        view = status.view(urllib.parse.unquote(ident)) if path.startswith("/monitor/") else None
        if view is None:
            raise Refused(404, f"no such endpoint {path[:100]}; try / (the index of the monitors: "
                               f"{', '.join(f'/monitor/{v.ident}/' for v in status.views)}), /state, /healthz or /metrics")
        return view, "/" + rest

    def _monitor_get(self, view: View, path: str, url: urllib.parse.SplitResult) -> None:
        page = view.page
        if page is not None and path in ("/", "/index.html"):
            self._send(200, page_html(), "text/html; charset=utf-8")
        elif page is not None and path == "/api/page":
            seen = urllib.parse.parse_qs(url.query).get("clips", [None])[0]
            ingress = "X-Ingress-Path" in self.headers  # Home Assistant's proxy: its address is not one to pull from
            pull = None if ingress else pull_command(self.headers["Host"], view.ident, self.status.loopback)
            self._send(200, page.data(view.monitor.last_line, clips_seen=seen, pull=pull))
        elif page is not None and path.startswith("/clips/") and page.settings.clips_dir:
            clip = clip_path(page.settings.clips_dir, urllib.parse.unquote(path[len("/clips/"):]))
            try:
                self._send(200, clip.read_bytes(), "audio/flac")
            except FileNotFoundError:  # removed (kept under --clips-max-mb) since the check
                raise Refused(404, f"clip {clip.name!r}: no such clip") from None
        elif page is not None and page.recorder is not None and path == "/api/samples":
            self._send(200, {"samples": page.recorder.folder.listing()})
        elif page is not None and page.recorder is not None and path.startswith("/samples/"):
            self._send_file(page.recorder.folder.path(urllib.parse.unquote(path[len("/samples/"):])), "audio/flac")
        elif path == "/state":
            line = view.monitor.last_line
            self._send(200 if line else 503, line.to_json() if line else {"error": "no decision yet"})
        elif path == "/healthz":
            health = view.monitor.health()
            self._send(200 if health.ok else 503, {"ok": health.ok, "reason": health.reason})
        else:
            self._send(404, {"error": f"no such endpoint {url.path[:100]}; try /, /state, /healthz or /metrics"})

    def _post(self, url: urllib.parse.SplitResult, body: bytes) -> None:
        view, path = self._route(url.path)
        page = view.page
        recorder = page.recorder if page is not None else None
        writes = ("/api/relabel", *(("/api/record", "/api/recordings/delete", "/api/samples/pulled") if recorder else ()))
        if path not in writes:
            where = "" if view.ident is None else f"/monitor/{view.ident}"
            raise Refused(404, f"no such endpoint {url.path[:100]}; the writes are POST "
                               f"{', '.join(where + write for write in writes)}")
        self.status.check_write(self.headers)
        who = f"{view.name}: " if view.ident else ""
        if path == "/api/relabel":
            request = parse_relabel(body, page.decision().appliances)
            written = page.relabel(**request)
            log.info("%srelabelled %s as %s", who, request["clip"], written.name)
            self._send(200, {"written": written.name})
        elif path == "/api/record":
            recording = recorder.start(**parse_record(body, page.decision().appliances))
            self._send(200, {"recording": recording.name, "seconds": recording.seconds})
        elif path == "/api/recordings/delete":
            name = parse_body(body, {"name": str}, 'a JSON object {"name": NAME}')["name"]
            recorder.folder.delete(name)
            log.info("%sdeleted the recording %s", who, name)
            self._send(200, {"deleted": name})
        else:
            pulled = parse_body(body, {"pulled": dict}, 'a JSON object {"pulled": {NAME: SHA256, ...}}')["pulled"]
            if not all(isinstance(digest, str) for digest in pulled.values()):
                raise Refused(400, 'field "pulled": each value must be a sample\'s sha256 as a string')
            self._send(200, {"marked": recorder.folder.mark_pulled(pulled)})

    def _send_file(self, path, content_type: str) -> None:
        """A file, whole or from the byte a Range header (bytes=N-) asks for (206), in blocks."""
        size = path.stat().st_size
        match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
        start = int(match.group(1)) if match else 0
        if start > size:
            raise Refused(416, f"Range {self.headers.get('Range')!r}: the file holds {size} bytes")
        with open(path, "rb") as file:
            file.seek(start)
            self.send_response(206 if match else 200)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(size - start))
            if match:
                self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
            self.end_headers()
            while block := file.read(1 << 20):
                self.wfile.write(block)

    def _redirect(self, location: str) -> None:
        self.send_response(301)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _send(self, code: int, body, content_type: str = "application/json") -> None:
        data = body if isinstance(body, bytes) else (body if isinstance(body, str) else json.dumps(body)).encode()
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_error(self, format: str, *args) -> None:
        """The standard library's: a request that timed out is noted as the server notes a reset."""
        if args and isinstance(args[0], TimeoutError):
            self.server.client_failed(args[0])
        else:
            self.log_message(format, *args)

    def log_message(self, format: str, *args) -> None:
        log.debug("%s - %s", self.address_string(), format % args)
