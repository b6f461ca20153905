import errno
import re
import threading
import time

import numpy as np
import pytest

from edge.core.bundle import load_bundle
from edge.core.decision import DecisionConfig, DecisionOverrides
from edge.engine.classifier import Classifier, ModelOutputError
from edge.engine.detector import Detector
from edge.monitor import live
from edge.monitor.live import AudioBuffer, DeviceUnavailable, FanOut, LiveMonitor


class FakeSource:
    """Stands in for a microphone: the test pushes audio; opening can be made to fail."""

    def __init__(self, rate: int = 16_000, failures: int = 0) -> None:
        self.rate, self.failures = rate, failures
        self.callback = None
        self.opened = threading.Event()
        self.starts = 0
        self.broken: str | None = None  # set: the next check() says the stream was lost

    def start(self, callback):
        if self.failures:
            self.failures -= 1
            raise DeviceUnavailable("fake device unplugged")
        self.starts += 1
        self.callback = callback
        self.opened.set()
        return self.rate

    def check(self):
        if self.broken:
            broken, self.broken = self.broken, None
            raise DeviceUnavailable(broken)

    def stop(self):
        self.callback = None
        self.opened.clear()

    def feed(self, audio: np.ndarray, chunk: int = 1600, overflowed: bool = False) -> None:
        assert self.opened.wait(5), "the monitor never opened the source"
        for start in range(0, len(audio), chunk):
            self.callback(audio[start : start + chunk], overflowed)


def overrides_to(decision: DecisionConfig) -> DecisionOverrides:
    """Overrides that turn a bundle's decision into `decision` (its levels and spans)."""
    return DecisionOverrides({name: level.to_dict() for name, level in decision.levels.items()}, decision.median_sec,
                             decision.debounce_sec)


