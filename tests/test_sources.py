"""Sources against real servers on loopback: RTSP (Debian's GStreamer RTSP server: AAC, and G.711
beside an H.264 video track, live or recorded), an HTTP audio stream, and raw PCM on standard input.

Each server plays a recording in real time: QUIET_SEC of room noise, then LOUD_SEC of a mains
hum; the audio a source delivers must follow it (rate, length, level before and after the change).
"""

from __future__ import annotations

import base64
import contextlib
import http.server
import io
import json
import logging
import os
import re
import socket
import subprocess
import sys
import threading
import time

import av
import av.logging
import numpy as np
import pytest
import soundfile
from rtsp_server import RtspServer, wait_until

from edge.monitor.live import DeviceUnavailable
from edge.monitor.sources import NetworkSource, PcmFormat, PcmSource, SourceEnded, SourceError, open_source

RATE = 48_000
QUIET_SEC, LOUD_SEC = 2.0, 2.0
QUIET_RMS, LOUD_RMS = 0.001, 0.2
EDGE_SEC = 1.5  # compare the first and the last EDGE_SEC: codec delay and the change stay out of both
PASSWORD = "s3cr#t"  # unescaped '#' would end a URL: as %23 in the URL


def recording(rate: int = RATE) -> np.ndarray:
    """QUIET_SEC of noise at QUIET_RMS, then LOUD_SEC of a 120 Hz hum with harmonics at LOUD_RMS."""
    quiet = np.random.default_rng(0).normal(0.0, QUIET_RMS, int(QUIET_SEC * rate))
    t = np.arange(int(LOUD_SEC * rate)) / rate
    hum = np.sin(2 * np.pi * 120 * t) + 0.5 * np.sin(2 * np.pi * 240 * t) + 0.25 * np.sin(2 * np.pi * 360 * t)
    hum *= LOUD_RMS / np.sqrt(np.mean(hum**2))
    return np.concatenate([quiet, hum]).astype(np.float32)


@pytest.fixture(scope="module")
def wav(tmp_path_factory):
    path = tmp_path_factory.mktemp("sources") / "quiet-then-hum.wav"
    soundfile.write(path, recording(), RATE, subtype="PCM_16")
    return path


class Collector:
    """The callback a source calls: keeps the chunks, and where they came from."""

    def __init__(self) -> None:
        self.chunks: list[np.ndarray] = []
        self.threads: set[str] = set()

    def __call__(self, chunk: np.ndarray, overflowed: bool) -> None:
        assert chunk.dtype == np.float32 and chunk.ndim == 1 and not overflowed
        self.chunks.append(chunk.copy())
        self.threads.add(threading.current_thread().name)

    def seconds(self, rate: int) -> float:
        return sum(len(chunk) for chunk in self.chunks) / rate

    def audio(self) -> np.ndarray:
        return np.concatenate(self.chunks)


def failure(source, timeout: float) -> Exception | None:
    """The failure source.check() raises within `timeout` s (None when none)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            source.check()
        except (DeviceUnavailable, SourceEnded, SourceError) as error:
            return error
        time.sleep(0.02)
    return None


def rms(audio: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(audio, dtype=np.float64))))


def assert_follows_the_recording(audio: np.ndarray, rate: int) -> None:
    assert abs(len(audio) / rate - (QUIET_SEC + LOUD_SEC)) < 0.3, f"{len(audio) / rate:.2f} s delivered"
    edge = int(EDGE_SEC * rate)
    quiet, loud = rms(audio[:edge]), rms(audio[-edge:])
    assert quiet < 3 * QUIET_RMS, f"the quiet part is at {quiet:.4f} RMS"
    assert 0.7 * LOUD_RMS < loud < 1.3 * LOUD_RMS, f"the hum is at {loud:.4f} RMS"


def play_to_the_end(source, rate_expected: int, *ends: str) -> Collector:
    """The audio of the whole recording, until the source reports one of `ends`."""
    chunks = Collector()
    rate = source.start(chunks)
    assert rate == rate_expected
    try:
        ended = failure(source, timeout=QUIET_SEC + LOUD_SEC + 10)
    finally:
        source.stop()
    assert isinstance(ended, DeviceUnavailable) and any(end in str(ended) for end in ends), ended
    return chunks


@contextlib.contextmanager
def ffmpeg_log():
    """FFmpeg's log lines (level, component, message) from every thread, at debug level, while inside."""
    level = av.logging.get_level()
    av.logging.set_level(av.logging.DEBUG)
    try:
        with av.logging.Capture(local=False) as logs:
            yield logs
    finally:
        av.logging.set_level(level)


