"""Where live audio comes from: a PortAudio device, an RTSP / HTTP stream, or raw PCM on stdin.

:func:`open_source` turns ``--source`` into an AudioSource (edge.monitor.live): each calls back
with mono float32 chunks at its native rate from a thread of its own; everything after that is
the same code. A network stream is read through PyAV (FFmpeg): its audio stream only (RTSP over TCP
sets up the audio track alone while the server sends audio that way), with connect and read
timeouts. When a source's thread fails (a stream that stalls, closes or drops the connection) it
keeps the failure, and :meth:`check` raises it as a DeviceUnavailable, so the monitor reopens the
source with backoff and counts a lost device.
Standard input that ends raises :class:`SourceEnded` instead: no one can reopen it.
Credentials in a URL never reach a message or a repr: every one goes through edge.core.redact.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import threading
import time
from urllib.parse import urlsplit

import numpy as np

from edge.core.audio import MAX_CHANNELS, PYAV_MAX_CHANNELS, RATE_RANGE, decoders, peak_problem
from edge.core.redact import redact
from edge.monitor.live import AudioCallback, DeviceUnavailable

log = logging.getLogger("humwatch.sources")

NETWORK_SCHEMES = ("rtsp", "rtsps", "http", "https")
STDIN = "-"
CONNECT_TIMEOUT_SEC = 10.0
READ_TIMEOUT_SEC = 5.0  # below the monitor's stall timeout (10 s), so a stalled stream is reported as such
CHUNK_SEC = 0.05  # standard input is read at most this much audio at a time
_SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*://", re.IGNORECASE)
PCM_ENCODINGS = {"s16le": ("<i2", 32768.0), "s32le": ("<i4", 2.0**31), "f32le": ("<f4", 1.0)}
FORMAT_EXAMPLE = "e.g. --source-format s16le:48000:1 for arecord -f S16_LE -r 48000 -c 1 -t raw"


class DeviceNotFound(LookupError):
    """--device matches no input device at start-up; the message lists the devices there are."""


def input_devices(sd) -> list[dict]:
    """index, name, channels and native rate of every input device."""
    return [{"index": index, "name": device["name"], "channels": device["max_input_channels"],
             "native_rate": int(device["default_samplerate"])}
            for index, device in enumerate(sd.query_devices()) if device["max_input_channels"] > 0]


class SoundDeviceSource:
    """A sounddevice (PortAudio) input at the device's native rate, mixed down to mono.

    Made at start-up, it checks that PortAudio is there (DeviceUnavailable) and that the device
    exists (DeviceNotFound): a typo is an error, not a device lost and retried forever. A device
    that existed and then vanished is retried by the monitor.
    """

    reopens = True

    def __init__(self, device: int | str | None = None) -> None:
        self.device = device
        self.name = "the default input device" if device is None else f"input device {device}"
        self._stream = None
        sd = import_sounddevice()
        try:
            sd.query_devices(device, "input")
        except (sd.PortAudioError, ValueError) as error:
            listed = "\n".join(f"  {d['index']}: {d['name']} ({d['channels']} ch, {d['native_rate']} Hz)"
                                for d in input_devices(sd)) or "  (none: is the USB microphone plugged in? see 'arecord -l')"
            raise DeviceNotFound(
                f"--device {'(default)' if device is None else device}: no such input device ({error}). "
                f"The input devices are:\n{listed}\nPick one by index or by (part of) its name."
            ) from error

    def start(self, callback: AudioCallback) -> int:
        sd = import_sounddevice()
        try:
            info = sd.query_devices(self.device, "input")
            rate = int(info["default_samplerate"])
            channels = max(1, min(2, int(info["max_input_channels"])))

            def on_audio(indata, frames, time_info, status) -> None:
                callback(indata.mean(axis=1), bool(status.input_overflow))

            self._stream = sd.InputStream(device=self.device, samplerate=rate, channels=channels,
                                          dtype="float32", callback=on_audio)
            self._stream.start()
        except (sd.PortAudioError, ValueError) as error:
            self.stop()
            raise DeviceUnavailable(f"input device {self.device if self.device is not None else '(default)'}: {error}") from error
        return rate

    def check(self) -> None:
        """PortAudio reports a lost device by delivering no more audio: the monitor's stall timeout."""

    def stop(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            try:
                stream.close()
            except Exception as error:  # a vanished device can fail on close; nothing left to release
                log.debug("closing the input stream failed: %s", error)


def import_sounddevice():
    """sounddevice, or a DeviceUnavailable that says how to install PortAudio."""
    try:
        import sounddevice
    except OSError as error:
        raise DeviceUnavailable(
            f"PortAudio is missing ({error}); on Raspberry Pi OS / Debian: sudo apt install libportaudio2"
        ) from error
    return sounddevice


class SourceError(ValueError):
    """A --source or --source-format that cannot be used; the message names the value and the fix."""


class SourceEnded(EOFError):
    """The source has no more audio and cannot be reopened (standard input closed)."""


def open_source(spec: str | None, source_format: str | None = None, *, stdin_fd: int = 0):
    """The AudioSource that --source names: None (the default input device), a PortAudio device by
    index or (part of its) name, an rtsp:// rtsps:// http:// https:// URL, or "-" for raw PCM on
    standard input in `source_format` ("s16le:48000:1"). SourceError for a spec that cannot work;
    DeviceNotFound / DeviceUnavailable as SoundDeviceSource raises them."""
    if spec == STDIN:
        if source_format is None:
            raise SourceError(f"--source - reads raw PCM from standard input and needs its format: {FORMAT_EXAMPLE}")
        return PcmSource(stdin_fd, PcmFormat.parse(source_format))
    if source_format is not None:
        raise SourceError(f"--source-format {source_format}: only raw PCM on standard input (--source -) needs a "
                          f"format; a device or a stream says its own")
    if spec is not None and "://" in spec:
        return NetworkSource(spec)
    return SoundDeviceSource(int(spec) if spec is not None and spec.isdigit() else spec)


@dataclasses.dataclass(frozen=True)
class PcmFormat:
    """Raw PCM: sample encoding (s16le, s32le, f32le), rate and channels."""

    encoding: str
    rate: int
    channels: int

    @classmethod
    def parse(cls, text: str) -> PcmFormat:
        """ "s16le:48000:1" -> PcmFormat; SourceError naming the value and the fix otherwise."""
        parts = text.lower().split(":")
        low, high = RATE_RANGE
        if len(parts) != 3 or not parts[1].isdigit() or not parts[2].isdigit():
            raise SourceError(f"--source-format {text}: write ENCODING:RATE:CHANNELS, {FORMAT_EXAMPLE}")
        encoding, rate, channels = parts[0], int(parts[1]), int(parts[2])
        if encoding not in PCM_ENCODINGS:
            raise SourceError(f"--source-format {text}: the encoding must be one of {', '.join(PCM_ENCODINGS)} "
                              f"(little-endian signed 16 or 32 bit, or 32-bit float), {FORMAT_EXAMPLE}")
        if not low <= rate <= high:
            raise SourceError(f"--source-format {text}: the rate must be {low}-{high} Hz, {FORMAT_EXAMPLE}")
        if not 1 <= channels <= MAX_CHANNELS:
            raise SourceError(f"--source-format {text}: the channels must be 1-{MAX_CHANNELS}, {FORMAT_EXAMPLE}")
        return cls(encoding, rate, channels)

    @property
    def frame_bytes(self) -> int:
        return np.dtype(PCM_ENCODINGS[self.encoding][0]).itemsize * self.channels

    def to_mono(self, data: bytes) -> np.ndarray:
        """Whole frames of raw PCM -> mono float32 in [-1, 1) (the channels' mean, as for files)."""
        dtype, scale = PCM_ENCODINGS[self.encoding]
        samples = np.frombuffer(data, dtype=dtype).reshape(-1, self.channels)
        return (samples.mean(axis=1, dtype=np.float64) / scale).astype(np.float32)

    def __str__(self) -> str:
        return f"{self.encoding}:{self.rate}:{self.channels}"


class PcmSource:
    """Raw PCM from a file descriptor (standard input), e.g. `arecord -t raw ... | humwatch live --source -`.

    One thread reads the descriptor for the life of the process (a second reader would split the
    samples' bytes between them); while the monitor has the source stopped, what arrives is read
    and dropped, so the writer never blocks. The end of the input (the writer stopped) is
    SourceEnded: the monitor ends, and a supervisor restarts the pipeline. A pipe that pauses is
    waited on, never reopened (`reopens` False): what it sends after the pause is decided.
    """

    reopens = False

    def __init__(self, fd: int, pcm: PcmFormat, chunk_sec: float = CHUNK_SEC) -> None:
        if os.isatty(fd):
            raise SourceError("--source - reads raw PCM from standard input, but it is a terminal: pipe audio in, "
                              "e.g. arecord -f S16_LE -r 48000 -c 1 -t raw | humwatch live --source - "
                              "--source-format s16le:48000:1")
        self.fd, self.pcm = fd, pcm
        self.name = f"standard input ({pcm})" if fd == 0 else f"file descriptor {fd} ({pcm})"
        self._read_bytes = max(1, round(chunk_sec * pcm.rate)) * pcm.frame_bytes
        self._callback: AudioCallback | None = None
        self._thread: threading.Thread | None = None
        self._failure: Exception | None = None  # SourceEnded, or SourceError for samples that are not audio
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"PcmSource(fd {self.fd}, {self.pcm})"

    def start(self, callback: AudioCallback) -> int:
        self.check()
        with self._lock:
            self._callback = callback
            if self._thread is None:
                self._thread = threading.Thread(target=self._read, name="humwatch-stdin", daemon=True)
                self._thread.start()
        return self.pcm.rate

    def check(self) -> None:
        """Raise SourceEnded once the input has ended (SourceError when its bytes are not audio)."""
        if self._failure is not None:
            raise self._failure

    def stop(self) -> None:
        with self._lock:
            self._callback = None

    def _read(self) -> None:
        pending = b""
        try:
            while True:
                data = os.read(self.fd, self._read_bytes)
                if not data:
                    raise SourceEnded("standard input ended: the program writing audio to it (e.g. arecord) stopped")
                pending += data
                whole = len(pending) - len(pending) % self.pcm.frame_bytes
                if whole:
                    chunk, pending = self.pcm.to_mono(pending[:whole]), pending[whole:]
                    self._deliver(chunk)
        except OSError as error:
            self._end(SourceEnded(f"standard input cannot be read ({error.strerror or error})"))
        except (SourceEnded, SourceError) as error:
            self._end(error)

    def _end(self, failure: Exception) -> None:
        log.warning("%s", failure)
        self._failure = failure

    def _deliver(self, chunk: np.ndarray) -> None:
        if problem := peak_problem(chunk):  # only f32le can: integers are always in range
            raise SourceError(f"standard input: {problem}, not audio in --source-format {self.pcm}; "
                              f"is the format what the writer sends? {FORMAT_EXAMPLE}")
        with self._lock:
            if self._callback is not None:
                self._callback(chunk, False)


class NetworkSource:
    """An RTSP / RTSPS / HTTP(S) stream's audio, decoded by PyAV in a thread of each session.

    RTSP goes over TCP and sets up the audio track alone, so a camera's video need not cross the
    network. A server that answers but then sends no audio within `connect_timeout_sec` (GStreamer's
    RTSP server playing a recording stops when the video that no one set up has nowhere to go) gets
    every track set up at once, and from then on: its video comes too and the demuxer drops it,
    never decoded beyond FFmpeg's probe at the open (an HTTP stream's other streams are dropped the
    same way). Each read waits `read_timeout_sec`; a read that times out, a closed connection or the
    stream's end stops the session and is kept as a DeviceUnavailable that :meth:`check` raises.
    """

    def __init__(self, url: str, connect_timeout_sec: float = CONNECT_TIMEOUT_SEC,
                 read_timeout_sec: float = READ_TIMEOUT_SEC) -> None:
        url = _SCHEME.sub(lambda m: m[0].lower(), url)  # RTSP://, Http://: FFmpeg knows lower case only
        try:
            parts = urlsplit(url)
            usable = parts.scheme in NETWORK_SCHEMES and bool(parts.hostname)
        except ValueError:  # e.g. an unclosed [IPv6 address]
            usable = False
        if not usable:
            raise SourceError(f"--source {redact(url)}: a stream is rtsp://, rtsps://, http:// or https://HOST/...; "
                              f"a device is its index or name (see 'humwatch devices'), standard input is -")
        self.url = url
        self.name = redact(url)
        self.timeouts = (connect_timeout_sec, read_timeout_sec)
        self.all_tracks = False  # RTSP: set up every track, since the audio track alone brought no audio
        self._session: _Session | None = None

    def __repr__(self) -> str:
        return f"NetworkSource({redact(self.url)!r})"

    __str__ = __repr__

    def start(self, callback: AudioCallback) -> int:
        self.stop()
        container = self._open()
        try:
            stream = self._audio_stream(container)
        except DeviceUnavailable:
            container.close()
            raise
        self._session = _Session(self, container, stream, callback)
        return stream.codec_context.sample_rate

    def check(self) -> None:
        """Raise the DeviceUnavailable that ended this session's reading, if one did."""
        if self._session is not None and self._session.failure is not None:
            raise self._session.failure

    def stop(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            session.stop(timeout=self.timeouts[1] + 1.0)

    def _options(self) -> dict[str, str]:
        """FFmpeg's: no wait at the open to measure a video's frame rate; RTSP over TCP, with the audio
        track alone unless that brought no audio."""
        options = {"fpsprobesize": "0"}
        if self.url.startswith("rtsp"):
            options["rtsp_transport"] = "tcp"
            if not self.all_tracks:
                options["allowed_media_types"] = "audio"
        return options

    def _open(self):
        options, started, av = self._options(), time.monotonic(), decoders()[0]  # PyAV: network streams only
        try:
            container = av.open(self.url, options=options, timeout=self.timeouts)
        except (av.FFmpegError, OSError) as error:
            why = _why(error, started, self.timeouts[0], "no answer")
            raise DeviceUnavailable(f"{redact(self.url)}: cannot open the stream ({why})") from None
        # PyAV's open waits for the first packets; when none come, it returns at its timeout (no answer raises)
        if "allowed_media_types" in options and time.monotonic() - started >= self.timeouts[0]:
            container.close()
            log.warning("%s: no audio for %g s with the audio track alone; setting up all the stream's tracks from "
                        "now on (the video crosses the network, discarded undecoded)", redact(self.url),
                        self.timeouts[0])
            self.all_tracks = True
            return self._open()
        return container

    def _audio_stream(self, container):
        if not container.streams.audio:
            raise DeviceUnavailable(f"{redact(self.url)}: the stream holds no audio (is the camera's microphone "
                                    f"or audio stream turned on?)")
        stream = container.streams.audio[0]
        for other in container.streams:
            if other is not stream:
                other.discard = decoders()[0].stream.Discard.all  # demuxers skip them; never decoded
        context = stream.codec_context
        if context is None:
            raise DeviceUnavailable(f"{redact(self.url)}: no decoder for the stream's audio codec")
        low, high = RATE_RANGE
        if not (low <= context.sample_rate <= high and 1 <= context.channels <= PYAV_MAX_CHANNELS):
            raise DeviceUnavailable(f"{redact(self.url)}: the audio says {context.sample_rate} Hz, {context.channels} "
                                    f"channel(s); {low}-{high} Hz and 1-{PYAV_MAX_CHANNELS} channels are readable")
        return stream


class _Session:
    """One opened stream: a thread demuxes its audio packets, decodes them and calls back with mono
    float32; the error that ends it is kept in `failure` (the container is closed by the thread)."""

    def __init__(self, source: NetworkSource, container, stream, callback: AudioCallback) -> None:
        self.source, self.container, self.stream, self.callback = source, container, stream, callback
        self.failure: DeviceUnavailable | None = None
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._read, name="humwatch-stream", daemon=True)
        self._thread.start()

    def stop(self, timeout: float) -> None:
        """Stop calling back, and wait (up to `timeout`: a read in progress ends by its timeout) for
        the connection to close: a camera may serve only a few sessions at a time."""
        self._stopping.set()
        self._thread.join(timeout)

    def _read(self) -> None:
        url = redact(self.source.url)
        rate, av = self.stream.codec_context.sample_rate, decoders()[0]
        to_float = av.AudioResampler(format="fltp", rate=rate)  # any sample format, the stream's channels
        last_packet = time.monotonic()
        try:
            for packet in self.container.demux(self.stream):
                last_packet = time.monotonic()
                if self._stopping.is_set():
                    return
                try:
                    frames = [planar for frame in packet.decode() for planar in to_float.resample(frame)]
                except av.InvalidDataError as error:  # one damaged packet costs its few ms, not the session
                    log.debug("%s: a packet could not be decoded (%s)", url, error.strerror)
                    continue
                for frame in frames:
                    if self._stopping.is_set():
                        return
                    self.callback(frame.to_ndarray().mean(axis=0), False)
            self._fail(f"{url}: the stream ended")
        except (av.FFmpegError, OSError) as error:
            why = _why(error, last_packet, self.source.timeouts[1], "no data")
            self._fail(f"{url}: reading the stream failed ({why})")
        finally:
            self.container.close()

    def _fail(self, message: str) -> None:
        if not self._stopping.is_set():
            log.warning("%s", message)
            self.failure = DeviceUnavailable(message)


def _why(error: Exception, since: float, timeout: float, silence: str) -> str:
    """What went wrong, without the URL that PyAV puts in its messages. PyAV's `timeout` (counted
    from `since`) interrupts the blocking call: FFmpeg says ExitError, or for RTSP invalid data."""
    if isinstance(error, decoders()[0].ExitError) or time.monotonic() - since >= timeout:
        return f"{silence} for {timeout:g} s"
    return redact(getattr(error, "strerror", None) or type(error).__name__)
