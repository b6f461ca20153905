"""Live monitors assembled from their settings: the detectors, the sources, and the outputs in order.

A process runs one monitor (the settings file's keys, or the command line) or several (a
[[monitor]] table each). Several share what is costly: ONE loaded model (a Classifier object every
detector uses: onnxruntime's run() is thread-safe, and one window is decided at a time under a
shared lock), one teacher for the audits, one warm-up that measures the model's CPU (each monitor
plans its hop within cpu_budget / number of monitors), one HTTP server (an index at /, a page per
monitor) and one systemd notifier. Each has its own source, thread, buffer, history, clips and Home
Assistant device (its own MQTT connection, so its last will marks only its own device offline). A
monitor whose source fails keeps retrying and never stops the others; one whose standard input
ends stops alone.

Every hop's line goes to a monitor's outputs in this order (each a named sink of its FanOut, so a
failing one is reported in /healthz and never stops the others):

1. stdout (and --output): the line itself (with several monitors, with its "monitor" name), and
   the alarm events the history raises;
2. the systemd watchdog, pinged while hops are decided (by any monitor);
3. the history (with alarms and energy): it must see the hop before anything reads statistics;
4. MQTT: its state and statistics messages read the history just written;
5. HTTP: /state, /healthz, /metrics and the page;
6. clips: the audio around each change.

Everything that can refuse (the bundle, a source, a history in use, a bad option, a port taken)
is made first; only then are files opened for writing and servers started, so a refused process
leaves no trace.
"""

from __future__ import annotations

import dataclasses
import logging
import signal
import threading
from pathlib import Path
from typing import Callable

from edge.core.output import LinePrinter, error_text
from edge.engine.audit import Auditor, Teacher, TeacherProcess
from edge.engine.classifier import Classifier, open_classifier
from edge.engine.detector import Detector
from edge.engine.pacing import HopPlanner, plan_hop
from edge.engine.settings import DetectorSettings, require_bundle
from edge.monitor.deploy import Deployer, started_bundle
from edge.monitor.live import AudioSource, FanOut, LiveMonitor
from edge.monitor.settings import LiveSettings, monitor_id

log = logging.getLogger("humwatch.live")


def open_detector(settings: DetectorSettings, plan: bool = True) -> Detector:
    """The detector of batch and stream (`plan`: measure the hop, which batch does not need)."""
    require_bundle(settings)
    return Detector.from_bundle(settings.bundle, settings.precision, settings.hop if plan else None,
                                settings.cpu_budget, settings.threads, settings.signal_floor_dbfs,
                                overrides=settings.decision_overrides())


def open_auditor(settings: LiveSettings, classifier: Classifier, load_teacher: Callable[[], Teacher]) -> Auditor | None:
    """The teacher's audit of the student (None when another model decides or [audit] every_sec is 0);
    a fallback with nothing to audit, or a teacher the bundle lacks, is a ValueError."""
    audit = settings.audit
    if audit.teacher is not None and audit.teacher not in classifier.bundle.precisions:
        raise ValueError(f"--audit-teacher {audit.teacher}: the bundle has no {audit.teacher} graphs "
                         f"(it has {', '.join(classifier.bundle.precisions)})")
    if classifier.precision != "student" or audit.every_sec == 0:
        if audit.fallback is not None:
            raise ValueError(
                f"--audit-fallback: the {classifier.precision} model decides, so there is no student to audit; "
                "use --precision student" if classifier.precision != "student"
                else "--audit-fallback needs audits: set --audit-every-sec above 0")
        return None
    return Auditor(load_teacher, audit.every_sec, audit.max_rate, audit.fallback, background=True)


