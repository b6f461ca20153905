"""A small HTTP server for the live monitor (standard library only).

GET  /              the page (edge.home.page): state, last hour, 24-h timeline, clips
GET  /api/page      what the page shows, as JSON
GET  /clips/NAME    a clip's FLAC
POST /api/relabel   {"clip", "ac", "fridge", "daypart"}: the one write; off loopback it needs the token
GET  /state         the last JSON line (503 before the first decision)
GET  /healthz       200 while audio arrives and inference keeps up, else 503 with the reason
GET  /metrics       Prometheus text format: inference time histogram, overflows, drops, device
                    losses, the state as a gauge, probabilities, uptime

Reads are open to whoever reaches the server; it listens on loopback unless told otherwise. Each
connection has its own thread with a socket timeout and bodies are bounded, so a slow or broken
client holds only its own thread, never the monitor.
"""

from __future__ import annotations

import errno
import hmac
import ipaddress
import json
import logging
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from edge.core.defaults import LABELS
from edge.core.labels import STATES
from edge.home.page import Page, RelabelError, clip_path, page_html
from edge.monitor.hop import HopLine

log = logging.getLogger("humwatch.http")
INFER_BUCKETS_SEC = (0.05, 0.1, 0.25, 0.5, 1.0, 1.5, 2.5, 5.0, 10.0)
MAX_BODY_BYTES = 4096
CLIENT_TIMEOUT_SEC = 10.0
TOKEN_HEADER = "X-Humwatch-Token"


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


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

    def lines(self, name: str) -> list[str]:
        rows = [f'{name}_bucket{{le="{bound}"}} {count}' for bound, count in zip(self.buckets, self.counts)]
        return rows + [f'{name}_bucket{{le="+Inf"}} {self.count}', f"{name}_sum {self.total:.6f}", f"{name}_count {self.count}"]


class StatusServer:
    """A live-line sink that also serves the page and /state, /healthz, /metrics from a daemon thread."""

    def __init__(self, monitor, host: str, port: int, household=None, page: Page | None = None,
                 token: str | None = None) -> None:
        self.monitor = monitor
        self.household = household  # with a history: statistics and alarms in /metrics
        self.page = page
        self.token = token
        self.loopback = is_loopback(host)
        self.started = time.monotonic()
        self.inference = Histogram(INFER_BUCKETS_SEC)
        self._lock = threading.Lock()
        handler = type("Handler", (_Handler,), {"status": self})
        try:
            self.server = ThreadingHTTPServer((host, port), handler)
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                raise ValueError(f"--http {host}:{port}: the port is in use (another humwatch or program "
                                           f"listens there); pick another, e.g. --http {port + 1}, or stop that program") from error
            raise ValueError(f"--http {host}:{port}: cannot listen there ({error.strerror}); "
                                       "use an address of this machine, or a bare port for loopback") from error
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="humwatch-http", daemon=True)

    @property
    def address(self) -> tuple[str, int]:
        return self.server.server_address[:2]

    def start(self) -> None:
        self.thread.start()
        log.info("HTTP: the page and /state, /healthz, /metrics on http://%s:%d/", *self.address)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __call__(self, line: HopLine) -> None:
        with self._lock:
            self.inference.observe(line.infer_ms / 1000)
        if self.page is not None:
            self.page(line)

    def may_write(self, token: str | None) -> tuple[int, str] | None:
        """None when a write is allowed, else (HTTP status, why): off loopback it takes the token."""
        if self.loopback:
            return None
        if not self.token:
            return 403, ("writes over the network are off: start the monitor with --http-token "
                         "(or HUMWATCH_HTTP_TOKEN), or relabel from the Pi itself")
        if not token or not hmac.compare_digest(token.encode(), self.token.encode()):
            return 401, f"a valid token is needed (the {TOKEN_HEADER} header)"
        return None

    def metrics(self) -> str:
        health, line = self.monitor.health(), self.monitor.last_line
        rows = [
            "# HELP humwatch_inference_seconds Inference time per window.",
            "# TYPE humwatch_inference_seconds histogram",
        ]
        with self._lock:
            rows += self.inference.lines("humwatch_inference_seconds")
        counters = (
            ("humwatch_input_overflows_total", "Audio input overflows reported by the device.", health.overflows),
            ("humwatch_dropped_audio_seconds_total", "Audio dropped because inference fell behind.", health.dropped_sec),
            ("humwatch_device_losses_total", "Times the audio device was lost and reopened.", health.device_losses),
        )
        for name, text, value in counters:
            rows += [f"# HELP {name} {text}", f"# TYPE {name} counter", f"{name} {value}"]
        rows += ["# HELP humwatch_state Debounced state (1 for the current one).", "# TYPE humwatch_state gauge"]
        current = line.debounced_status if line else None
        rows += [f'humwatch_state{{state="{state}"}} {int(state == current)}' for state in STATES]
        rows += ["# HELP humwatch_probability Latest window probability.", "# TYPE humwatch_probability gauge"]
        if line:
            rows += [f'humwatch_probability{{label="ac"}} {line.p_ac:.6f}',
                     f'humwatch_probability{{label="fridge"}} {line.p_fridge:.6f}']
        if line and line.hop_sec is not None:
            rows += ["# HELP humwatch_hop_seconds Seconds between decisions (chosen from the CPU budget with --hop auto).",
                     "# TYPE humwatch_hop_seconds gauge", f"humwatch_hop_seconds {line.hop_sec:g}",
                     "# HELP humwatch_cpu_share Share of all cores inference uses at this hop.",
                     "# TYPE humwatch_cpu_share gauge", f"humwatch_cpu_share {line.cpu_share:.4f}"]
        if self.monitor.auditor is not None:
            rows += self._audit_rows(self.monitor.auditor)
        if self.household is not None:
            rows += self._household_rows(self.household.snapshot())
        rows += ["# HELP humwatch_uptime_seconds Seconds since the monitor started.", "# TYPE humwatch_uptime_seconds gauge",
                 f"humwatch_uptime_seconds {time.monotonic() - self.started:.3f}"]
        return "\n".join(rows) + "\n"


    @staticmethod
    def _audit_rows(auditor) -> list[str]:
        rate = auditor.hour_rate
        rows = []
        for name, kind, text, value in (
            ("humwatch_audits_total", "counter", "Windows the teacher (BEATs) also decided.", auditor.audits),
            ("humwatch_audit_disagreements_total", "counter", "Audits where teacher and student disagreed.", auditor.disagreements),
            ("humwatch_audit_disagreement_rate", "gauge", "Share of the last hour's audits that disagreed.", rate),
            ("humwatch_audit_fallback", "gauge", "1 once the monitor switched to the teacher.", int(auditor.fell_back)),
            ("humwatch_audit_teacher_memory_mb", "gauge", "Memory the teacher took when loaded.", auditor.teacher_mb),
        ):
            if value is not None:
                rows += [f"# HELP {name} {text}", f"# TYPE {name} {kind}", f"{name} {value:g}"]
        return rows

    @staticmethod
    def _household_rows(snapshot: dict) -> list[str]:
        rows = ["# HELP humwatch_alarm An alarm's state (1 raised).", "# TYPE humwatch_alarm gauge"]
        rows += [f'humwatch_alarm{{alarm="{name}"}} {int(active)}' for name, active in snapshot["alarms"].items()]
        gauges = (("humwatch_runtime_today_seconds", "Seconds the appliance ran today.", "runtime_today_sec"),
                  ("humwatch_duty_cycle_24h", "Share of the observed last 24 h the appliance ran.", "duty_24h"),
                  ("humwatch_current_state_seconds", "Seconds in the current run or pause.", "current_sec"),
                  ("humwatch_cycles_today", "Runs started today.", "cycles_today"))
        for name, text, key in gauges:
            rows += [f"# HELP {name} {text}", f"# TYPE {name} gauge"]
            rows += [f'{name}{{appliance="{a}"}} {snapshot[a][key]:.3f}' for a in LABELS
                     if snapshot[a][key] is not None]
        return rows


