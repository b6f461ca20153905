"""The container image and the add-on's image (issue 25), built with podman and run.

edge/container/Dockerfile is built on a Debian base made here (no image registry is reachable:
see podman_image.py); the image then checks a mounted bundle, streams a mounted recording to the
right states, and runs a live monitor fed raw PCM on standard input whose HEALTHCHECK passes while
audio arrives and fails when it stops. The add-on's image is the folder `humwatch addon-folder`
writes, built with the Supervisor's build arguments (BUILD_FROM: the same local Debian base), and
run as the Supervisor runs it: options.json, its API faked on loopback offering a real broker, a
real PulseAudio server as its audio. Those are marked `container`; the health
check's own module and the example settings are tested everywhere.
"""

from __future__ import annotations

import json
import re
import subprocess
import threading
import time
import tomllib
import uuid
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import soundfile
import yaml
from broker import Subscriber
from click.testing import CliRunner
from conftest import REPO, read_16k
from fake_supervisor import MOSQUITTO, FakeSupervisor
from loopback_http import LoopbackServer
from podman_image import build_image, image_size_mb, podman, supervisor_build

from edge.cli import main
from edge.container import health
from edge.core.labels import AC_ON, BOTH_OFF
from edge.core.options import load_toml
from edge.monitor.settings import LiveSettings

FRIDGE_OFF = ["--fridge-on", "1.0", "--fridge-off", "1.0"]  # the tiny encoder cannot hear the fridge (test_edge)


@pytest.fixture(scope="module")
def image() -> str:
    return build_image()


@pytest.fixture(scope="module")
def addon_image(tmp_path_factory) -> str:
    """The folder `humwatch addon-folder` writes, built as the Supervisor builds a local add-on."""
    folder = tmp_path_factory.mktemp("addons") / "humwatch"
    written = CliRunner().invoke(main, ["addon-folder", str(folder)])
    assert written.exit_code == 0, written.output
    return supervisor_build(folder)


@pytest.fixture(scope="module")
def recording(project, tmp_path_factory) -> Path:
    """18 s of both-off, then 30 s of AC (as test_edge's switching recording)."""
    off = read_16k(project / "samples" / "ac-off-fridge-off-night.m4a")
    on = read_16k(project / "samples" / "ac-on-fridge-off-night.m4a")
    folder = tmp_path_factory.mktemp("recording")
    folder.chmod(0o755)  # the image's user reads it
    path = folder / "switch.wav"
    soundfile.write(path, np.concatenate([off[: 16_000 * 18], on[: 16_000 * 24], on[16_000 * 18 : 16_000 * 24]]), 16_000)
    return path


def _lines(output: str) -> list[dict]:
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


def test_the_container_example_settings_load_and_serve_the_healthcheck():
    example = REPO / "edge" / "container" / "humwatch.toml"
    settings = load_toml(LiveSettings, example)
    assert settings.bundle == Path("/data/bundle") and settings.history == Path("/data/history.sqlite")
    assert health.healthz_url(example) == "http://127.0.0.1:8321/healthz"
    compose = (REPO / "edge" / "container" / "compose.yaml").read_text(encoding="utf-8")
    assert "dockerfile: edge/container/Dockerfile" in compose and '"${HUMWATCH_PUBLISH:-8321}:8321"' in compose


CONTAINER = REPO / "edge" / "container"


def declared_args(dockerfile: Path) -> dict[str, str | None]:
    """The ARGs a Dockerfile declares, with their defaults."""
    found = re.findall(r"^ARG (\w+)(?:=(\S+))?$", dockerfile.read_text(encoding="utf-8"), re.MULTILINE)
    return {name: default or None for name, default in found}


def shown_builds(path: Path) -> list[str]:
    """The `docker build` / `podman build` commands a file's comments show, continuation lines joined."""
    text = "\n".join(line.lstrip("# ") for line in path.read_text(encoding="utf-8").splitlines() if line.startswith("#"))
    commands = text.replace("\\\n", " ").splitlines()
    return [command for command in commands if re.search(r"\b(docker|podman) build\b", command)]


