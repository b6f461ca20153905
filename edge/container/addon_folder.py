"""`humwatch addon-folder DIR`: the Home Assistant add-on as a local add-on folder, built by the Supervisor.

The folder is the clone's ha-addon/ (config.yaml, build.yaml, Dockerfile, DOCS.md, translations/,
addon.py) with what its Dockerfile installs: humwatch's wheel, built here from the clone (uv build),
the edge's hashed requirements (edge/install/requirements.txt) and the run-time system packages
(edge/container/system-packages.sh, shared with the humwatch image). The Supervisor builds it from
the base image build.yaml names for its architecture (passed as BUILD_FROM), the package indexes
and nothing humwatch publishes. config.yaml loses its `image:` line, the published image: without
it the Supervisor builds the folder instead of pulling.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import click

ROOT = Path(__file__).resolve().parents[2]  # the clone, when humwatch runs from one (uv run)
ADDON = ROOT / "ha-addon"
REQUIREMENTS = ROOT / "edge" / "install" / "requirements.txt"
SYSTEM_PACKAGES = Path(__file__).with_name("system-packages.sh")  # the image's and the add-on's run-time packages
PUBLISHED_IMAGE = re.compile(r"^image:.*\n", re.MULTILINE)  # config.yaml's line naming the published image


class FolderError(Exception):
    """The folder cannot be written; the message says why and what to do."""


def check_clone() -> None:
    missing = [path for path in (ADDON / "config.yaml", REQUIREMENTS, ROOT / "pyproject.toml") if not path.is_file()]
    if missing:
        raise FolderError(f"{missing[0]}: not found. The add-on folder is made from humwatch's clone: "
                          "git clone the repository, then run `uv run humwatch addon-folder DIR` inside it")
    if shutil.which("uv") is None:
        raise FolderError("uv is not on PATH: it builds humwatch's wheel (install it as the README says)")


def build_wheel(out: Path, into: Path) -> Path:
    """humwatch's wheel from the clone, built in `out` (which uv marks for git), moved into `into`."""
    result = subprocess.run(["uv", "build", "--wheel", "--quiet", "--out-dir", str(out), str(ROOT)],
                            capture_output=True, text=True)
    wheels = sorted(out.glob("humwatch-*.whl"))
    if result.returncode != 0 or len(wheels) != 1:
        raise FolderError(f"uv build --wheel {ROOT} failed ({result.returncode}): {result.stderr.strip()[-1500:]}")
    return wheels[0].rename(into / wheels[0].name)


def replaceable(target: Path) -> bool:
    """An empty or absent folder, or an add-on folder written by this command before."""
    if not target.exists():
        return True
    if not target.is_dir():
        return False
    config = target / "config.yaml"
    return not any(target.iterdir()) or (config.is_file() and re.search(r"^slug: humwatch$", config.read_text(
        encoding="utf-8"), re.MULTILINE) is not None and any(target.glob("humwatch-*.whl")))


def write_folder(target: Path) -> list[str]:
    """The add-on folder at `target` (replacing one written before, whole or not at all): its file names."""
    check_clone()
    target = target.absolute()
    if not replaceable(target):
        raise FolderError(f"{target}: exists and is not an add-on folder written by humwatch; give a new or empty folder")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{target.name}-", dir=target.parent) as scratch:
        folder = Path(scratch) / "humwatch"
        shutil.copytree(ADDON, folder, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        config = folder / "config.yaml"
        config.write_text(PUBLISHED_IMAGE.sub("", config.read_text(encoding="utf-8")), encoding="utf-8")
        shutil.copy2(REQUIREMENTS, folder / "requirements.txt")
        shutil.copy2(SYSTEM_PACKAGES, folder / SYSTEM_PACKAGES.name)
        build_wheel(Path(scratch) / "dist", folder)
        if target.exists():
            target.rename(Path(scratch) / "old")
        folder.rename(target)
    return sorted(path.relative_to(target).as_posix() for path in target.rglob("*") if path.is_file())


@click.command("addon-folder")
@click.argument("target", metavar="DIR", type=click.Path(path_type=Path, file_okay=False))
def addon_folder(target: Path) -> None:
    """Write the Home Assistant add-on as a local add-on folder.

    humwatch's wheel and the edge's pinned, hashed requirements go inside: the Supervisor builds the
    add-on from it, with no published image. DIR is a folder under Home Assistant's /addons (the `addons` share of the Samba or SSH add-on),
    e.g. /mnt/ha-addons/humwatch. Then: Settings > Add-ons > Add-on Store > (menu) Check for updates,
    and install humwatch under "Local add-ons"; the Supervisor builds it for its architecture.
    """
    try:
        files = write_folder(target)
    except (FolderError, OSError) as error:
        raise click.ClickException(str(error)) from error
    click.echo(f"{target}: the humwatch add-on, {len(files)} files ({', '.join(files)})")
    click.echo("Next: in Home Assistant, Settings > Add-ons > Add-on Store > (menu) Check for updates; "
               "install humwatch under Local add-ons")


COMMANDS = (addon_folder,)