class _Handler(BaseHTTPRequestHandler):
    status: StatusServer
    timeout = CLIENT_TIMEOUT_SEC  # a client that sends nothing loses its connection, not the server's time

    def do_GET(self) -> None:  # noqa: N802 (the standard library's name)
        page = self.status.page
        if page is not None and self.path in ("/", "/index.html"):
            self._send(200, page_html(), "text/html; charset=utf-8")
        elif page is not None and self.path == "/api/page":
            self._send(200, page.data(self.status.monitor.last_line))
        elif page is not None and self.path.startswith("/clips/") and page.settings.clips_dir:
            try:
                clip = clip_path(page.settings.clips_dir, urllib.parse.unquote(self.path[len("/clips/"):]))
            except RelabelError as error:
                self._send(error.status, {"error": str(error)})
                return
            self._send(200, clip.read_bytes(), "audio/flac")
        elif self.path == "/state":
            line = self.status.monitor.last_line
            self._send(200 if line else 503, line.to_json() if line else {"error": "no decision yet"})
        elif self.path == "/healthz":
            health = self.status.monitor.health()
            self._send(200 if health.ok else 503, {"ok": health.ok, "reason": health.reason})
        elif self.path == "/metrics":
            self._send(200, self.status.metrics(), "text/plain; version=0.0.4")
        else:
            self._send(404, {"error": f"no such endpoint {self.path}; try /, /state, /healthz or /metrics"})

    def do_POST(self) -> None:  # noqa: N802
        page = self.status.page
        if page is None or self.path != "/api/relabel":
            self._send(404, {"error": f"no such endpoint {self.path}; the one write is POST /api/relabel"})
            return
        refusal = self.status.may_write(self.headers.get(TOKEN_HEADER))
        if refusal:
            self._send(refusal[0], {"error": refusal[1]})
            return
        length = self.headers.get("Content-Length", "")
        if not length.isdigit():
            self._send(411, {"error": "a Content-Length header is needed"})
            return
        if int(length) > MAX_BODY_BYTES:
            self._send(413, {"error": f"body of {length} bytes; the limit is {MAX_BODY_BYTES}"})
            return
        try:
            request = json.loads(self.rfile.read(int(length)))
            written = page.relabel(request["clip"], bool(request["ac"]), bool(request["fridge"]), request["daypart"])
        except (ValueError, KeyError, TypeError) as error:
            status = error.status if isinstance(error, RelabelError) else 400
            message = str(error) if isinstance(error, RelabelError) else (
                f"expected JSON {{clip, ac, fridge, daypart}} ({type(error).__name__}: {error})")
            self._send(status, {"error": message})
            return
        log.info("relabelled %s as %s", request["clip"], written.name)
        self._send(200, {"written": written.name})

    def _send(self, code: int, body, content_type: str = "application/json") -> None:
        data = body if isinstance(body, bytes) else (body if isinstance(body, str) else json.dumps(body)).encode()
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args) -> None:
        log.debug("%s - %s", self.address_string(), format % args)
