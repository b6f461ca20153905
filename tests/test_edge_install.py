"""The edge install: edge/install/requirements.txt is uv.lock's base dependencies, hashed, and the
wheel installs with it into a fresh venv, offline from a wheel folder, as docs/pi.md says."""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import sys

from conftest import REPO
from packaging.markers import Marker

REQUIREMENTS = REPO / "edge" / "install" / "requirements.txt"
DOWNLOAD = REPO / "edge" / "install" / "download-wheels.sh"


def run(*command, **options) -> subprocess.CompletedProcess:
    result = subprocess.run([str(part) for part in command], capture_output=True, text=True, **options)
    assert result.returncode == 0, f"{' '.join(map(str, command))} failed:\n{result.stdout}\n{result.stderr}"
    return result


def export_command() -> list[str]:
    """The command written in the file's header by uv itself."""
    header = REQUIREMENTS.read_text(encoding="utf-8").splitlines()[1]
    return header.lstrip("# ").split()


def test_requirements_are_the_locks_base_dependencies():
    command = export_command()
    assert command[:2] == ["uv", "export"] and {"--locked", "--no-dev", "--no-emit-project"} <= set(command)
    uv = shutil.which("uv")
    assert uv, "uv is not on PATH (pip install uv)"
    regenerated = run(uv, *command[1:], cwd=REPO, env={**os.environ, "UV_OFFLINE": "1"}).stdout
    assert regenerated == REQUIREMENTS.read_text(encoding="utf-8"), (
        f"{REQUIREMENTS} differs from uv.lock: regenerate it with '{' '.join(command)} > edge/install/requirements.txt'")
    pins = dict(re.findall(r"^([a-z0-9-]+)==(\S+)", regenerated, flags=re.M))
    assert "onnxruntime" in pins and "numpy" in pins and not {"torch", "torchaudio", "onnx", "pandas", "ray"} & set(pins)
    assert regenerated.count("--hash=sha256:") >= len(pins)


def pinned_for_this_python(requirements: str) -> dict[str, str]:
    """name -> version of the requirements whose environment marker this Python meets."""
    return {name: version for name, version, marker in
            re.findall(r"^([a-z0-9-]+)==([^\s;]+)(?: ; ([^\\\n]*))?", requirements, flags=re.M)
            if not marker or Marker(marker).evaluate()}


def test_the_wheel_installs_offline_with_hashes_and_checks_a_bundle(bundle_dir, tmp_path):
    uv = shutil.which("uv")
    assert uv, "uv is not on PATH (pip install uv)"
    run(uv, "build", "--wheel", "--out-dir", tmp_path / "dist", cwd=REPO)
    (wheel,) = (tmp_path / "dist").glob("humwatch-*.whl")
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", venv)
    pip, humwatch = venv / "bin" / "pip", venv / "bin" / "humwatch"
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    run(DOWNLOAD, tmp_path / "wheels", platform.machine(), python, env={**os.environ, "PIP": str(pip)})
    run(pip, "install", "--no-index", "--find-links", tmp_path / "wheels", "--require-hashes", "-r", REQUIREMENTS)
    run(pip, "install", "--no-index", "--no-deps", wheel)
    run(pip, "check")

    installed = dict(line.split("==") for line in run(pip, "list", "--format=freeze").stdout.split())
    assert installed.pop("humwatch") == wheel.name.split("-")[1]
    pinned = pinned_for_this_python(REQUIREMENTS.read_text(encoding="utf-8"))
    assert {re.sub(r"[-_.]+", "-", name).lower(): version for name, version in installed.items()
            if name not in ("pip", "setuptools")} == pinned
    assert run(venv / "bin" / "python", "-c", "import importlib.util as u; print(u.find_spec('torch'))").stdout.strip() == "None"

    check = run(humwatch, "bundle", "check", "--bundle", bundle_dir)
    assert "bundle ok" in check.stdout
    usage = run(humwatch, "--help").stdout
    assert "Workstation commands (not installed here: need humwatch[train])" in usage and "export" in usage
    refused = subprocess.run([humwatch, "train", "--help"], capture_output=True, text=True)
    assert refused.returncode == 2 and "runs on the workstation" in refused.stderr and "humwatch[train]" in refused.stderr
    no_ray = subprocess.run([humwatch, "batch", "--bundle", bundle_dir, "--cluster", "auto", bundle_dir], capture_output=True, text=True)
    assert no_ray.returncode == 2 and "Ray is not installed here; install it with pip install 'humwatch[cluster]'" in no_ray.stderr