def check_options(settings: LiveSettings) -> None:
    """Options that need another one, or exclude one: a ValueError naming both; and the syntax of
    --alarm and --watts (their appliances are checked against the bundle's when it is open)."""
    from edge.home.alarms import AlarmRule, Alarms
    from edge.home.household import parse_watts

    if settings.source is not None and settings.device is not None:
        raise ValueError("--device is the older name of --source: give one of them")
    if (settings.alarm or settings.watts) and not settings.history:
        raise ValueError("--alarm and --watts are computed from the history: add --history PATH")
    Alarms([AlarmRule.parse(rule) for rule in settings.alarm])
    parse_watts(settings.watts)
    if settings.http.hosts and not settings.http.listen:
        raise ValueError("--http-host names the page's host: add --http [HOST:]PORT")
    if settings.clips.relabel_dir and not (settings.clips.dir and settings.http.listen):
        raise ValueError("--relabel-dir relabels clips from the page: add --clips DIR and --http [HOST:]PORT")
    if settings.deploy.dir and not (settings.http.listen and settings.http.token):
        raise ValueError("--deploy-dir takes bundles pushed over HTTP, always with the token: add --http [HOST:]PORT "
                         "and --http-token (or HUMWATCH_HTTP_TOKEN)")


def open_settings_source(settings: LiveSettings) -> AudioSource:
    """The source a monitor's settings name (the system's input device when none)."""
    from edge.monitor.sources import open_source

    return open_source(settings.source or settings.device, settings.source_format)


class Stopped(BaseException):
    """SIGINT or SIGTERM came before the monitors ran (while the model loaded or warmed up, ...): a
    BaseException, as KeyboardInterrupt, so that no `except Exception` on the way keeps it."""


class StopOnSignals:
    """SIGINT and SIGTERM for the whole life of `humwatch live`: until `assembly` is set they raise
    Stopped wherever the process is, so what was already made is closed as it unwinds; then they
    stop the assembly's monitors, which close everything. (A process with no handler for SIGTERM
    ignores it as PID 1, in a container.) A context: on leaving, the handlers before it return."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.assembly: Assembly | None = None
        self._before = {signum: signal.getsignal(signum) for signum in self.SIGNALS}

    def __enter__(self) -> StopOnSignals:
        for signum in self.SIGNALS:
            signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._before.items():
            signal.signal(signum, handler)

    def _handle(self, signum: int, frame) -> None:
        if self.assembly is None:
            raise Stopped(signal.Signals(signum).name)
        self.assembly.stop()


class MonitorsEnded(RuntimeError):
    """Every monitor of the process stopped by itself (their standard input ended, ...); the message names each."""


class Shared:
    """What the detectors of one process share: the model, the teacher, the hop measurement (one
    warm-up), the lock under which one window is decided at a time."""

    def __init__(self, settings: LiveSettings, monitors: int = 1) -> None:
        require_bundle(settings)
        self.settings = settings
        self.overrides = settings.decision_overrides()
        self.classifier = self.open(settings.bundle)  # a bad override fails before the warm-up
        if monitors > 1:
            log.info("%d monitors share one %s model and the CPU budget: %.0f %% of the cores each",
                     monitors, self.classifier.precision, 100 * settings.cpu_budget / monitors)
        self.measured = plan_hop(self.classifier, settings.hop, settings.cpu_budget / monitors)  # one warm-up for all
        self.inference_lock = threading.Lock()
        self._teacher: TeacherProcess | None = None
        self._teacher_lock = threading.Lock()

    def open(self, bundle: Path) -> Classifier:
        """A bundle's model checked as at start (bundle.json, every file, the graphs, one test window)
        and the levels given (--level) checked against its appliances."""
        classifier = open_classifier(bundle, self.settings.precision, self.settings.threads)
        self.overrides.apply(classifier.decision)
        return classifier

    def use(self, classifier: Classifier) -> None:
        """Another model for every monitor (called holding the inference lock), audited by its bundle's teacher."""
        with self._teacher_lock:
            self.classifier, self._teacher = classifier, None

    def planner(self) -> HopPlanner:
        """A monitor's own hop planner (it follows that monitor's measured cost), from the one warm-up."""
        measured = self.measured
        return HopPlanner(None if measured.auto else measured.hop_sec, measured.cpu_sec, measured.budget, measured.cores)

    def teacher(self) -> TeacherProcess:
        """The teacher every monitor's audit uses: a process of its own at each audit ([audit] teacher,
        else the bundle's teacher precision)."""
        with self._teacher_lock:
            if self._teacher is None:
                bundle = self.classifier.bundle
                self._teacher = TeacherProcess(bundle, self.settings.audit.teacher or bundle.teacher_precision)
            return self._teacher


