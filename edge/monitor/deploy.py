"""Bundles pushed to a running monitor ('humwatch push'): received, checked exactly as at start,
swapped in between two hops, the previous one kept for 'humwatch rollback'.

The folder ([deploy] dir) holds::

    deployed.json                     which bundle runs and which one a rollback restores
    bundles/<received>-<run id>/      the bundles received (the running and the previous; older ones go)
    incoming/                         an archive while it arrives (removed once unpacked or refused)

A push is one at a time. The archive is unpacked and checked member by member
(edge.core.bundle_archive), then `swap` loads it as `humwatch live` does at start (every field of
bundle.json, every file's checksum, the graphs, one test window, the settings that name its
appliances) and only then swaps it in; anything refused leaves the running model as it was and
says why. deployed.json is written after a swap, so a restart starts with the bundle that ran.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

from edge.core.bundle import MANIFEST, BundleError, load_bundle
from edge.core.bundle_archive import JUDGED, unpack_bundle
from edge.core.files import sha256_file, write_json_atomic

log = logging.getLogger("humwatch.deploy")
STATE = "deployed.json"


class DeployError(ValueError):
    """A push or rollback refused; the running model is untouched and the message says why. `status`:
    the HTTP answer's code."""

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.status = status


def started_bundle(directory: Path | None, given: Path | None) -> Path | None:
    """The bundle a monitor starts with: the one deployed last in `directory`, else `given` (--bundle)."""
    if directory is None:
        return given
    current = _read_state(directory).get("current")
    if current and Path(current["path"]).is_dir():
        if given is not None and Path(current["path"]).resolve() != Path(given).resolve():
            log.info("starting with the bundle pushed last, %s (not --bundle %s; 'humwatch rollback' or an "
                     "empty %s returns to it)", current["path"], given, directory)
        return Path(current["path"])
    return given


def _read_state(directory: Path) -> dict:
    try:
        state = json.loads((directory / STATE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as error:
        raise DeployError(f"{directory / STATE}: unreadable ({error}); remove it to start from --bundle") from error
    return state if isinstance(state, dict) else {}


def describe(path: Path) -> dict:
    """A bundle as the page and `humwatch push` show it: its run, date, appliances, checksum, and
    the judged scores pushed with it."""
    bundle = load_bundle(path)
    manifest = bundle.manifest
    judged = path / JUDGED
    return {"path": str(path), "name": manifest.name, "run_id": manifest.source.get("run_id"),
            "created": manifest.created, "appliances": list(manifest.labels),
            "manifest_sha256": sha256_file(path / MANIFEST),
            "judged": json.loads(judged.read_text(encoding="utf-8")) if judged.is_file() else None}


class Deployer:
    """The monitor's side of push and rollback (the HTTP server's narrow interface to them):
    :meth:`incoming` gives a file to receive an archive into, :meth:`receive` deploys it,
    :meth:`rollback` returns to the previous bundle, :meth:`status` says which run.

    `swap(path)` verifies the bundle at `path` and makes it the one every monitor of the process
    decides with (BundleError or ValueError: refused, nothing changed)."""

    def __init__(self, directory: Path, running: Path, max_bytes: int, swap: Callable[[Path], None]) -> None:
        self.directory, self.max_bytes, self.swap = Path(directory), max_bytes, swap
        for folder in (self.directory / "bundles", self.directory / "incoming"):
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as error:
                raise ValueError(f"--deploy-dir {directory}: cannot make {folder} ({error.strerror}); give a folder "
                                 "the monitor may write") from error
        state = _read_state(self.directory)
        self.current = Path(running)
        previous = state.get("previous") if state.get("current", {}).get("path") == str(running) else None
        self.previous = Path(previous["path"]) if previous and Path(previous["path"]).is_dir() else None
        self._lock = threading.Lock()

    @property
    def busy(self) -> bool:
        return self._lock.locked()

    @contextlib.contextmanager
    def incoming(self) -> Iterator[Path]:
        """A file in incoming/ to receive an archive into, removed afterwards."""
        handle, name = tempfile.mkstemp(prefix="push-", suffix=".tar", dir=self.directory / "incoming")
        path = Path(name)
        try:
            with open(handle, "wb"):
                pass
            yield path
        finally:
            path.unlink(missing_ok=True)

    def receive(self, archive: Path) -> dict:
        """Unpack, verify and swap in a pushed bundle; the running and previous bundles afterwards."""
        with self._exclusive():
            staging = self.directory / "incoming" / f"unpacked-{archive.stem}"
            unpack_bundle(archive, staging, self.max_bytes)
            try:
                self._swap(staging, "pushed")
                target = self.directory / "bundles" / self._folder_name(staging)
                staging.rename(target)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
            self.previous, self.current = self.current, target
            self._save()
            self._prune()
            return self.status()

    def rollback(self) -> dict:
        """Return to the previous bundle (it becomes the running one, the running one the previous)."""
        with self._exclusive():
            if self.previous is None:
                raise DeployError("no previous bundle to roll back to: nothing was pushed to this monitor yet")
            self._swap(self.previous, "rolled back to")
            self.previous, self.current = self.current, self.previous
            self._save()
            return self.status()

    def status(self) -> dict:
        """The running bundle and the one a rollback restores (None when there is none)."""
        return {"current": describe(self.current), "previous": describe(self.previous) if self.previous else None}

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[None]:
        if not self._lock.acquire(blocking=False):
            raise DeployError("another push or rollback is under way; try again when it is done", 409)
        try:
            yield
        finally:
            self._lock.release()

    def _swap(self, path: Path, verb: str) -> None:
        started = time.monotonic()
        try:
            self.swap(path)
        except (BundleError, ValueError) as error:
            raise DeployError(f"the bundle was refused, the running model is unchanged: {error}") from error
        log.info("%s %s in %.2f s (the running model until then: %s)", verb, path, time.monotonic() - started,
                 self.current)

    def _folder_name(self, staging: Path) -> str:
        run = str(load_bundle(staging).manifest.source.get("run_id") or "bundle")
        stamp = time.strftime("%Y%m%d-%H%M%S")
        name = f"{stamp}-{re.sub(r'[^A-Za-z0-9_.-]', '_', run)[:80]}"
        candidate, number = name, 1
        while (self.directory / "bundles" / candidate).exists():
            number += 1
            candidate = f"{name}-{number}"
        return candidate

    def _save(self) -> None:
        write_json_atomic(self.directory / STATE, {
            "current": {"path": str(self.current), "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")},
            "previous": {"path": str(self.previous)} if self.previous else None})

    def _prune(self) -> None:
        """Received bundles other than the running and the previous one go."""
        keep = {self.current.resolve(), *([self.previous.resolve()] if self.previous else [])}
        for folder in (self.directory / "bundles").iterdir():
            if folder.resolve() not in keep:
                shutil.rmtree(folder, ignore_errors=True)
                log.info("removed %s (neither running nor kept for a rollback)", folder)
