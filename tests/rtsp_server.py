"""A real RTSP server on loopback for the source tests: Debian's GStreamer RTSP server.

The server runs in the system Python, which has python3-gi and gir1.2-gst-rtsp-server-1.0 (the
uv environment lacks them): :class:`RtspServer` starts this file as

    /usr/bin/python3 tests/rtsp_server.py WAV CODEC [--port N] [--credentials USER:PASSWORD] [--recorded]

which serves the WAV file, played in real time, at rtsp://127.0.0.1:PORT/stream: CODEC aac as AAC
alone; pcma or pcmu as G.711 beside an H.264 video track, live as a camera sends them, or with
--recorded not live, as a server that plays a recording: GStreamer then stops the media when a
client set up the audio track alone (the video has nowhere to go), most often before any audio.
It prints "port N" once it listens and "setup URI" for every stream a client sets up, so a test
can tell whether the video was ever asked for. Only the standard library is imported at the top.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time

SYSTEM_PYTHON = "/usr/bin/python3"
ELEMENTS = ("wavparse", "audioconvert", "audioresample", "voaacenc", "aacparse", "rtpmp4gpay", "alawenc", "rtppcmapay",
            "mulawenc", "rtppcmupay", "videotestsrc", "x264enc", "rtph264pay")
HINT = ("install Debian's GStreamer RTSP server and plugins (apt-get install python3-gi gir1.2-gst-rtsp-server-1.0 "
        "gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly; "
        ".ci/run does), then: uv run pytest -q -m rtsp")
AUDIO = "filesrc location={wav} ! wavparse ! audioconvert ! audioresample"
VIDEO = ("videotestsrc is-live={live} pattern=ball ! video/x-raw,width=320,height=240,framerate=15/1 "
         "! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=15 ! rtph264pay name=pay0 pt=96 config-interval=1")
PIPELINES = {
    "aac": f"( {AUDIO} ! voaacenc bitrate=64000 ! aacparse ! rtpmp4gpay name=pay0 pt=97 )",
    "pcma": f"( {VIDEO} {AUDIO} ! audio/x-raw,rate=8000,channels=1 ! alawenc ! rtppcmapay name=pay1 pt=8 )",
    "pcmu": f"( {VIDEO} {AUDIO} ! audio/x-raw,rate=8000,channels=1 ! mulawenc ! rtppcmupay name=pay1 pt=0 )",
}
_CHECK = f"""
import gi
gi.require_version("Gst", "1.0"); gi.require_version("GstRtspServer", "1.0")
from gi.repository import Gst, GstRtspServer
Gst.init(None)
missing = [name for name in {ELEMENTS!r} if Gst.ElementFactory.find(name) is None]
print(" ".join(missing))
"""


def missing() -> str | None:
    """What this machine lacks to run the server (None when nothing)."""
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        return f"no {SYSTEM_PYTHON}"
    try:
        result = subprocess.run([SYSTEM_PYTHON, "-c", _CHECK], capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        return "GStreamer did not start within 60 s"
    if result.returncode != 0:
        return result.stderr.strip().splitlines()[-1] if result.stderr.strip() else "GStreamer does not start"
    return f"GStreamer elements missing: {result.stdout.strip()}" if result.stdout.strip() else None


class RtspServer:
    """The server as a subprocess: start, kill (SIGKILL, as a crash) and start again on the same port."""

    def __init__(self, wav, codec: str, credentials: str | None = None, recorded: bool = False) -> None:
        self.wav, self.codec, self.credentials, self.recorded = str(wav), codec, credentials, recorded
        self.port = 0
        self.setups: list[str] = []
        self._process: subprocess.Popen | None = None

    def start(self) -> RtspServer:
        command = [SYSTEM_PYTHON, __file__, self.wav, self.codec, "--port", str(self.port)]
        if self.credentials:
            command += ["--credentials", self.credentials]
        if self.recorded:
            command.append("--recorded")
        self._process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        line = self._process.stdout.readline().split()
        if line[:1] != ["port"]:
            self.kill()
            raise RuntimeError(f"the RTSP server did not start: {' '.join(command)}")
        self.port = int(line[1])
        threading.Thread(target=self._follow, args=(self._process,), daemon=True).start()
        return self

    def _follow(self, process: subprocess.Popen) -> None:
        for line in process.stdout:
            if line.startswith("setup "):
                self.setups.append(line.split(maxsplit=1)[1].strip())

    def url(self, userinfo: str | None = None) -> str:
        return f"rtsp://{userinfo + '@' if userinfo else ''}127.0.0.1:{self.port}/stream"

    def kill(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            process.send_signal(signal.SIGKILL)
            process.wait(10)
            process.stdout.close()

    def __enter__(self) -> RtspServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.kill()


def wait_until(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def main() -> None:
    import gi

    gi.require_version("Gst", "1.0")
    gi.require_version("GstRtspServer", "1.0")
    from gi.repository import GLib, Gst, GstRtspServer

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("wav")
    parser.add_argument("codec", choices=sorted(PIPELINES))
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--credentials", help="USER:PASSWORD that clients must give (basic authentication)")
    parser.add_argument("--recorded", action="store_true", help="the video is not live, as a recording played back")
    args = parser.parse_args()

    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(PIPELINES[args.codec].format(wav=args.wav, live="false" if args.recorded else "true"))
    factory.set_shared(False)  # every client gets the recording from its start
    if args.credentials:
        user, _, password = args.credentials.partition(":")
        auth = GstRtspServer.RTSPAuth()
        token = GstRtspServer.RTSPToken()
        token.set_string("media.factory.role", "user")
        auth.add_basic(GstRtspServer.RTSPAuth.make_basic(user, password), token)
        server.set_auth(auth)
        factory.add_role_from_structure(Gst.Structure.new_from_string(
            "user, media.factory.access=(boolean)true, media.factory.construct=(boolean)true"))
    server.get_mount_points().add_factory("/stream", factory)

    def on_client(_server, client) -> None:
        client.connect("setup-request", lambda _client, context: print("setup", context.uri.get_request_uri(), flush=True))

    server.connect("client-connected", on_client)
    if server.attach(None) == 0:
        sys.exit(f"cannot listen on 127.0.0.1:{args.port}")
    print("port", server.get_bound_port(), flush=True)
    GLib.MainLoop().run()


if __name__ == "__main__":
    main()