class TaggedPrinter(LinePrinter):
    """The printer of one of several monitors: each line and event starts with its "monitor" name."""

    def __init__(self, only_changes: bool, monitor: str) -> None:
        super().__init__(only_changes)
        self.monitor = monitor

    def _print(self, record: dict) -> None:
        super()._print({"monitor": self.monitor, **record})


class Monitor:
    """One source and its outputs. `server`: the process's HTTP server, if any; `several`: one of
    several monitors (its lines, log, page and metrics then carry its name)."""

    def __init__(self, settings: LiveSettings, shared: Shared, notifier, server, several: bool,
                 open_source: Callable[[LiveSettings], AudioSource], deployed: Callable[[], dict] | None = None) -> None:
        self.settings, self.name, self.shared = settings, settings.name, shared
        self.ident = monitor_id(settings) if several else None
        self.error: BaseException | None = None
        self._closers: list[Callable[[], None]] = []
        self._starters: list[Callable[[], None]] = []
        auditor = open_auditor(settings, shared.classifier, shared.teacher)
        self.detector = Detector(shared.classifier, shared.planner(), shared.overrides, auditor=auditor,
                                 recent_sec=settings.clips.seconds if settings.clips.dir else 0.0,
                                 signal_floor_dbfs=settings.signal_floor_dbfs)
        self.appliances = self.detector.decision.appliances  # the bundle's: its entities, history, alarms, energy
        self.source = open_source(settings)
        self.outputs = FanOut(name=self.name if several else None)
        self.monitor = LiveMonitor(self.detector, self.source, self.outputs, max_lag_sec=settings.max_lag,
                                   inference_lock=shared.inference_lock, name=self.name if several else None)
        try:
            printer = TaggedPrinter(settings.only_changes, self.name) if several else LinePrinter(settings.only_changes)
            self.printer = self.outputs.add(printer, "--output" if settings.output else "stdout")
            self._closers.append(self.printer.close)
            self.outputs.add(notifier, "systemd")
            self.household = self._history()
            self.publisher = self._mqtt()
            if server is not None:
                self._page(server, deployed)
            self._clips()
        except BaseException:
            self.close()
            raise

    def prepare(self, classifier: Classifier) -> Auditor | None:
        """Refuse (ValueError) another model this monitor cannot take over with (its window, the
        appliances --alarm and --watts name, the audit's settings); else its auditor."""
        self.detector.fits(classifier)
        self._check_named(classifier.decision.appliances.names, "the new bundle's")
        return open_auditor(self.settings, classifier, self.shared.teacher)

    def _check_named(self, appliances: tuple[str, ...], whose: str) -> None:
        """Each --alarm and --watts names one of `appliances` (ValueError naming it)."""
        from edge.home.alarms import AlarmRule
        from edge.home.household import check_appliances, check_watts, parse_watts

        settings = self.settings
        check_appliances("--alarm", {AlarmRule.parse(text).appliance: text.strip() for text in settings.alarm},
                         appliances, whose)
        check_watts(parse_watts(settings.watts), appliances, whose)

    def swap(self, classifier: Classifier, auditor: Auditor | None) -> None:
        """Decide with another model from the next window on (holding the inference lock); the
        history, MQTT device and page go on, with its appliances."""
        self.detector.swap(classifier, auditor)
        self.appliances = self.detector.decision.appliances
        if self.household is not None:
            self.household.history.appliances = self.appliances.names
        if self.publisher is not None:
            self.publisher.set_appliances(self.appliances)

    def _history(self):
        """History, alarms and energy for the bundle's appliances (each --alarm and --watts must name one)."""
        if not self.settings.history:
            return None
        from edge.home.alarms import AlarmRule, Alarms
        from edge.home.history import History
        from edge.home.household import Household, parse_watts

        settings, appliances = self.settings, self.appliances.names
        rules, power = [AlarmRule.parse(rule) for rule in settings.alarm], parse_watts(settings.watts)
        self._check_named(appliances, "the bundle's")
        history = History(settings.history, settings.history_days, appliances=appliances)
        household = self.outputs.add(Household(history, Alarms(rules), power, self.printer.event), "--history")
        self._closers.append(household.close)
        return household

    def _mqtt(self):
        if not self.settings.mqtt.url:
            return None
        from edge.home.mqtt import MqttPublisher, MqttSettings

        options = self.settings.mqtt
        mqtt = MqttSettings.from_url(options.url, username=options.user, password=options.password,
                                     name=self.settings.name, device_id=options.device_id,
                                     heartbeat_sec=options.heartbeat)
        publisher = self.outputs.add(MqttPublisher(mqtt, household=self.household, appliances=self.appliances), "MQTT")
        self._starters.append(publisher.start)
        self._closers.append(self._close_mqtt)
        return publisher

    def _close_mqtt(self) -> None:
        """Its Home Assistant device says offline (when the monitor ends, and at the process's end)."""
        publisher, self.publisher = self.publisher, None
        if publisher is not None:
            publisher.close()

    def _page(self, server, deployed: Callable[[], dict] | None) -> None:
        from edge.home.page import Page, PageSettings

        clips = self.settings.clips
        recorder = None
        if clips.relabel_dir:  # the page records samples from this monitor's input into it
            from edge.home.samples import Recorder, SampleFolder

            clips.relabel_dir.mkdir(parents=True, exist_ok=True)
            recorder = Recorder(SampleFolder(clips.relabel_dir), clips.record_max_sec, clips.recordings_max)
            self.monitor.taps.append(recorder)
        page = Page(PageSettings(clips.dir, clips.relabel_dir, self.name, several=self.ident is not None),
                    lambda: self.detector.decision, self.household, recorder=recorder, deployed=deployed)
        self.outputs.add(server.add(self.monitor, self.household, page, self.name, self.ident), "HTTP")

    def _clips(self) -> None:
        if not self.settings.clips.dir:
            return
        from edge.home.clips import ClipWriter

        clips = self.settings.clips
        self.outputs.add(ClipWriter(clips.dir, self.monitor.recent_audio, self.detector.sample_rate,
                                    clips.seconds, clips.max_mb), "--clips")

    def start(self) -> None:
        """Open --output and connect to MQTT."""
        if self.settings.output:
            self.printer.append_to(self.settings.output)
        for start in self._starters:
            start()

    def run(self) -> None:
        """Decide until stopped; what ended the monitor by itself is kept in `error` (and logged
        where other monitors go on), and its Home Assistant device says offline."""
        try:
            self.monitor.run()
        except Exception as error:
            self.error = error
            if self.ident is not None:
                log.error("%s stopped: %s; the other monitors go on", self.name, error_text(error),
                          exc_info=None if isinstance(error, (OSError, ValueError, EOFError)) else error)
        finally:
            self._close_mqtt()

    def close(self) -> None:
        """Close the outputs, the last made first (safe to call twice)."""
        closers, self._closers = self._closers, []
        for close in reversed(closers):
            close()


