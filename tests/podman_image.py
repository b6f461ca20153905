"""Builds the humwatch image with podman for the container tests, with no image registry at hand.

The base is Debian bookworm from Debian's mirrors (edge/container/build-base.sh, mmdebstrap),
imported into podman and passed as BASE_IMAGE; its tarball is cached (HUMWATCH_CACHE, default
~/.cache/humwatch) under a name that changes with the script, so a CI run after the first
imports it instead of debootstrapping (a change to the script's comments changes no name). podman keeps the image's layers itself, so a build after
the first only redoes what changed. The images are tagged localhost/humwatch:test and
localhost/humwatch-addon:test, or another tag than test in HUMWATCH_TEST_TAG (so that two
checkouts on one machine do not overwrite each other's image).
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import subprocess
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "edge" / "container" / "Dockerfile"
BUILD_BASE = REPO / "edge" / "container" / "build-base.sh"
TAG = os.environ.get("HUMWATCH_TEST_TAG", "test")
IMAGE = f"localhost/humwatch:{TAG}"
ADDON_IMAGE = f"localhost/humwatch-addon:{TAG}"
# A TLS-intercepting proxy's CA (as on these machines) lets pip inside the build reach PyPI.
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")
HINT = ("install podman, runc, mmdebstrap and pulseaudio (apt-get install podman runc mmdebstrap uidmap pulseaudio; where crun refuses, "
        "/etc/containers/containers.conf needs default_ulimits = [] and cgroup_manager = \"cgroupfs\"; .ci/run does "
        "both), then: uv run pytest -q -m container")


def missing() -> str | None:
    """What this machine lacks to build and run the image (None when nothing)."""
    if shutil.which("podman") is None:
        return "no podman on this machine"
    if shutil.which("mmdebstrap") is None and not base_tarball().is_file():
        return "no mmdebstrap to build the base image with"
    if shutil.which("pulseaudio") is None:
        return "no pulseaudio to stand in for Home Assistant's audio"
    info = subprocess.run(["podman", "info"], capture_output=True, text=True)
    return None if info.returncode == 0 else f"podman does not work here ({info.stderr.strip()[-200:]})"


def podman(*args, check: bool = True, **options) -> subprocess.CompletedProcess:
    result = subprocess.run(["podman", *map(str, args)], capture_output=True, text=True, **options)
    if check and result.returncode != 0:
        raise AssertionError(f"podman {' '.join(map(str, args))} failed ({result.returncode}):\n"
                             f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def arch() -> str:
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())


def _script_digest() -> str:
    """What the script does (its lines but the comments): a new usage line builds no new base."""
    lines = [line for line in BUILD_BASE.read_text(encoding="utf-8").splitlines() if not line.startswith("#")]
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:12]


def base_tarball(architecture: str | None = None) -> Path:
    cache = Path(os.environ.get("HUMWATCH_CACHE", Path.home() / ".cache" / "humwatch"))
    return cache / f"base-bookworm-{architecture or arch()}-{_script_digest()}.tar"


def base_image(architecture: str | None = None) -> str:
    """The local Debian base in podman: built once per script version and architecture, then imported."""
    architecture = architecture or arch()
    name = f"localhost/humwatch-base:bookworm-{architecture}-{_script_digest()}"
    if podman("image", "exists", name, check=False).returncode == 0:
        return name
    tarball = base_tarball(architecture)
    if not tarball.is_file():
        tarball.parent.mkdir(parents=True, exist_ok=True)
        partial = tarball.with_name(f"partial-{tarball.name}")  # mmdebstrap writes a tarball for a .tar name
        result = subprocess.run([BUILD_BASE, partial, architecture], capture_output=True, text=True)
        assert result.returncode == 0, f"{BUILD_BASE} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        partial.rename(tarball)
    podman("import", "--arch", architecture, tarball, name)
    return name


def build(tag: str, context: Path, dockerfile: Path | None = None, platform_arch: str | None = None,
          labels: dict[str, str] | None = None, **build_args: str) -> str:
    """podman build in the docker format (HEALTHCHECK is not part of OCI's), on the host's network."""
    command = ["build", "--format", "docker", "--network", "host", "--tag", tag]
    for name, value in (labels or {}).items():
        command += ["--label", f"{name}={value}"]
    if HOST_CA.is_file():
        command += ["--volume", f"{HOST_CA}:{HOST_CA}:ro"]
    if dockerfile:
        command += ["--file", dockerfile]
    if platform_arch:
        command += ["--platform", f"linux/{platform_arch}"]
    for name, value in build_args.items():
        command += ["--build-arg", f"{name}={value}"]
    podman(*command, context, timeout=1800)
    return tag


def build_image(architecture: str | None = None, tag: str = IMAGE) -> str:
    """edge/container/Dockerfile from the clone, on the local base."""
    return build(tag, REPO, DOCKERFILE, architecture, BASE_IMAGE=base_image(architecture))


HASS_ARCH = {"amd64": "amd64", "arm64": "aarch64"}  # podman's architecture -> the Supervisor's


def supervisor_build(folder: Path, architecture: str | None = None, tag: str = ADDON_IMAGE) -> str:
    """An add-on folder built as the Supervisor builds it (supervisor/addons/build.py, get_docker_args): the
    folder as context, its Dockerfile, --platform, the io.hass labels and the build arguments BUILD_FROM,
    BUILD_VERSION and BUILD_ARCH. Two departures, no registry being reachable: BUILD_FROM is the local
    Debian base standing in for the image build.yaml names for the architecture, and no --pull."""
    architecture = architecture or arch()
    hass_arch = HASS_ARCH[architecture]
    config = yaml.safe_load((folder / "config.yaml").read_text(encoding="utf-8"))
    named = yaml.safe_load((folder / "build.yaml").read_text(encoding="utf-8"))["build_from"]
    assert hass_arch in config["arch"] and hass_arch in named, f"{folder}: no {hass_arch} in config.yaml and build.yaml"
    labels = {"io.hass.version": config["version"], "io.hass.arch": hass_arch, "io.hass.type": "addon",
              "io.hass.name": config["name"], "io.hass.description": config["description"].replace("'", ""),
              "io.hass.url": config["url"]}
    return build(tag, folder, folder / "Dockerfile", architecture, labels, BUILD_FROM=base_image(architecture),
                 BUILD_VERSION=config["version"], BUILD_ARCH=hass_arch)


def image_size_mb(tag: str) -> float:
    return int(podman("image", "inspect", "--format", "{{.Size}}", tag).stdout) / 1e6