def test_the_build_commands_shown_keep_the_healthcheck_and_pass_arguments_the_dockerfile_reads():
    dockerfiles = {"edge/container/Dockerfile": CONTAINER / "Dockerfile", None: REPO / "ha-addon" / "Dockerfile"}
    shown = {path: shown_builds(path) for path in (CONTAINER / "Dockerfile", CONTAINER / "build-base.sh",
                                                   REPO / "ha-addon" / "Dockerfile")}
    assert all(shown.values()), shown
    for path, commands in shown.items():
        for command in commands:
            named = re.search(r"(?:-f|--file) (\S+)", command)
            args = declared_args(dockerfiles[named.group(1) if named else None])
            assert "podman build" not in command or "--format docker" in command, f"{path.name}: {command}"
            for arg in re.findall(r"--build-arg (\w+)=", command):
                assert arg in args, f"{path.name}: {command}: the Dockerfile has no ARG {arg} (it reads {sorted(args)})"
    base = declared_args(CONTAINER / "Dockerfile")["BASE_IMAGE"]
    assert re.match(r"[a-z0-9-]+(\.[a-z0-9-]+)+/", base), f"BASE_IMAGE={base}: podman needs a registry in the name"


def test_compose_builds_with_the_base_argument_never_pulls_and_says_the_set_up_first():
    path = CONTAINER / "compose.yaml"
    service = yaml.safe_load(path.read_text(encoding="utf-8"))["services"]["humwatch"]
    assert set(service["build"]["args"]) == {"BASE_IMAGE"} <= set(declared_args(CONTAINER / "Dockerfile"))
    assert service["build"]["args"]["BASE_IMAGE"].startswith("${HUMWATCH_BASE_IMAGE:-docker.io/library/python:3.11")
    assert service["pull_policy"] == "build" and service["image"].startswith("localhost/humwatch:")
    lines = path.read_text(encoding="utf-8").splitlines()
    shown = [(i, line) for i, line in enumerate(lines) if line.startswith("#   ")]  # the commands the comments show
    first = {word: next(i for i, line in shown if word in line) for word in ("cp -r", "sudo chown", "up -d")}
    first["ports:"] = next(i for i, line in enumerate(lines) if line.strip() == "ports:")
    assert first["cp -r"] < first["sudo chown"] < first["up -d"], "the data folder is filled, then handed to uid 1000, then up"
    assert "token" in " ".join(lines[first["ports:"] - 4 : first["ports:"]]), "the published page's word about the token"


class Healthz(LoopbackServer):
    """A /healthz on loopback that answers what `answer` holds: (code, body)."""

    def __init__(self) -> None:
        self.answer = (200, b'{"ok": true, "reason": "audio arriving"}')
        super().__init__(self._healthz)

    def _healthz(self, request) -> tuple[int, None, bytes]:
        code, body = self.answer if request.path == "/healthz" else (404, b"{}")
        return code, None, body


def test_the_health_check_asks_the_settings_files_address(tmp_path, capsys):
    server = Healthz()
    config = tmp_path / "humwatch.toml"
    config.write_text(f'http = "0.0.0.0:{server.port}"\n', encoding="utf-8")  # a wildcard is asked on loopback
    assert health.main([str(config)]) == 0 and "audio arriving" in capsys.readouterr().out
    server.answer = (503, b'{"ok": false, "reason": "no audio for 12 s"}')
    assert health.main([str(config)]) == 1 and "503" in capsys.readouterr().out
    server.close()
    assert health.main([str(config)]) == 1 and "no answer" in capsys.readouterr().out
    config.write_text('bundle = "/data/bundle"\n', encoding="utf-8")
    assert health.main([str(config)]) == 1 and "no [http] listen" in capsys.readouterr().out
    assert health.healthz_url(_written(tmp_path, 'http = "[::]:8321"')) == "http://[::1]:8321/healthz"
    assert health.healthz_url(_written(tmp_path, 'http = "8321"')) == "http://127.0.0.1:8321/healthz"  # as files held before
    assert health.healthz_url(_written(tmp_path, '[http]\nlisten = "8321"')) == "http://127.0.0.1:8321/healthz"


def _written(folder: Path, text: str) -> Path:
    path = folder / "other.toml"
    path.write_text(text + "\n", encoding="utf-8")
    return path


@pytest.mark.container
def test_the_image_is_small_unprivileged_and_without_build_tools(image):
    inspected = json.loads(podman("image", "inspect", image).stdout)[0]
    config = inspected["Config"]
    assert config["User"] == "humwatch" and config["Entrypoint"] == ["humwatch"]
    assert config["Cmd"] == ["live", "--config", "/data/humwatch.toml"] and "/data" in config["Volumes"]
    healthcheck = inspected.get("Healthcheck") or config.get("Healthcheck")  # podman 4 keeps it beside Config
    assert healthcheck["Test"] == ["CMD", "python3", "-m", "edge.container.health"]
    inside = podman("run", "--rm", "--no-healthcheck", "--entrypoint", "sh", image, "-c",
                    "id -u; for tool in gcc cc c++ make ld as pip pip3 uv; do command -v $tool; done; "
                    "python3 -c 'import importlib.util as u; print(u.find_spec(\"torch\"))'").stdout.split()
    assert inside == ["1000", "None"], f"the image runs as uid 1000 with no compiler, pip or torch: {inside}"
    size = image_size_mb(image)
    print(f"\nimage {image}: {size:.0f} MB")
    assert size < 500, "the base (185 MB) and the venv (275 MB); apt's lists and caches gone"