class Assembly:
    """The monitors of one process and what they share. Build (everything that can refuse),
    :meth:`start` (files and servers), :meth:`run` until :meth:`stop` or every monitor ended by
    itself, :meth:`close` (safe at any point: a refusal closes what was made). `open_source` makes
    each monitor's source (tests pass their own)."""

    def __init__(self, settings: LiveSettings | list[LiveSettings],
                 open_source: Callable[[LiveSettings], AudioSource] = open_settings_source) -> None:
        from edge.monitor.systemd import SystemdNotifier

        self.settings = [settings] if isinstance(settings, LiveSettings) else list(settings)
        for each in self.settings:
            check_options(each)
        deploy = self.settings[0].deploy
        bundle = started_bundle(deploy.dir, self.settings[0].bundle)  # the one pushed last, if any
        self.settings = [dataclasses.replace(each, bundle=bundle) for each in self.settings]
        first, several = self.settings[0], len(self.settings) > 1
        self.monitors: list[Monitor] = []
        self._closers: list[Callable[[], None]] = []
        self._starters: list[Callable[[], None]] = []
        self.deployer: Deployer | None = None
        try:
            self.shared = Shared(first, len(self.settings))
            self.notifier = SystemdNotifier()
            self._closers.append(self.notifier.close)
            self.server = self._http(first, several)
            for each in self.settings:
                self.monitors.append(Monitor(each, self.shared, self.notifier, self.server, several, open_source,
                                             self.deployer.status if self.deployer else None))
                self._closers.append(self.monitors[-1].close)
        except BaseException:
            self.close()
            raise

    def _http(self, settings: LiveSettings, several: bool):
        if not settings.http.listen:
            return None
        from edge.home.http_status import StatusServer, parse_listen

        http, deploy = settings.http, settings.deploy
        self.deployer = None if not deploy.dir else Deployer(deploy.dir, settings.bundle, int(deploy.max_mb * 1e6),
                                                             self.swap)
        server = StatusServer(None, *parse_listen(http.listen), token=http.token, hosts=http.hosts,
                              deploy=self.deployer)
        self._starters.append(server.start)
        self._closers.append(server.close)
        return server

    def swap(self, bundle: Path) -> None:
        """Every monitor decides with the bundle at `bundle` from its next window on: checked first as
        at start, and for each monitor (BundleError or ValueError: refused, nothing changed); then
        swapped between two windows, under the inference lock. The monitors share one model, so a
        push to any of them swaps it for all."""
        classifier = self.shared.open(bundle)
        auditors = [monitor.prepare(classifier) for monitor in self.monitors]
        with self.shared.inference_lock:
            self.shared.use(classifier)
            for monitor, auditor in zip(self.monitors, auditors):
                monitor.swap(classifier, auditor)

    def start(self) -> None:
        """Open each --output, connect to MQTT, start HTTP (after everything that can refuse was made)."""
        try:
            for monitor in self.monitors:
                monitor.start()
            for start in self._starters:
                start()
        except BaseException:
            self.close()
            raise

    def stop(self) -> None:
        for monitor in self.monitors:
            monitor.monitor.stop.set()

    def run(self) -> None:
        """Run each monitor in its own thread until :meth:`stop` (SIGINT / SIGTERM: see StopOnSignals)
        or each ended by itself; then close everything. The only monitor's error is raised as it is;
        when several all ended by themselves, a MonitorsEnded naming each."""
        threads = [threading.Thread(target=monitor.run, name=f"monitor {monitor.name}", daemon=True)
                   for monitor in self.monitors]
        self.notifier.ready()
        try:
            for thread in threads:
                thread.start()
            while any(thread.is_alive() for thread in threads):
                for thread in threads:
                    thread.join(0.5)  # short waits: the main thread handles the signals
        finally:
            self.stop()
            self.close()
        log.info("stopped")
        ended = [monitor for monitor in self.monitors if monitor.error is not None]
        if len(self.monitors) == 1 and ended:
            raise ended[0].error
        if ended and len(ended) == len(self.monitors):
            raise MonitorsEnded("every monitor stopped: " + "; ".join(f"{monitor.name}: {error_text(monitor.error)}"
                                                                      for monitor in ended)) from ended[0].error

    def close(self) -> None:
        """Close everything, the last made first (safe to call twice)."""
        closers, self._closers = self._closers, []
        for close in reversed(closers):
            close()
