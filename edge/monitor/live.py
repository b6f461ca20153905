"""Live: microphone -> bounded buffer -> a worker that decides every hop, for months on end.

The audio callback only copies each chunk, stamped with its arrival time, into a bounded buffer.
The worker resamples, keeps the last window, and runs inference every hop. The lag is wall-clock
time: how long ago the newest sample of a window arrived. So seconds of audio that a network
source delivers at once after a stall (jitter) are decided, not dropped; when inference really
falls behind by more than `max_lag` seconds it skips to the newest audio and reports what it
dropped. The buffer holds a window, `max_lag`, a stall and two hops of audio, so memory never
grows. A device or stream that stops delivering audio (or cannot be opened) is reopened with
exponential backoff (1 s doubling to 10 s; afresh once audio was heard); standard input, which no
one can reopen, is waited on. While no audio arrives, every hop's line says ``no-audio`` and why
(edge.core.hearing), and /healthz names the input for the whole outage. The audio source is a
parameter, so tests drive it with a fake one.
Every hop's line goes to the sinks through a FanOut: a sink that cannot write (a full disk) is
logged once, named in /healthz while it fails, and called again next hop.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import logging
import sys
import threading
import time
from typing import Callable, Iterator, Protocol

import numpy as np

from edge.core.hearing import NO_AUDIO
from edge.core.output import error_text
from edge.core.redact import redact
from edge.engine.audit import Auditor
from edge.engine.classifier import ModelOutputError
from edge.engine.detector import Detector
from edge.engine.hop import HopLine

log = logging.getLogger("humwatch.live")
DROP_WINDOW_SEC = 60.0  # /healthz is degraded while audio was dropped this recently

AudioCallback = Callable[[np.ndarray, bool], None]


class DeviceUnavailable(OSError):
    """The audio device cannot be opened or stopped delivering audio."""


class AudioSource(Protocol):
    """Where audio comes from. `name` says which input it is (in /healthz and the no-audio lines);
    `reopens` is False for one that cannot be reopened (standard input), which is waited on instead."""

    name: str
    reopens: bool

    def start(self, callback: AudioCallback) -> int:
        """Start calling callback(mono float32 chunk, overflowed) from the audio thread; return the rate."""

    def check(self) -> None:
        """Raise what the source's own thread met (DeviceUnavailable: lost, reopen it; other errors end
        the monitor); called by the monitor after every wait for audio."""

    def stop(self) -> None:
        """Stop and release the device (safe to call twice)."""


class AudioBuffer:
    """Bounded FIFO between the audio thread and the worker; the oldest audio goes when full. Each
    chunk keeps the `clock` time it arrived at."""

    def __init__(self, capacity_samples: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.capacity, self.clock = capacity_samples, clock
        self._chunks: collections.deque[tuple[np.ndarray, float]] = collections.deque()
        self._size = 0
        self._ready = threading.Condition()
        self.dropped_samples = 0
        self.overflows = 0

    def push(self, chunk: np.ndarray, overflowed: bool = False) -> None:
        """Called from the audio thread: append a copy, trim to capacity, wake the worker."""
        with self._ready:
            self.overflows += int(overflowed)
            self._chunks.append((np.array(chunk, dtype=np.float32, copy=True), self.clock()))
            self._size += len(chunk)
            while self._size > self.capacity:  # drop the oldest samples, keeping the newest `capacity`
                excess = self._size - self.capacity
                oldest, arrived = self._chunks[0]
                if len(oldest) <= excess:
                    excess = len(self._chunks.popleft()[0])
                else:
                    self._chunks[0] = (oldest[excess:], arrived)
                self._size -= excess
                self.dropped_samples += excess
            self._ready.notify()

    def take(self, timeout: float) -> list[tuple[np.ndarray, float]]:
        """All buffered chunks with their arrival times (waiting up to `timeout` s for some); [] when none came."""
        with self._ready:
            if not self._chunks:
                self._ready.wait(timeout)
            chunks, self._chunks, self._size = list(self._chunks), collections.deque(), 0
        return chunks


class Arrivals:
    """When the audio of the current time line arrived, so a window's lag is wall-clock time: how
    long ago its newest sample arrived. Positions are seconds since the last gap (where the
    detector's windows start afresh)."""

    def __init__(self) -> None:
        self.gap()

    def gap(self) -> None:
        self._chunks: collections.deque[tuple[float, float]] = collections.deque()  # (end position, arrival)
        self._pushed = 0.0

    def pushed(self, seconds: float, arrival: float) -> None:
        self._pushed += seconds
        self._chunks.append((self._pushed, arrival))

    def arrival(self, position: float) -> float | None:
        """When the audio at `position` arrived (None: not yet). Positions asked for only grow, so the
        chunks before one are forgotten."""
        while self._chunks and self._chunks[0][0] < position - 1e-6:
            self._chunks.popleft()
        return self._chunks[0][1] if self._chunks else None


class _Named(logging.LoggerAdapter):
    def process(self, msg, kwargs):
        return f"{self.extra['monitor']}: {msg}", kwargs


def named(monitor: str | None) -> logging.Logger | logging.LoggerAdapter:
    """The live log, its lines starting with the monitor's name where a process runs several."""
    return log if monitor is None else _Named(log, {"monitor": monitor})


class Failures:
    """What fails now, by name: one log line when a kind of failure starts (not one per hop), one
    when it works again, and the latest message for /healthz meanwhile."""

    def __init__(self, clock: Callable[[], float] = time.monotonic,
                 logger: logging.Logger | logging.LoggerAdapter = log) -> None:
        self.clock, self.log = clock, logger
        self._now: dict[str, _Failure] = {}

    def failed(self, name: str, message: str, error: Exception) -> None:
        kind = (type(error).__name__, getattr(error, "errno", None))
        failure = self._now.get(name)
        if failure is None or failure.kind != kind:
            # OSError (disk, network) and ValueError (bad data) are one line; anything else is a bug: its traceback, once
            self.log.error("%s; the monitor goes on and retries every hop", message,
                           exc_info=None if isinstance(error, (OSError, ValueError)) else error)
            self._now[name] = failure = _Failure(kind, message, self.clock() if failure is None else failure.since)
        failure.message, failure.count = message, failure.count + 1

    def worked(self, name: str) -> None:
        failure = self._now.pop(name, None)
        if failure is not None:
            self.log.info("%s works again after %.0f s (%d failed tries)", name, self.clock() - failure.since, failure.count)

    def problems(self, now: float) -> list[str]:
        return [f"{failure.message} (for {now - failure.since:.0f} s)" for failure in list(self._now.values())]


@dataclasses.dataclass
class _Failure:
    kind: tuple[str, int | None]
    message: str
    since: float
    count: int = 0


class FanOut:
    """One on_line callback feeding every sink (stdout and --output, history, MQTT, HTTP, clips); a
    sink that raises is reported in `failures` and called again on the next hop, never fatal."""

    def __init__(self, sinks: list[Callable[[HopLine], None]] | None = None, name: str | None = None) -> None:
        self.sinks = [] if sinks is None else sinks  # the caller may add sinks to its list later
        self.failures = Failures(logger=named(name))
        self._names: dict[int, str] = {}

    def add(self, sink: Callable[[HopLine], None], name: str) -> Callable[[HopLine], None]:
        """Append a sink under the name that log lines and /healthz give it (e.g. "--history")."""
        self.sinks.append(sink)
        self._names[id(sink)] = name
        return sink

    def name(self, sink) -> str:
        return self._names.get(id(sink)) or getattr(sink, "__name__", None) or type(sink).__name__

    def __call__(self, line: HopLine) -> None:
        for sink in list(self.sinks):
            name = self.name(sink)
            try:
                sink(line)
            except Exception as error:  # a full disk or a broken sink must not stop the monitor
                text = error_text(error)
                self.failures.failed(name, f"cannot write {text if text.startswith(name) else f'{name}: {text}'}", error)
            else:
                self.failures.worked(name)


@dataclasses.dataclass(frozen=True)
class Health:
    """The monitor's health and counters, as /healthz, /metrics and MQTT report them."""

    ok: bool
    reason: str
    overflows: int
    dropped_sec: float
    device_losses: int


class LiveMonitor:
    """Runs the decision loop over an audio source until `stop` is set.

    `on_line` gets every hop's line: a FanOut, or one sink (then wrapped in one), whose failures
    /healthz reports. A window whose graphs give unusable probabilities (ModelOutputError: NaN,
    infinity) gets no line: it is logged once, /healthz says so while it lasts, and the monitor goes on.

    Several monitors in one process share `inference_lock`: one window is decided at a time, so
    each window's process CPU time is its own (the hop planner's measure) and the shared model's
    threads serve one window at once. `name` starts their log lines.
    """

    def __init__(self, detector: Detector, source: AudioSource, on_line: Callable[[HopLine], None],
                 max_lag_sec: float = 3.0, stall_timeout_sec: float = 10.0,
                 backoff_sec: tuple[float, float] = (1.0, 10.0), clock: Callable[[], float] = time.monotonic,
                 inference_lock: threading.Lock | None = None, name: str | None = None) -> None:
        self.detector = detector
        self.name, self.log = name, named(name)
        self.inference_lock = inference_lock or threading.Lock()
        self.window = detector.classifier.bundle.window
        self.source = source
        self.input_name = getattr(source, "name", None) or "the audio source"
        self.outputs = on_line if isinstance(on_line, FanOut) else FanOut([on_line])
        self.failures = Failures(logger=self.log)  # inference
        self.max_lag_sec = max_lag_sec
        self.stall_timeout_sec = stall_timeout_sec
        self.backoff_sec = backoff_sec
        self.clock = clock  # the wall clock of arrivals, lag, stalls and drops (tests advance their own)
        self.stop = threading.Event()
        self.dropped_sec = 0.0
        self._drops: collections.deque[tuple[float, float, str]] = collections.deque()  # (when, seconds, why)
        self.device_losses = 0
        self.lost: str | None = None  # why the source is lost, until its audio comes back
        self.ended: str | None = None  # why run() ended with an error (standard input that ended)
        self.last_audio_at: float | None = None
        self.last_line: HopLine | None = None
        self.undecided_since: float | None = None  # since when the hops decide nothing (no signal, no audio)
        self._buffer: AudioBuffer | None = None
        self._arrivals = Arrivals()
        self._next_end = 0.0  # where the next window ends, in the seconds since the last gap that Arrivals counts
        self._last_line_at = 0.0
        self.taps: list[Callable[[np.ndarray, int], None]] = []  # each gets every chunk heard, at its rate (recordings)

    @property
    def auditor(self) -> Auditor | None:
        return self.detector.auditor

    @property
    def overflows(self) -> int:
        return self._buffer.overflows if self._buffer else 0

    def recent_audio(self) -> np.ndarray:
        """The detector's recent audio at its rate (for clips)."""
        return self.detector.windower.recent

    def health(self, now: float | None = None) -> Health:
        """Healthy while audio with a signal arrives, none was dropped in the last minute, inference
        keeps up and every output can be written; otherwise every reason why not."""
        now = self.clock() if now is None else now
        problems = []
        if self.ended is not None:
            problems.append(f"stopped: {self.ended}")
        elif (unheard := self.input_problem(now)) is not None:
            problems.append(unheard)
        elif self.last_line is not None and self.last_line.lag_sec > self.max_lag_sec:
            problems.append(f"inference is {self.last_line.lag_sec:.1f} s behind (max {self.max_lag_sec:g} s)")
        drops = [(seconds, why) for at, seconds, why in list(self._drops) if at > now - DROP_WINDOW_SEC]
        if drops:
            whys = ", ".join(sorted({why for _, why in drops}))
            problems.append(f"{sum(seconds for seconds, _ in drops):.1f} s of audio dropped in the last minute ({whys}); "
                            f"{self.dropped_sec:.1f} s in all")
        problems += self.failures.problems(now) + self.outputs.failures.problems(now)
        if self.auditor is not None and self.auditor.problem():
            problems.append(self.auditor.problem())
        reason = redact("; ".join(problems)) or "audio arriving, inference keeping up, outputs written"
        if not problems and self.auditor is not None and self.auditor.fell_back:
            reason += "; the teacher decides since the student failed its audit"
        return Health(not problems, reason, self.overflows, self.dropped_sec, self.device_losses)

    def input_problem(self, now: float) -> str | None:
        """Why nothing is heard from the input, naming it (None while its audio is decided)."""
        where, line = self.input_name, self.last_line
        unheard = f"for {now - self.undecided_since:.0f} s" if self.undecided_since is not None else "just now"
        if self.lost is not None:
            return f"{where}: lost ({self.lost}) {unheard}; reopening it"
        if self.last_audio_at is None:
            return f"{where}: no audio received yet"
        if now - self.last_audio_at > self.stall_timeout_sec:
            return f"{where}: no audio for {now - self.last_audio_at:.0f} s"
        if line is not None and line.status == NO_AUDIO and self.last_audio_at > self._last_line_at:
            return f"{where}: the audio is back after no audio {unheard}; deciding once a window is full"
        if line is not None and not line.decided:
            return f"{where}: {line.reason} {unheard}"
        return None

    def run(self) -> None:
        """Open the source, decide every hop, and reopen it with backoff when it fails. What ends it
        otherwise (standard input that ended) is raised, and /healthz says it stopped."""
        try:
            self._run()
        except Exception as error:
            self.ended = error_text(error)
            raise

    def _run(self) -> None:
        delay = self.backoff_sec[0]
        while not self.stop.is_set():
            audio_before = self.last_audio_at
            try:
                self._session()
            except DeviceUnavailable as error:
                self.device_losses += 1
                self.lost = str(error)
                if self.last_audio_at != audio_before:  # it worked for a while: start the backoff afresh
                    delay = self.backoff_sec[0]
                self.log.warning("%s lost: %s; retrying in %g s", self.input_name, error, delay)
                self.source.stop()
                self._wait_without_audio(delay)
                delay = min(delay * 2, self.backoff_sec[1])
            finally:
                self.source.stop()

    def _wait_without_audio(self, seconds: float) -> None:
        """Wait `seconds` (or until stopped), saying no-audio every hop meanwhile."""
        deadline = time.monotonic() + seconds
        while not self.stop.is_set() and (left := deadline - time.monotonic()) > 0:
            self._no_audio(f"{self.lost}; reopening it")
            self.stop.wait(min(left, self.detector.planner.hop_sec))

    def _no_audio(self, why: str) -> None:
        """A no-audio line, at most one a hop (the first at once). The decisions start afresh after
        it; the windows go on with what arrives (a pipe that paused sends the rest of its audio)."""
        now = self.clock()
        last = self.last_line
        if last is not None and last.status == NO_AUDIO and now - self._last_line_at < self.detector.planner.hop_sec:
            return
        line = self.detector.undecided(self.detector.windower.heard_sec, NO_AUDIO, f"no audio: {why}",
                                       dropped_sec=round(self.dropped_sec, 3), overflows=self.overflows)
        self._emit(line)

    def _emit(self, line: HopLine) -> None:
        """A hop's line to the outputs; the input's state follows it."""
        now = self.clock()
        if line.decided:
            self.undecided_since = None
        elif self.undecided_since is None or (self.last_line is not None and self.last_line.status != line.status):
            self.undecided_since = now
        self.last_line, self._last_line_at = line, now
        self.outputs(line)

    def _session(self) -> None:
        # The buffer must exist before the source starts: a device may deliver audio at once.
        previous = self._buffer
        self._buffer = AudioBuffer(capacity_samples=sys.maxsize, clock=self.clock)
        if previous:
            self._buffer.overflows, self._buffer.dropped_samples = previous.overflows, previous.dropped_samples
        rate = self.source.start(self._push)
        # a stall's worth too: the audio a network source delivers at once when it resumes
        self._buffer.capacity = int((self.window.window_sec + self.max_lag_sec + self.stall_timeout_sec
                                     + 2 * self.detector.planner.hop_sec) * rate)
        self.log.info("listening to %s at %d Hz (resampled to %d Hz)", self.input_name, rate, self.window.sample_rate)
        self._gap(0.0)  # a reopened device continues the time line, not the last window
        dropped_in_buffer = self._buffer.dropped_samples
        last_audio = self.clock()
        while not self.stop.is_set():
            chunks = self._buffer.take(timeout=0.2)
            if self._buffer.dropped_samples != dropped_in_buffer:
                seconds = (self._buffer.dropped_samples - dropped_in_buffer) / rate
                dropped_in_buffer = self._buffer.dropped_samples
                self._report_drop(seconds, "audio buffer full")
                self._gap(seconds)
            if chunks:
                last_audio = self.last_audio_at = self.clock()
                self.lost = None
                self._decide(chunks, rate)
            elif self.clock() - last_audio > self.stall_timeout_sec:
                stalled = f"no audio for {self.clock() - last_audio:.0f} s"
                if getattr(self.source, "reopens", True):
                    raise DeviceUnavailable(stalled)
                self._no_audio(f"{self.input_name} sent nothing for {self.clock() - last_audio:.0f} s; waiting for it")
            try:
                self.source.check()
            except Exception:  # lost or ended: the audio that came before is decided all the same
                self._decide(self._buffer.take(timeout=0), rate)
                raise

    def _decide(self, chunks: list[tuple[np.ndarray, float]], rate: int) -> None:
        for chunk, arrival in chunks:
            self.detector.push(chunk, rate)
            self._arrivals.pushed(len(chunk) / rate, arrival)
            for tap in self.taps:
                try:
                    tap(chunk, rate)
                except Exception as error:  # a recording that fails never stops the decisions
                    self.failures.failed("a recording", f"a recording failed: {error_text(error)}", error)
        self._decide_hops()

    def _gap(self, seconds: float) -> None:
        """The detector's windows start afresh `seconds` later (see Detector.gap)."""
        self.detector.gap(seconds)
        self._arrivals.gap()
        self._next_end = self.window.window_sec

    def _lag(self) -> float | None:
        """Seconds since the newest sample of the next window arrived (None: it has not)."""
        arrival = self._arrivals.arrival(self._next_end)
        return None if arrival is None else self.clock() - arrival

    def _skip_if_behind(self) -> None:
        """When the next window's audio arrived more than max_lag ago, go on with the newest window."""
        lag = self._lag()
        if lag is not None and lag > self.max_lag_sec:
            skipped = self.detector.windower.skip_backlog(0.0)
            if skipped:
                self._next_end += skipped
                self._report_drop(skipped, "inference fell behind")

    def _push(self, chunk: np.ndarray, overflowed: bool) -> None:
        self._buffer.push(chunk, overflowed)

    def _report_drop(self, seconds: float, why: str) -> None:
        now = self.clock()
        self.dropped_sec += seconds
        self._drops.append((now, seconds, why))
        while self._drops[0][0] <= now - DROP_WINDOW_SEC:  # /healthz reads the last minute
            self._drops.popleft()
        self.log.warning("dropped %.2f s of audio (%s); %.1f s dropped in all", seconds, why, self.dropped_sec)

    def _decide_hops(self) -> None:
        """Decide every window the audio completes, checking the lag before each."""
        windower = self.detector.windower
        while True:
            self._skip_if_behind()
            try:
                with contextlib.closing(self.detector.decide()) as lines:
                    while (line := self._next(lines)) is not None:
                        lag = self._lag() or 0.0
                        self._next_end += windower.hop_samples / windower.sample_rate  # the hop after this window
                        line = dataclasses.replace(line, lag_sec=round(lag, 3), dropped_sec=round(self.dropped_sec, 3),
                                                   overflows=self.overflows)
                        self.failures.worked("inference")
                        self._emit(line)
                        if (self._lag() or 0.0) > self.max_lag_sec:
                            break  # skip before deciding the next window
                    else:
                        return
            except ModelOutputError as error:  # e.g. probabilities that are not finite: this window has no decision
                self._next_end += windower.hop_samples / windower.sample_rate
                self.failures.failed("inference", f"inference failed at t={error.t:.1f} s, the window gets no decision: "
                                                  f"{error_text(error)}", error)

    def _next(self, lines: Iterator[HopLine]) -> HopLine | None:
        """The next window's line (None: no window is complete), decided holding the inference lock."""
        with self.inference_lock:
            return next(lines, None)