@pytest.mark.container
def test_bundle_check_on_a_mounted_bundle(image, bundle_dir):
    result = podman("run", "--rm", "--no-healthcheck", "-v", f"{bundle_dir}:/bundle:ro", image,
                    "bundle", "check", "--bundle", "/bundle")
    assert "/bundle: bundle ok" in result.stdout


@pytest.mark.container
def test_stream_on_a_mounted_recording_gives_the_states(image, bundle_dir, recording):
    options = ["--hop", "1.5", *FRIDGE_OFF]
    result = podman("run", "--rm", "--no-healthcheck", "-v", f"{bundle_dir}:/bundle:ro", "-v", f"{recording.parent}:/audio:ro",
                    image, "stream", "--bundle", "/bundle", *options, f"/audio/{recording.name}")
    lines = _lines(result.stdout)
    debounced = [line["debounced_status"] for line in lines]
    changes = [i for i in range(1, len(debounced)) if debounced[i] != debounced[i - 1]]
    assert debounced[0] == BOTH_OFF and len(changes) == 1 and debounced[changes[0]] == AC_ON
    here = _lines(CliRunner().invoke(main, ["stream", "--bundle", str(bundle_dir), *options, str(recording)]).output)
    assert [(line["t"], line["debounced_status"]) for line in lines] == [(line["t"], line["debounced_status"]) for line in here]


class Feeder:
    """Writes a recording as raw s16le PCM to a process's standard input at real-time pace, looping,
    until paused; the pipe stays open while paused, as a microphone that went quiet."""

    def __init__(self, process, audio: np.ndarray, rate: int = 16_000) -> None:
        self.process, self.rate = process, rate
        self.pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()
        self.running = threading.Event()
        self.running.set()
        threading.Thread(target=self._feed, daemon=True).start()

    def _feed(self) -> None:
        chunk, position, start, sent = self.rate // 10 * 2, 0, time.monotonic(), 0
        while self.process.poll() is None:
            if not self.running.is_set():
                time.sleep(0.1)
                continue
            piece = self.pcm[position : position + chunk] or self.pcm[:chunk]
            position = (position + len(piece)) % len(self.pcm)
            try:
                self.process.stdin.write(piece)
                self.process.stdin.flush()
            except (BrokenPipeError, ValueError):
                return
            sent += len(piece) // 2
            time.sleep(max(0.0, start + sent / self.rate - time.monotonic()))