# RTSP ----------------------------------------------------------------------------------------------


@pytest.mark.rtsp
def test_rtsp_aac_follows_the_recording(wav):
    with RtspServer(wav, "aac") as server:
        chunks = play_to_the_end(NetworkSource(server.url(), 5, 2), RATE, "the stream ended")  # RTCP BYE
    assert_follows_the_recording(chunks.audio(), RATE)
    assert chunks.threads == {"humwatch-stream"}  # the source's own thread, never the caller's


@pytest.mark.rtsp
@pytest.mark.parametrize("codec", ["pcma", "pcmu"])
def test_rtsp_g711_beside_video_sets_up_the_audio_only(wav, codec):
    with RtspServer(wav, codec) as server:
        # the live video goes on after the recording: the audio's end comes as an RTCP BYE, or (as from a camera
        # whose microphone fails) the audio just stops
        chunks = play_to_the_end(NetworkSource(server.url(), 5, 2), 8000, "the stream ended",
                                 "reading the stream failed (no data for 2 s)")
    assert_follows_the_recording(chunks.audio(), 8000)
    # pay0 is the H.264 track, pay1 the G.711 one: the video was never set up, so never sent or decoded
    assert server.setups == [f"{server.url()}/stream=1"], server.setups


@pytest.mark.rtsp
def test_rtsp_opens_every_time_with_or_without_video(wav, caplog):
    """Five opens of one source in a row each bring audio: AAC alone and G.711 beside a live video
    with the audio track alone; G.711 beside a recorded video, which GStreamer stops when only the
    audio is set up (14 opens in 20 before), with every track from the first open without audio on,
    the video discarded and never decoded (FFmpeg logs every H.264 frame it decodes)."""
    for codec, recorded, audio_track in (("aac", False, "stream=0"), ("pcma", False, "stream=1"),
                                         ("pcma", True, "stream=1")):
        rate, server_name = (RATE if codec == "aac" else 8000), f"{codec}{' recorded' if recorded else ''}"
        with RtspServer(wav, codec, recorded=recorded) as server:
            source = NetworkSource(server.url(), 1.5, 1)
            for attempt in range(1, 6):
                chunks = Collector()
                source.start(chunks)
                try:
                    with ffmpeg_log() as logs:
                        heard = wait_until(lambda: chunks.seconds(rate) > 0.3, 5)
                    lost = failure(source, 0.05)
                finally:
                    source.stop()
                assert heard, f"{server_name}: no audio at open {attempt} of 5 ({lost})"
                assert not [line for line in logs if line[1] == "h264"], f"{server_name}: video decoded"
            audio_alone = [f"{server.url()}/{audio_track}"]
            if not recorded:  # the video never crossed the network
                assert server.setups == audio_alone * 5, server.setups
            elif source.all_tracks:  # the audio track alone until the first open without audio, every track after
                every_track = [f"{server.url()}/stream=0", *audio_alone]
                alone = server.setups.index(every_track[0])
                assert server.setups == audio_alone * alone + every_track * (5 - alone + 1), server.setups
                assert "no audio for 1.5 s with the audio track alone" in caplog.text


@pytest.mark.rtsp
def test_rtsp_server_killed_mid_stream_is_reported_and_a_reopen_works(wav):
    server = RtspServer(wav, "aac").start()
    source = NetworkSource(server.url(), 2, 1)
    try:
        chunks = Collector()
        source.start(chunks)
        assert wait_until(lambda: chunks.seconds(RATE) > 0.5, 10), "no audio before the kill"
        server.kill()
        lost = failure(source, timeout=5)
        assert isinstance(lost, DeviceUnavailable), lost
        assert "reading the stream failed" in str(lost) or "the stream ended" in str(lost)
        source.stop()
        started = time.monotonic()
        with pytest.raises(DeviceUnavailable, match=r"cannot open the stream \(Connection refused\)"):  # it is down
            source.start(Collector())
        assert time.monotonic() - started < 0.5  # at once, not after the connect timeout (2 s)
        server.start()  # on the same port, as a camera that rebooted
        again = Collector()
        source.start(again)
        assert wait_until(lambda: again.seconds(RATE) > 0.5, 10), "no audio after the reopen"
        assert failure(source, timeout=0) is None
    finally:
        source.stop()
        server.kill()


