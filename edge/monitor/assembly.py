"""One live monitor assembled from its settings: the detector, the source, and the outputs in order.

Every hop's line goes to the outputs in this order (each a named sink of one FanOut, so a failing
one is reported in /healthz and never stops the others):

1. stdout (and --output): the line itself, and the alarm events the history raises;
2. the systemd watchdog, pinged while hops are decided;
3. the history (with alarms and energy): it must see the hop before anything reads statistics;
4. MQTT: its state and statistics messages read the history just written;
5. HTTP: /state, /healthz, /metrics and the page;
6. clips: the audio around each change.

Everything that can refuse (the bundle, the source, a history in use, a bad option, a port taken)
is made first; only then are files opened for writing and servers started, so a refused monitor
leaves no trace.
"""

from __future__ import annotations

import logging
import signal
from typing import Callable

from edge.detector import Detector
from edge.monitor.audit import Auditor
from edge.monitor.live import AudioSource, FanOut, LiveMonitor
from edge.monitor.runtime import Classifier, open_classifier
from edge.monitor.pacing import plan_hop
from edge.monitor.settings import DetectorSettings, LiveSettings, require_bundle

log = logging.getLogger("humwatch.live")


def open_detector(settings: DetectorSettings, plan: bool = True,
                  make_auditor: Callable[[Classifier], Auditor | None] | None = None, recent_sec: float = 0.0) -> Detector:
    """The detector the settings describe (`plan`: measure the hop, which batch does not need)."""
    require_bundle(settings)
    classifier = open_classifier(settings.bundle, settings.precision, settings.threads)
    overrides = settings.decision_overrides()
    classifier.decision.replace(**overrides)  # a bad override fails before the warm-up
    planner = plan_hop(classifier, settings.hop, settings.cpu_budget) if plan else None
    auditor = make_auditor(classifier) if make_auditor else None
    return Detector(classifier, planner, overrides, auditor=auditor, recent_sec=recent_sec)


def open_auditor(settings: LiveSettings) -> Callable[[Classifier], Auditor | None]:
    """The teacher's audit of the student, made once the deciding model is known (None when another
    model decides or audit_every_sec is 0); a fallback with nothing to audit is a ValueError."""
    def make(classifier: Classifier) -> Auditor | None:
        if classifier.precision != "student" or settings.audit_every_sec == 0:
            if settings.audit_fallback is not None:
                raise ValueError(
                    f"--audit-fallback: the {classifier.precision} model decides, so there is no student to audit; "
                    "use --precision student" if classifier.precision != "student"
                    else "--audit-fallback needs audits: set --audit-every-sec above 0")
            return None
        bundle = classifier.bundle
        return Auditor(lambda: Classifier(bundle, bundle.teacher_precision, settings.threads), settings.audit_every_sec,
                       settings.audit_max_rate, settings.audit_fallback)
    return make


def check_options(settings: LiveSettings) -> None:
    """Options that need another one, or exclude one: a ValueError naming both."""
    if settings.source is not None and settings.device is not None:
        raise ValueError("--device is the older name of --source: give one of them")
    if (settings.alarm or settings.watts) and not settings.history:
        raise ValueError("--alarm and --watts are computed from the history: add --history PATH")
    if settings.http_host and not settings.http:
        raise ValueError("--http-host names the page's host: add --http [HOST:]PORT")
    if settings.relabel_dir and not (settings.clips and settings.http):
        raise ValueError("--relabel-dir relabels clips from the page: add --clips DIR and --http [HOST:]PORT")


class Assembly:
    """A live monitor and its outputs. Build (everything that can refuse), :meth:`start` (files and
    servers), :meth:`run` until SIGINT / SIGTERM or `monitor.stop`, :meth:`close`."""

    def __init__(self, settings: LiveSettings, source: AudioSource | None = None) -> None:
        from edge.core.output import LinePrinter
        from edge.monitor.sources import open_source
        from edge.monitor.systemd import SystemdNotifier

        check_options(settings)
        self.settings = settings
        self.detector = open_detector(settings, make_auditor=open_auditor(settings), recent_sec=settings.clips_seconds)
        self.source = source or open_source(settings.source or settings.device, settings.source_format)
        self.outputs = FanOut()
        self.monitor = LiveMonitor(self.detector, self.source, self.outputs, max_lag_sec=settings.max_lag)
        self._closers: list[Callable[[], None]] = []
        self._starters: list[Callable[[], None]] = []
        try:
            self.printer = self.outputs.add(LinePrinter(settings.only_changes), "--output" if settings.output else "stdout")
            self._closers.append(self.printer.close)
            self.notifier = self.outputs.add(SystemdNotifier(), "systemd")
            self._closers.append(self.notifier.close)
            self.household = self._history()
            self._mqtt()
            self._http()
            self._clips()
        except BaseException:
            self.close()
            raise

    def _history(self):
        if not self.settings.history:
            return None
        from edge.home.alarms import AlarmRule, Alarms
        from edge.home.history import History
        from edge.home.household import Household, parse_watts

        settings = self.settings
        rules, power = [AlarmRule.parse(rule) for rule in settings.alarm], parse_watts(settings.watts)
        household = self.outputs.add(Household(History(settings.history, settings.history_days), Alarms(rules), power,
                                               self.printer.event), "--history")
        self._closers.append(household.close)
        return household

    def _mqtt(self) -> None:
        if not self.settings.mqtt:
            return
        from edge.home.mqtt import MqttPublisher, MqttSettings

        settings = self.settings
        mqtt = MqttSettings.from_url(settings.mqtt, username=settings.mqtt_user, password=settings.mqtt_password,
                                     name=settings.name, device_id=settings.mqtt_device_id,
                                     heartbeat_sec=settings.mqtt_heartbeat)
        publisher = self.outputs.add(MqttPublisher(mqtt, household=self.household), "MQTT")
        self._starters.append(publisher.start)
        self._closers.append(publisher.close)

    def _http(self) -> None:
        if not self.settings.http:
            return
        from edge.home.http_status import StatusServer, parse_listen
        from edge.home.page import Page, PageSettings

        settings = self.settings
        page = Page(PageSettings(settings.clips, settings.relabel_dir), lambda: self.detector.decision, self.household)
        server = self.outputs.add(StatusServer(self.monitor, *parse_listen(settings.http), household=self.household,
                                               page=page, token=settings.http_token, hosts=settings.http_host), "HTTP")
        self._starters.append(server.start)
        self._closers.append(server.close)

    def _clips(self) -> None:
        if not self.settings.clips:
            return
        from edge.home.clips import ClipWriter

        settings = self.settings
        self.outputs.add(ClipWriter(settings.clips, self.monitor.recent_audio, self.detector.sample_rate,
                                    settings.clips_seconds, settings.clips_max_mb), "--clips")

    def start(self) -> None:
        """Open --output and start MQTT and HTTP (after everything that can refuse was made)."""
        try:
            if self.settings.output:
                self.printer.append_to(self.settings.output)
            for start in self._starters:
                start()
        except BaseException:
            self.close()
            raise

    def run(self) -> None:
        """Decide until SIGINT / SIGTERM (or `monitor.stop`), then close everything."""
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: self.monitor.stop.set())
        self.notifier.ready()
        try:
            self.monitor.run()
        finally:
            self.close()
        log.info("stopped")

    def close(self) -> None:
        """Close the outputs, the last made first (safe to call twice)."""
        closers, self._closers = self._closers, []
        for close in reversed(closers):
            close()