@contextmanager
def running(image: str, *args: str, command: tuple[str, ...] = ()):
    """A container of `image` whose standard input is ours to write: (its name, the podman process)."""
    name = f"humwatch-test-{uuid.uuid4().hex[:8]}"
    process = subprocess.Popen(["podman", "run", "-i", "--rm", "--name", name, *args, image, *command], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        yield name, process
    finally:
        podman("rm", "--force", "--time", "2", name, check=False)
        process.kill()
        output = process.communicate(timeout=30)[0].decode("utf-8", "replace")
        print(output[-3000:])


def _until(condition, seconds: float, what: str):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(1)
    raise AssertionError(f"{what} within {seconds:.0f} s")


def _healthcheck(name: str) -> bool:
    return podman("healthcheck", "run", name, check=False).returncode == 0


def _health_says(name: str) -> str:
    result = podman("exec", name, "python3", "-m", "edge.container.health", check=False)
    return result.stdout.strip()


def _data_dir(tmp_path: Path, **files: str) -> Path:
    data = tmp_path / "data"
    data.mkdir()
    data.chmod(0o777)  # the image's user (uid 1000) writes the history here
    for name, text in files.items():
        (data / name).write_text(text, encoding="utf-8")
    return data


@pytest.mark.container
def test_healthcheck_follows_a_live_monitor_fed_on_stdin(image, bundle_dir, project, tmp_path):
    settings = ('bundle = "/bundle"\nsource = "-"\nsource_format = "s16le:16000:1"\nhop = "1.5"\n'
                'http = "0.0.0.0:8321"\nhistory = "/data/history.sqlite"\nonly_changes = true\n')
    data = _data_dir(tmp_path, **{"humwatch.toml": settings})
    audio = read_16k(project / "samples" / "ac-on-fridge-off-night.m4a")
    with running(image, "-v", f"{bundle_dir}:/bundle:ro", "-v", f"{data}:/data") as (name, process):
        feeder = Feeder(process, audio)
        _until(lambda: _healthcheck(name), 60, "the HEALTHCHECK did not pass with audio arriving")
        assert json.loads(_health_says(name))["ok"] is True
        feeder.running.clear()  # the microphone goes quiet: the stall timeout (10 s) makes /healthz 503
        _until(lambda: not _healthcheck(name), 40, "the HEALTHCHECK did not fail once audio stopped")
        assert "no audio for" in _health_says(name)
        assert (data / "history.sqlite").is_file()


@pytest.mark.container
def test_the_example_settings_with_no_sound_server_end_the_container_with_the_reason(image, bundle_dir, tmp_path):
    """docs/containers.md's plain run: the example settings (source "pulse", the page on) and no sound server."""
    data = _data_dir(tmp_path, **{"humwatch.toml": (REPO / "edge/container/humwatch.toml").read_text(encoding="utf-8")})
    name = f"humwatch-test-{uuid.uuid4().hex[:8]}"
    try:
        result = podman("run", "--rm", "--name", name, "-v", f"{bundle_dir}:/data/bundle:ro", "-v", f"{data}:/data",
                        image, check=False, timeout=120)
    except subprocess.TimeoutExpired:
        raise AssertionError("the container still runs 120 s after a refusal at start") from None
    finally:
        podman("rm", "--force", "--time", "0", name, check=False)
    assert result.returncode == 1 and "pulse: no such input device" in result.stderr, result.stderr[-2000:]


@pytest.mark.container
def test_a_running_monitor_stops_on_podman_stop(image, bundle_dir, project, tmp_path):
    """humwatch is PID 1 in the container: SIGTERM from podman stop ends it, not SIGKILL after the wait."""
    settings = ('bundle = "/bundle"\nsource = "-"\nsource_format = "s16le:16000:1"\nhop = "1.5"\n'
                'http = "0.0.0.0:8321"\nhistory = "/data/history.sqlite"\nclips = "/data/clips"\n')
    data = _data_dir(tmp_path, **{"humwatch.toml": settings})
    with running(image, "-v", f"{bundle_dir}:/bundle:ro", "-v", f"{data}:/data") as (name, process):
        Feeder(process, read_16k(project / "samples" / "ac-on-fridge-off-night.m4a"))
        _until(lambda: _healthcheck(name), 60, "the HEALTHCHECK did not pass with audio arriving")
        started = time.monotonic()
        podman("stop", "--time", "60", name)
        seconds = time.monotonic() - started
        assert process.wait(30) == 0 and seconds < 30, f"stopped after {seconds:.0f} s"


class PulseServer:
    """A PulseAudio server on a unix socket, its default source a 440 Hz sine: a stand-in for Home
    Assistant's audio plugin, which the Supervisor hands an add-on with `audio: true` as the socket
    /run/audio/pulse.sock, /etc/pulse/client.conf naming it and /etc/asound.conf making ALSA's
    default device PulseAudio (supervisor/docker/app.py; data/asound.tmpl, pulse-client.tmpl)."""

    CLIENT_CONF = "default-server = unix:/run/audio/pulse.sock\nautospawn = no\n"
    ASOUND_CONF = "pcm.!default {\n    type pulse\n}\nctl.!default {\n    type pulse\n}\n"

    def __init__(self, folder: Path) -> None:
        folder.mkdir()
        self.folder, self.socket = folder, folder / "pulse.sock"
        (folder / "default.pa").write_text("load-module module-sine-source rate=48000 frequency=440 source_name=mic\n"
                                           "set-default-source mic\n"
                                           f"load-module module-native-protocol-unix socket={self.socket} auth-anonymous=1\n")
        (folder / "client.conf").write_text(self.CLIENT_CONF)
        (folder / "asound.conf").write_text(self.ASOUND_CONF)
        self.process = subprocess.Popen(["pulseaudio", "-n", "-F", folder / "default.pa", "--daemonize=no", "--exit-idle-time=-1",
                                         "--disallow-exit", "--log-target=stderr"], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE, env={"HOME": str(folder), "XDG_RUNTIME_DIR": str(folder),
                                                                     "PATH": "/usr/bin:/bin"})
        _until(self.socket.exists, 20, "PulseAudio did not listen")
        self.socket.chmod(0o777)

    def mounts(self) -> list[str]:
        return ["-v", f"{self.socket}:/run/audio/pulse.sock", "-v", f"{self.folder / 'client.conf'}:/etc/pulse/client.conf:ro",
                "-v", f"{self.folder / 'asound.conf'}:/etc/asound.conf:ro"]

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


# A container on slirp4netns reaches this machine's loopback (the fake Supervisor, the broker) at this address.
HOST_LOOPBACK = "10.0.2.2"


@pytest.mark.container
def test_the_addon_folder_built_as_the_supervisor_does_starts_from_its_options_with_its_audio_and_mqtt(
        addon_image, bundle_dir, broker, tmp_path):
    """The Supervisor's side, faked: options.json in /data, SUPERVISOR_TOKEN, its API (/info, /services/mqtt
    offering a real broker), its PulseAudio socket and configs; the bundle under /share."""
    options = {"name": "Kitchen", "bundle": "/share/humwatch/bundle", "hop": "1.5", "history": True, "clips": False,
               "alarm": ["fridge-run-max=90m"], "http_host": ["ha.example.org"]}  # no source: the audio input
    data = _data_dir(tmp_path, **{"options.json": json.dumps(options)})
    pulse = PulseServer(tmp_path / "audio")
    supervisor = FakeSupervisor({**MOSQUITTO, "host": HOST_LOOPBACK, "port": broker.port})
    subscriber = Subscriber(broker.port)
    try:
        with running(addon_image, "--network", "slirp4netns:allow_host_loopback=true", "-e",
                     f"SUPERVISOR_TOKEN={FakeSupervisor.TOKEN}", "-v", f"{bundle_dir}:/share/humwatch/bundle:ro",
                     "-v", f"{data}:/data", *pulse.mounts(),
                     command=("--supervisor", f"http://{HOST_LOOPBACK}:{supervisor.port}")) as (name, _):
            _until(lambda: _healthcheck(name), 90, "the add-on's HEALTHCHECK did not pass on Home Assistant's audio")
            written = tomllib.loads((data / "humwatch.toml").read_text(encoding="utf-8"))
            assert written["http"]["listen"] == "0.0.0.0:8321" and written["name"] == "Kitchen" and "source" not in written
            assert written["mqtt"]["url"] == f"mqtt://{HOST_LOOPBACK}:{broker.port}"
            assert written["http"]["hosts"] == ["ha.example.org", "homeassistant", "homeassistant.local"]
            assert {"/info", "/services/mqtt"} <= set(supervisor.requests) and json.loads(_health_says(name))["ok"] is True
            assert subscriber.wait(lambda t, p, r: t == "homeassistant/sensor/humwatch_kitchen/state/config", 30), \
                "no discovery on the Supervisor's broker"
            assert subscriber.wait(lambda t, p, r: t == "humwatch/kitchen/availability" and p == "online", 30)
            ask = ("import sys, urllib.request, urllib.error\n"
                   "request = urllib.request.Request('http://127.0.0.1:8321/api/page', headers={'Host': sys.argv[1]})\n"
                   "try: print(urllib.request.urlopen(request, timeout=5).status)\n"
                   "except urllib.error.HTTPError as error: print(error.code)\n")
            # Home Assistant's ingress proxy passes on the Host the browser used for Home Assistant
            assert podman("exec", name, "python3", "-c", ask, "homeassistant.local:8123").stdout.strip() == "200"
            assert podman("exec", name, "python3", "-c", ask, "attacker.example").stdout.strip() == "421"
    finally:
        subscriber.close()
        supervisor.close()
        pulse.stop()


@pytest.mark.container
def test_the_addon_image_has_no_build_tools_and_is_small(addon_image):
    inside = podman("run", "--rm", "--no-healthcheck", "--entrypoint", "sh", addon_image, "-c",
                    "for tool in gcc cc make pip pip3 uv; do command -v $tool; done; "
                    "python3 -c 'import importlib.util as u; print(u.find_spec(\"torch\"))'").stdout.split()
    assert inside == ["None"], f"no compiler, pip or torch in the add-on's image: {inside}"
    inspected = json.loads(podman("image", "inspect", addon_image).stdout)[0]
    assert inspected["Config"]["Labels"]["io.hass.type"] == "addon"
    size = image_size_mb(addon_image)
    print(f"\nadd-on image {addon_image}: {size:.0f} MB")
    assert size < 500, "the base (185 MB) and the venv (275 MB); apt's lists and caches gone"