@pytest.mark.rtsp
def test_rtsp_credentials_work_and_are_never_shown(wav, caplog):
    caplog.set_level(logging.DEBUG)
    with RtspServer(wav, "aac", credentials=f"viewer:{PASSWORD}") as server:
        quoted = PASSWORD.replace("#", "%23")
        source = NetworkSource(server.url(f"viewer:{quoted}"), 5, 2)
        chunks = Collector()
        try:
            source.start(chunks)
            assert wait_until(lambda: chunks.seconds(RATE) > 0.2, 10), "no audio with the right password"
        finally:
            source.stop()
        wrong = NetworkSource(server.url("viewer:wrong-one"), 5, 2)
        with pytest.raises(DeviceUnavailable, match="401") as refused:
            wrong.start(Collector())
    shown = [str(refused.value), repr(source), str(source), repr(wrong), caplog.text]
    assert not any(secret in text for text in shown for secret in (quoted, PASSWORD, "wrong-one", "viewer")), shown
    assert refused.value.__cause__ is None and refused.value.__suppress_context__  # no PyAV error holding the URL


@pytest.mark.rtsp
def test_rtsp_in_capitals_is_a_camera(wav):
    with RtspServer(wav, "aac", credentials=f"viewer:{PASSWORD}") as server:
        url = server.url(f"viewer:{PASSWORD.replace('#', '%23')}")
        for source in _heard_in_any_case(url, ("RTSP", "Rtsp")):
            assert str(source) == f"NetworkSource('rtsp://***@127.0.0.1:{server.port}/stream')", str(source)


def _heard_in_any_case(url: str, schemes: tuple[str, ...]):
    """The source of `url` with its scheme written each of these ways, after it brought audio."""
    for scheme in schemes:
        source = open_source(url.replace(url.split("://")[0], scheme, 1))
        chunks = Collector()
        try:
            source.start(chunks)
            assert wait_until(lambda: chunks.seconds(RATE) > 0.3, 10), f"no audio from {scheme}://"
        finally:
            source.stop()
        yield source


@pytest.mark.rtsp
def test_the_monitor_counts_a_killed_camera_as_a_lost_device_and_resumes(bundle_dir, tmp_path, caplog):
    """A LiveMonitor on an RTSP source: lines while the server plays; the server killed -> a device
    loss logged (no password in it) and unhealthy; the server back on its port -> lines again."""
    from edge.core.bundle import load_bundle
    from edge.engine.classifier import Classifier
    from edge.engine.detector import Detector
    from edge.monitor.live import LiveMonitor

    caplog.set_level(logging.INFO)
    path = tmp_path / "long.wav"
    soundfile.write(path, np.random.default_rng(2).normal(0, 0.01, 60 * 16_000).astype(np.float32), 16_000)
    server = RtspServer(path, "aac", credentials=f"viewer:{PASSWORD}").start()
    lines = []
    detector = Detector(Classifier(load_bundle(bundle_dir), "fp32", threads=1))
    monitor = LiveMonitor(detector, NetworkSource(server.url("viewer:s3cr%23t"), 2, 1), lines.append,
                          stall_timeout_sec=2.0, backoff_sec=(0.2, 0.5))
    thread = threading.Thread(target=monitor.run, daemon=True)
    thread.start()
    try:
        assert wait_until(lambda: lines, 20), "no line from the stream"
        server.kill()
        assert wait_until(lambda: monitor.device_losses >= 1, 10), "the loss was not counted"
        assert not monitor.health().ok
        assert wait_until(lambda: lines[-1].status == "no-audio", 10), "the lost camera is said, not its last state"
        assert "rtsp://***@127.0.0.1" in monitor.health().reason, "/healthz names the lost source"
        heard = sum(line.decided for line in lines)
        server.start()
        assert wait_until(lambda: sum(line.decided for line in lines) > heard, 20), "no decision after it came back"
        assert monitor.health().device_losses == monitor.device_losses >= 1
    finally:
        monitor.stop.set()
        thread.join(10)
        server.kill()
    assert not thread.is_alive()
    assert re.search(r"rtsp://\*\*\*@127\.0\.0\.1:\d+/stream lost: ", caplog.text)  # the source's failure, named
    assert "s3cr" not in caplog.text and "viewer" not in caplog.text
    assert [line.t for line in lines] == sorted(line.t for line in lines)  # the time line goes on across the loss