class Harness:
    """A monitor running in a thread, collecting its lines."""

    def __init__(self, bundle_dir, source, sinks=(), decision=None, classifier=None, planner=None, auditor=None,
                 history_sec=20.0, **options):
        bundle = load_bundle(bundle_dir)
        self.lines = []
        self.sinks = [self.lines.append, *sinks]  # a sink that needs the monitor can be appended later
        classifier = classifier or Classifier(bundle, "fp32", threads=1)
        detector = Detector(classifier, planner, overrides_to(decision) if decision else None, auditor, history_sec)
        self.monitor = LiveMonitor(detector, source, FanOut(self.sinks), backoff_sec=(0.01, 0.05), **options)
        self.thread = threading.Thread(target=self.monitor.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def wait_for(self, count: int, timeout: float = 30.0) -> list:
        deadline = time.monotonic() + timeout
        while len(self.lines) < count and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.lines

    def __exit__(self, *exc):
        self.monitor.stop.set()
        self.thread.join(10)
        assert not self.thread.is_alive(), "the monitor did not stop"


def _noise(seconds: float, rate: int = 16_000) -> np.ndarray:
    return (np.random.default_rng(0).standard_normal(int(seconds * rate)) * 0.01).astype(np.float32)


def test_one_line_per_hop_once_a_window_is_full(bundle_dir):
    source = FakeSource()
    with Harness(bundle_dir, source, max_lag_sec=100.0) as harness:
        source.feed(_noise(15.0))
        lines = harness.wait_for(7)
        time.sleep(0.2)
    # 15 s = 10 hops of 1.5 s; the first window is full after 4 hops: 7 lines at t = 6.0 ... 15.0
    assert [line.t for line in lines] == [6.0 + 1.5 * i for i in range(7)]
    assert {"status", "debounced_status", "p_ac", "p_fridge", "median_ac", "infer_ms", "dropped_sec", "overflows"} <= set(lines[0].to_json())
    assert lines[-1].dropped_sec == 0 and lines[-1].overflows == 0


def test_native_rate_is_resampled(bundle_dir):
    source = FakeSource(rate=48_000)
    with Harness(bundle_dir, source, max_lag_sec=100.0) as harness:
        source.feed(_noise(12.5, 48_000), chunk=4800)
        lines = harness.wait_for(5)
    assert [line.t for line in lines[:4]] == [6.0, 7.5, 9.0, 10.5]


class Clock:
    """The monitor's wall clock, which a test moves on (a stalled stream, slow inference) without waiting."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.offset


class SlowClassifier:
    """A classifier whose inference takes `seconds` of the test's clock per window."""

    def __init__(self, classifier, clock: Clock, seconds: float) -> None:
        self.inner, self.clock, self.seconds = classifier, clock, seconds

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def predict(self, windows):
        self.clock.offset += self.seconds
        return self.inner.predict(windows)


def _falling_behind(bundle_dir, clock: Clock, **options) -> Harness:
    """30 s arrive at once and each window takes 0.8 s: a monitor really falling behind (max lag 2 s)."""
    classifier = SlowClassifier(Classifier(load_bundle(bundle_dir), "fp32", threads=1), clock, 0.8)
    return Harness(bundle_dir, FakeSource(), classifier=classifier, max_lag_sec=2.0, clock=clock, **options)


def test_inference_falling_behind_beyond_max_lag_skips_to_the_newest_audio(bundle_dir):
    clock = Clock()
    with _falling_behind(bundle_dir, clock) as harness:
        harness.monitor.source.feed(_noise(30.0), chunk=16_000 * 30)
        lines = harness.wait_for(4)
        time.sleep(0.3)
    # the buffer keeps 21 s (6 s window + 2 s lag + 10 s stall + 2 hops): 9 s go. Windows end at 15,
    # 16.5, 18 (their audio arrived 0, 0.8, 1.6 s before); the next one's arrived 2.4 s ago, over the
    # 2 s: everything before the newest window is skipped (10.5 s), which is decided, contiguous
    assert [line.t for line in lines] == [15.0, 16.5, 18.0, 30.0]
    assert [line.dropped_sec for line in lines] == [9.0, 9.0, 9.0, 19.5]
    lags = [line.lag_sec - 0.8 * (i + 1) for i, line in enumerate(lines)]  # wall-clock seconds since the audio came
    assert all(0 <= lag < 0.3 for lag in lags), lags


@pytest.mark.parametrize("stall", [5.0, 8.0])
def test_a_burst_after_a_network_stall_is_not_falling_behind(bundle_dir, stall):
    """Jitter: a stream stalls, then delivers the stall's audio at once. That audio is decided, not
    dropped (by the queued audio alone, 8 s would be 6.5 s behind, over hop + max lag)."""
    clock, source = Clock(), FakeSource()
    with Harness(bundle_dir, source, max_lag_sec=3.0, clock=clock) as harness:
        source.feed(_noise(6.0))
        harness.wait_for(1)
        clock.offset += stall  # no audio for `stall` seconds (under the 10 s stall timeout) ...
        source.feed(_noise(stall), chunk=int(16_000 * stall))  # ... then all of it at once
        lines = harness.wait_for(1 + int(stall / 1.5))
        time.sleep(0.2)
        health = harness.monitor.health()
    assert [line.t for line in lines] == [6.0 + 1.5 * i for i in range(1 + int(stall / 1.5))], "a line per hop"
    assert all(line.dropped_sec == 0 and line.lag_sec < 3.0 for line in lines)
    assert health.ok and harness.monitor.dropped_sec == 0, health.reason


def test_buffer_is_bounded():
    buffer = AudioBuffer(capacity_samples=10_000, clock=lambda: 7.0)
    for _ in range(100):
        buffer.push(np.zeros(1_000, np.float32))
    chunks = buffer.take(timeout=0)
    assert sum(len(chunk) for chunk, _ in chunks) == 10_000 and {arrival for _, arrival in chunks} == {7.0}
    assert buffer.dropped_samples == 90_000


def test_overflows_are_counted_and_reported(bundle_dir):
    source = FakeSource()
    with Harness(bundle_dir, source, max_lag_sec=100.0) as harness:
        source.feed(_noise(3.0), overflowed=True)
        source.feed(_noise(4.5))
        lines = harness.wait_for(2)
    assert lines[-1].overflows == 30  # 3 s in 0.1 s chunks, each flagged


def test_device_that_fails_to_open_is_retried(bundle_dir, caplog):
    source = FakeSource(failures=3)
    with caplog.at_level("WARNING", logger="humwatch.live"), Harness(bundle_dir, source, max_lag_sec=100.0) as harness:
        source.feed(_noise(7.5))
        assert eventually(lambda: sum(line.decided for line in harness.lines) == 2)
    lines = harness.lines
    assert sum(line.decided for line in lines) == 2 and harness.monitor.device_losses == 3
    assert lines[0].status == "no-audio" and lines[0].reason == "no audio: fake device unplugged; reopening it"
    assert lines[0].changed and lines[0].to_json()["reason"] == lines[0].reason, "said at once, before the retries"
    assert caplog.text.count("the audio source lost: fake device unplugged") == 3


def test_healthz_names_a_lost_source_until_its_audio_comes_back(bundle_dir):
    source = FakeSource()
    with Harness(bundle_dir, source, max_lag_sec=100.0) as harness:
        source.feed(_noise(6.0))
        harness.wait_for(1)
        source.failures, source.broken = 1_000, "the stream ended"  # the camera goes away: every reopen fails
        assert eventually(lambda: harness.monitor.device_losses >= 2)
        lost = harness.monitor.health()
        source.failures = 0  # it comes back
        source.feed(_noise(1.5))
        assert eventually(lambda: "audio is back" in harness.monitor.health().reason), "no decision yet: still degraded"
        source.feed(_noise(4.5))  # a full window: decided again
        assert eventually(lambda: harness.monitor.health().ok)
    assert not lost.ok and re.match(r"the audio source: lost \(fake device unplugged\) for \d+ s; reopening it",
                                    lost.reason), lost.reason
    assert [line.status for line in harness.lines][-1] != "no-audio", "decided again once the audio came back"


def test_the_audio_that_came_before_the_source_ended_is_decided(bundle_dir):
    """`cat recording.raw | humwatch live --source -`: all of it arrives, then standard input ends."""
    from edge.monitor.sources import SourceEnded

    class Ended(FakeSource):
        def start(self, callback):
            callback(_noise(9.0), False)  # the whole recording at once ...
            return self.rate

        def check(self):
            raise SourceEnded("standard input ended")  # ... and the end right behind it

    lines = []
    monitor = LiveMonitor(Detector(Classifier(load_bundle(bundle_dir), "fp32", threads=1)), Ended(), lines.append,
                          max_lag_sec=100.0)
    with pytest.raises(SourceEnded):
        monitor.run()
    assert [line.t for line in lines] == [6.0, 7.5, 9.0]
    assert monitor.health().reason.startswith("stopped: standard input ended")


def test_device_that_stops_delivering_is_reopened(bundle_dir, caplog):
    source = FakeSource()
    with caplog.at_level("WARNING", logger="humwatch.live"), \
            Harness(bundle_dir, source, max_lag_sec=100.0, stall_timeout_sec=0.3) as harness:
        source.feed(_noise(6.0))
        harness.wait_for(1)
        deadline = time.monotonic() + 10
        while source.starts < 2 and time.monotonic() < deadline:  # silence: the monitor gives up and reopens
            time.sleep(0.02)
        source.feed(_noise(6.0))
        assert eventually(lambda: sum(line.decided for line in harness.lines) == 2)
    assert source.starts >= 2 and harness.monitor.device_losses >= 1
    assert "the audio source lost: no audio for 0 s" in caplog.text
    assert [line.t for line in harness.lines if line.decided] == [6.0, 12.0]
    assert "no-audio" in [line.status for line in harness.lines], "the stall said so"


def test_stop_ends_the_loop_promptly(bundle_dir):
    source = FakeSource()
    with Harness(bundle_dir, source) as harness:
        assert source.opened.wait(5)
        started = time.monotonic()
    assert time.monotonic() - started < 2 and harness.lines == []


def eventually(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.01)
    return predicate()


def test_a_sink_that_cannot_write_is_logged_once_named_in_healthz_and_recovers(bundle_dir, caplog):
    full = threading.Event()
    full.set()
    written = []

    def disk(line):
        if full.is_set():
            raise OSError(errno.ENOSPC, "/var/lib/humwatch/history.sqlite: No space left on device")
        written.append(line.t)

    source = FakeSource()
    with caplog.at_level("INFO", logger="humwatch.live"), Harness(bundle_dir, source, max_lag_sec=100.0) as harness:
        harness.monitor.outputs.add(disk, "--history")
        source.feed(_noise(10.5))
        assert len(harness.wait_for(4)) == 4, "a failing sink never stops the monitor"
        assert eventually(lambda: not harness.monitor.health().ok)
        reason = harness.monitor.health().reason
        assert reason.startswith("cannot write --history: /var/lib/humwatch/history.sqlite: No space left on device (disk full)")
        full.clear()
        source.feed(_noise(1.5))
        assert eventually(lambda: written == [12.0])
        health = harness.monitor.health()
    assert health.ok and health.reason == "audio arriving, inference keeping up, outputs written"
    failures = [record for record in caplog.records if "cannot write" in record.getMessage()]
    assert len(failures) == 1 and failures[0].exc_info is None, "one line per failure kind, no traceback"
    assert failures[0].levelname == "ERROR" and "disk full" in failures[0].getMessage()
    assert re.search(r"--history works again after \d+ s \(4 failed tries\)", caplog.text)


def test_a_new_kind_of_failure_is_logged_again(caplog):
    errors = [OSError(errno.ENOSPC, "a: No space left on device")] * 3 + [OSError(errno.EACCES, "a: Permission denied")] * 2

    def sink(line):
        raise errors.pop(0)

    outputs = FanOut()
    outputs.add(sink, "--output")
    with caplog.at_level("INFO", logger="humwatch.live"):
        for _ in range(5):
            outputs(None)
    assert [r.getMessage().split(";")[0] for r in caplog.records] == [
        "cannot write --output: a: No space left on device (disk full)", "cannot write --output: a: Permission denied"]
    assert outputs.failures.problems(time.monotonic())[0].startswith("cannot write --output: a: Permission denied (for ")


def test_audio_dropped_in_the_last_minute_makes_healthz_degraded(bundle_dir, monkeypatch):
    monkeypatch.setattr(live, "DROP_WINDOW_SEC", 5.0)  # the drops come 0 and 2.4 s into the 4 s of the test's clock
    clock = Clock()
    with _falling_behind(bundle_dir, clock) as harness:
        harness.monitor.source.feed(_noise(30.0), chunk=16_000 * 30)  # 19.5 s are dropped (above)
        harness.wait_for(4)
        harness.monitor.source.feed(_noise(1.5))  # the next hop arrives: decided 0.8 s later, in time
        lines = harness.wait_for(5)
        health = harness.monitor.health()
        assert lines[-1].lag_sec <= 2.0, "the lag alone would say all is well"
        assert not health.ok and "19.5 s of audio dropped in the last minute" in health.reason
        assert "audio buffer full" in health.reason and "inference fell behind" in health.reason
        clock.offset += 5.1
        later = harness.monitor.health()
    assert later.ok and later.dropped_sec == 19.5, later.reason


class FlakyClassifier:
    """A classifier whose graphs give non-finite probabilities while `broken` is set."""

    def __init__(self, classifier):
        self.inner, self.broken, self.failures = classifier, threading.Event(), 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def predict(self, windows):
        if self.broken.is_set():
            self.failures += 1
            raise ModelOutputError("fp32 graphs returned non-finite probabilities (nan)")
        return self.inner.predict(windows)


def test_a_window_whose_inference_fails_is_skipped_logged_once_and_reported(bundle_dir, caplog):
    classifier = FlakyClassifier(Classifier(load_bundle(bundle_dir), "fp32", threads=1))
    source = FakeSource()
    with caplog.at_level("INFO", logger="humwatch.live"), \
            Harness(bundle_dir, source, classifier=classifier, max_lag_sec=100.0) as harness:
        source.feed(_noise(7.5))
        harness.wait_for(2)
        classifier.broken.set()
        source.feed(_noise(3.0))
        assert eventually(lambda: classifier.failures == 2)
        health = harness.monitor.health()
        classifier.broken.clear()
        source.feed(_noise(1.5))
        lines = harness.wait_for(3)
        assert eventually(lambda: harness.monitor.health().ok)
    assert not health.ok and "inference failed at t=10.5 s, the window gets no decision: fp32 graphs returned non-finite" in health.reason
    assert [line.t for line in lines] == [6.0, 7.5, 12.0]
    assert caplog.text.count("inference failed") == 1 and "inference works again" in caplog.text


def test_backoff_starts_afresh_after_a_session_that_worked(bundle_dir, caplog):
    source = FakeSource(failures=3)  # backoff grows 0.01 -> 0.02 -> 0.04, capped at 0.05
    with caplog.at_level("WARNING", logger="humwatch.live"), \
            Harness(bundle_dir, source, max_lag_sec=100.0, stall_timeout_sec=0.3) as harness:
        source.feed(_noise(6.0))
        harness.wait_for(1)
        deadline = time.monotonic() + 10
        while source.starts < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
    retries = [line for line in caplog.text.splitlines() if "retrying in" in line]
    assert [r.rsplit("retrying in ", 1)[1] for r in retries[:4]] == ["0.01 s", "0.02 s", "0.04 s", "0.01 s"]


def test_the_systemd_watchdog_is_pinged_while_hops_flow_and_not_when_audio_stops(bundle_dir, tmp_path):
    import socket

    from edge.monitor.systemd import SystemdNotifier

    address = str(tmp_path / "notify")
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(address)
    receiver.settimeout(0.1)

    def received() -> list[str]:
        messages = []
        while True:
            try:
                messages.append(receiver.recv(4096).decode())
            except TimeoutError:
                return messages

    notifier = SystemdNotifier({"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "600000"})  # pings every 0.3 s at most
    source = FakeSource()
    with Harness(bundle_dir, source, sinks=[notifier], max_lag_sec=100.0, stall_timeout_sec=100.0) as harness:
        notifier.ready()
        for _ in range(8):  # 8 s of audio in real time: hops flow
            source.feed(_noise(1.0))
            time.sleep(1.0)
        flowing = received()
        harness.wait_for(2)
        time.sleep(2.0)  # the audio stops
        silent = received()
    notifier.close()
    assert flowing[0] == "READY=1\nSTATUS=listening"
    pings = [m for m in flowing if m.startswith("WATCHDOG=1")]
    assert len(pings) >= 2
    assert all(ping.split("\n")[1].split(" at ")[0] in ("STATUS=ac-on", "STATUS=fridge-on", "STATUS=both-off") for ping in pings)
    assert not any(m.startswith("WATCHDOG=1") for m in silent), "no pings without audio"
    assert received() == ["STOPPING=1"]
    receiver.close()


def test_outside_systemd_the_notifier_does_nothing():
    from edge.monitor.systemd import SystemdNotifier

    notifier = SystemdNotifier({})
    notifier.ready()
    notifier.close()
    assert notifier.address is None and notifier.interval_sec is None