@pytest.mark.rtsp
def test_the_monitor_hears_a_restarted_camera_again_within_seconds(bundle_dir, tmp_path):
    """A LiveMonitor (backoff 1 s doubling to 10 s) on G.711 beside a recorded video; its server
    killed and back on its port a second later, twice: audio flows again within 7 s of the server
    listening again. The bound: down this briefly, the backoff has reached at most 4 s; while
    nothing listens an open fails at once; an open takes at most two connect timeouts (1 s here:
    the audio track alone, then every track, once); 1 s for the open itself. Before, an open of the
    audio track alone failed 14 times in 20, each after its timeout and a read's."""
    from edge.core.bundle import load_bundle
    from edge.engine.classifier import Classifier
    from edge.engine.detector import Detector
    from edge.monitor.live import LiveMonitor

    connect_sec = 1.0
    reconnect_sec = 4.0 + 2 * connect_sec + 1.0
    path = tmp_path / "long.wav"
    soundfile.write(path, np.random.default_rng(3).normal(0, 0.01, 30 * 16_000).astype(np.float32), 16_000)
    server = RtspServer(path, "pcma", recorded=True).start()
    monitor = LiveMonitor(Detector(Classifier(load_bundle(bundle_dir), "fp32", threads=1)),
                          NetworkSource(server.url(), connect_sec, 1.0), lambda line: None, backoff_sec=(1.0, 10.0))
    thread = threading.Thread(target=monitor.run, daemon=True)
    thread.start()
    try:
        assert wait_until(lambda: monitor.last_audio_at is not None, 3 * connect_sec + 2), "no audio at the start"
        for restart in (1, 2):
            losses = monitor.device_losses
            server.kill()
            assert wait_until(lambda: monitor.device_losses > losses, 5), "the kill was not noticed"
            time.sleep(1.0)
            server.start()
            back = time.monotonic()
            assert wait_until(lambda: monitor.last_audio_at > back, reconnect_sec), \
                f"no audio {reconnect_sec:g} s after restart {restart}"
    finally:
        monitor.stop.set()
        thread.join(10)
        server.kill()
    assert not thread.is_alive()


def test_a_server_that_never_answers_times_out():
    with socket.socket() as silent:  # accepts the connection (backlog) and never says a word
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        source = NetworkSource(f"rtsp://127.0.0.1:{silent.getsockname()[1]}/stream", 1.0, 1.0)
        started = time.monotonic()
        with pytest.raises(DeviceUnavailable, match=r"cannot open the stream \(no answer for 1 s\)"):
            source.start(Collector())
        assert time.monotonic() - started < 5


# HTTP ----------------------------------------------------------------------------------------------


def encode(audio: np.ndarray, rate: int, container: str, codec: str, video: bool = False) -> bytes:
    """`audio` as a file of `container` format (e.g. mp3 with libmp3lame), in memory; with `video`,
    behind a small H.264 track (stream 0), as a camera's MPEG-TS."""
    out = io.BytesIO()
    with av.open(out, mode="w", format=container) as muxer:
        picture = muxer.add_stream("libx264", rate=10, width=64, height=64) if video else None
        sound = muxer.add_stream(codec, rate=rate, layout="mono")
        for second in range(int(np.ceil(len(audio) / rate))):
            if picture is not None:
                for _ in range(10):
                    image = av.VideoFrame.from_ndarray(np.full((64, 64, 3), second * 40 % 256, np.uint8), format="rgb24")
                    muxer.mux(picture.encode(image))
            frame = av.AudioFrame.from_ndarray(audio[None, second * rate:(second + 1) * rate], format="fltp", layout="mono")
            frame.sample_rate = rate
            muxer.mux(sound.encode(frame))
        for stream in filter(None, (picture, sound)):
            muxer.mux(stream.encode(None))
    return out.getvalue()


class AudioStreamServer(http.server.ThreadingHTTPServer):
    """An HTTP audio stream (as Icecast or a radio sends one): the body paced at real time, no
    length; `cut` drops every connection, `hold` stops sending and keeps it open."""

    daemon_threads = True

    def __init__(self, body: bytes, duration_sec: float, content_type: str, credentials: str | None = None) -> None:
        super().__init__(("127.0.0.1", 0), _StreamHandler)
        self.body, self.duration_sec, self.content_type = body, duration_sec, content_type
        self.authorization = f"Basic {base64.b64encode(credentials.encode()).decode()}" if credentials else None
        self.cut, self.hold = threading.Event(), threading.Event()
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def url(self, userinfo: str | None = None) -> str:
        return f"http://{userinfo + '@' if userinfo else ''}127.0.0.1:{self.server_address[1]}/live"

    def close(self) -> None:
        self.cut.set()
        self.shutdown()
        self.server_close()


class _StreamHandler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        server: AudioStreamServer = self.server
        if server.authorization and self.headers.get("Authorization") != server.authorization:
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="radio"')
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", server.content_type)
        self.send_header("Connection", "close")  # the body ends where the connection does
        self.end_headers()
        per_sec, started, sent = len(server.body) / server.duration_sec, time.monotonic(), 0
        while sent < len(server.body) and not server.cut.is_set():
            if server.hold.is_set():
                server.cut.wait(0.05)
                continue
            due = min(len(server.body), int((time.monotonic() - started + 0.2) * per_sec))  # 0.2 s ahead
            try:
                self.wfile.write(server.body[sent:due])
            except (BrokenPipeError, ConnectionResetError):  # the client gave up
                return
            sent = due
            time.sleep(0.02)


@pytest.fixture
def mp3_stream():
    server = AudioStreamServer(encode(recording(), RATE, "mp3", "libmp3lame"), QUIET_SEC + LOUD_SEC, "audio/mpeg",
                               credentials=f"listener:{PASSWORD}")
    yield server
    server.close()


def test_http_mp3_stream_follows_the_recording(mp3_stream):
    quoted = PASSWORD.replace("#", "%23")
    # a body without a length ends only when the connection drops: FFmpeg calls that an I/O error
    chunks = play_to_the_end(NetworkSource(mp3_stream.url(f"listener:{quoted}"), 5, 2), RATE, "Input/output error")
    assert_follows_the_recording(chunks.audio(), RATE)


def test_http_mpegts_with_video_gives_its_audio():
    server = AudioStreamServer(encode(recording(16_000), 16_000, "mpegts", "aac", video=True), QUIET_SEC + LOUD_SEC,
                               "video/mp2t")
    try:
        chunks = play_to_the_end(NetworkSource(server.url(), 5, 2), 16_000, "Input/output error")
    finally:
        server.close()
    assert_follows_the_recording(chunks.audio(), 16_000)


def test_http_in_capitals_is_a_stream(mp3_stream):
    url = mp3_stream.url(f"listener:{PASSWORD.replace('#', '%23')}")
    for source in _heard_in_any_case(url, ("HTTP", "Http")):
        assert str(source).startswith("NetworkSource('http://***@127.0.0.1:"), str(source)


def test_http_stream_cut_or_stalled_is_reported_and_a_reopen_works(mp3_stream, caplog):
    source = NetworkSource(mp3_stream.url(f"listener:{PASSWORD.replace('#', '%23')}"), 2, 1)
    try:
        for trouble, expected in ((mp3_stream.hold, "no data for 1 s"), (mp3_stream.cut, "Input/output error")):
            chunks = Collector()
            source.start(chunks)
            assert wait_until(lambda: chunks.seconds(RATE) > 0.3, 10), "no audio"
            trouble.set()
            lost = failure(source, timeout=5)
            assert isinstance(lost, DeviceUnavailable) and expected in str(lost), lost
            source.stop()
            trouble.clear()
    finally:
        source.stop()
    assert "listener" not in caplog.text and "***@127.0.0.1" in caplog.text


# Standard input --------------------------------------------------------------------------------------


STDIN_SCRIPT = """
import json, sys, time
import numpy as np
from edge.monitor.sources import SourceEnded, open_source

chunks = []
source = open_source("-", sys.argv[1])
rate = source.start(lambda chunk, overflowed: chunks.append(chunk.copy()))
while True:
    try:
        source.check()
    except SourceEnded as error:
        ended = str(error)
        break
    time.sleep(0.02)
audio = np.concatenate(chunks)
print(json.dumps({"rate": rate, "samples": len(audio), "ended": ended, "quiet": float(np.sqrt(np.mean(audio[:16000] ** 2))),
                  "loud": float(np.sqrt(np.mean(audio[-16000:] ** 2)))}))
"""


def test_stdin_pcm_from_a_writer_that_stops(tmp_path):
    """arecord -t raw | humwatch live --source -: stereo s16le in, mono float out, and the end of the input."""
    audio = recording(16_000)
    stereo = np.stack([audio, audio * 0.5], axis=1)
    pcm = (stereo * 32767).astype("<i2").tobytes()
    result = subprocess.run([sys.executable, "-c", STDIN_SCRIPT, "s16le:16000:2"], input=pcm, capture_output=True,
                            timeout=60, cwd=os.getcwd())
    assert result.returncode == 0, result.stderr.decode()
    got = json.loads(result.stdout)
    assert got["rate"] == 16_000 and got["samples"] == len(audio)
    assert "standard input ended" in got["ended"]
    assert got["quiet"] < 3 * QUIET_RMS and abs(got["loud"] - 0.75 * LOUD_RMS) < 0.01  # the mean of the channels


def test_stdin_that_ends_ends_the_monitor(bundle_dir):
    """The writer (arecord) stopped: the monitor's run() ends with SourceEnded, it does not retry forever."""
    from edge.core.bundle import load_bundle
    from edge.engine.classifier import Classifier
    from edge.engine.detector import Detector
    from edge.monitor.live import LiveMonitor

    read_fd, write_fd = os.pipe()
    detector = Detector(Classifier(load_bundle(bundle_dir), "fp32", threads=1))
    lines = []
    monitor = LiveMonitor(detector, PcmSource(read_fd, PcmFormat.parse("s16le:16000:1")), lines.append,
                          max_lag_sec=100.0, stall_timeout_sec=1.0, backoff_sec=(0.05, 0.1))
    ended = []

    def run() -> None:
        try:
            monitor.run()
        except SourceEnded as error:
            ended.append(error)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    os.write(write_fd, (np.random.default_rng(3).normal(0, 0.01, 8 * 16_000) * 32767).astype("<i2").tobytes())
    assert wait_until(lambda: lines, 20), "no line from standard input"
    os.close(write_fd)
    thread.join(10)
    os.close(read_fd)
    assert not thread.is_alive() and ended and "standard input ended" in str(ended[0])
    assert monitor.device_losses <= 1  # at most the silence before the end was seen; no loop of reopening


def test_pcm_frames_split_across_reads_stay_whole():
    read_fd, write_fd = os.pipe()
    source = PcmSource(read_fd, PcmFormat.parse("s32le:8000:3"), chunk_sec=0.01)
    frames = np.random.default_rng(1).integers(-2**31, 2**31, size=(2000, 3), dtype=np.int64).astype("<i4")
    data = frames.tobytes()
    chunks = Collector()
    source.start(chunks)
    for start in range(0, len(data), 1001):  # pieces that end inside a sample and inside a frame
        os.write(write_fd, data[start:start + 1001])
    os.close(write_fd)
    ended = failure(source, timeout=5)
    assert isinstance(ended, SourceEnded)
    np.testing.assert_allclose(chunks.audio(), frames.mean(axis=1) / 2**31, atol=1e-7)
    with pytest.raises(SourceEnded):  # standard input cannot be reopened: the monitor ends
        source.start(Collector())
    os.close(read_fd)


def test_pcm_that_is_not_float_audio_says_to_check_the_format():
    read_fd, write_fd = os.pipe()
    source = PcmSource(read_fd, PcmFormat.parse("f32le:16000:1"))
    source.start(Collector())
    os.write(write_fd, np.full(800, 1e30, "<f4").tobytes())
    error = failure(source, timeout=5)
    assert isinstance(error, SourceError) and "--source-format f32le:16000:1" in str(error)
    os.close(write_fd)
    os.close(read_fd)


@pytest.mark.parametrize("text, says", [
    ("s16le", "ENCODING:RATE:CHANNELS"), ("s16:48000:1", "encoding must be one of s16le, s32le, f32le"),
    ("s16le:48k:1", "ENCODING:RATE:CHANNELS"), ("s16le:100:1", "rate must be"), ("f32le:48000:0", "channels must be"),
])
def test_a_bad_source_format_is_named_with_the_fix(text, says):
    with pytest.raises(SourceError, match=says) as error:
        open_source("-", text)
    assert f"--source-format {text}" in str(error.value) and "arecord" in str(error.value)


def test_source_and_format_that_do_not_go_together():
    with pytest.raises(SourceError, match="needs its format"):
        open_source("-")
    with pytest.raises(SourceError, match="only raw PCM on standard input"):
        open_source("rtsp://cam/stream1", "s16le:48000:1")
    for spec in ("ftp://cam/stream1", "rtsp:///stream1", "rtsp://[fe80::1/stream1"):
        with pytest.raises(SourceError, match="rtsp://, rtsps://, http:// or https://"):
            open_source(spec)
    primary, replica = os.openpty()
    try:
        with pytest.raises(SourceError, match="it is a terminal"):
            open_source("-", "s16le:48000:1", stdin_fd=replica)
    finally:
        os.close(primary)
        os.close(replica)
    assert isinstance(open_source("rtsps://cam.local:322/stream1"), NetworkSource)
