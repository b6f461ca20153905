"""Small file helpers: a folder walk that reports what it cannot read, what a path names (however
it is spelled), checksums, atomic writes (a reader never sees half a file), and directories built
beside their destination and renamed into place only when complete."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator


def walk_files(root: Path) -> tuple[list[Path], dict[Path, str]]:
    """Every file below `root` (subfolders too; linked folders are not followed), sorted, and for each
    folder that could not be read, the error naming it: os.walk and Path.rglob alone skip it silently."""
    found: list[Path] = []
    unreadable: dict[Path, str] = {}

    def note(error: OSError) -> None:
        unreadable[Path(error.filename)] = (f"{error.filename}: cannot read this folder ({error.strerror}); "
                                            f"nothing in it was searched: check its permissions")

    for folder, _, names in os.walk(root, onerror=note):
        found += (Path(folder, name) for name in names)
    return sorted(found), unreadable


def identity(path: str | Path) -> tuple:
    """What `path` names, however it is spelled: the file's device and inode where it exists (a
    symbolic or hard link, `..` and a trailing slash name the same one), else the path with every
    link and `..` resolved."""
    try:
        status = os.stat(path)
    except OSError:
        return ("path", os.path.realpath(path))
    return ("inode", status.st_dev, status.st_ino)


def sha256_file(path: str | Path, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it replaces `path` in one rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    os.chmod(temporary, 0o644)  # mkstemp's 0600 would make shared artifacts unreadable to others
    try:
        yield Path(temporary)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def write_text_atomic(path: str | Path, text: str) -> None:
    with atomic_path(path) as temporary:
        temporary.write_text(text, encoding="utf-8")


def write_json_atomic(path: str | Path, data) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


class DirectoryBuild:
    """A directory assembled as ``.partial-<name>-<pid>`` beside `destination`, renamed into place on success.

    ``with DirectoryBuild(destination) as build:`` write into ``build.path``; afterwards ``build.final``
    is where it landed. On any exception the partial directory is removed and the exception goes on,
    so nothing half-built ever has a final name. An existing destination is an error before any work,
    unless ``numbered``: then the first free ``<name>-2``, ``<name>-3``, ... is taken.
    """

    def __init__(self, destination: Path, numbered: bool = False) -> None:
        self.destination = Path(destination)
        self.numbered = numbered
        if self.destination.exists() and not numbered:
            raise FileExistsError(f"{self.destination} already exists; pick another name (nothing is overwritten)")
        self.path = self.destination.parent / f".partial-{self.destination.name}-{os.getpid()}"
        self.final: Path | None = None

    def __enter__(self) -> DirectoryBuild:
        self.destination.parent.mkdir(parents=True, exist_ok=True)
        self.path.mkdir()
        return self

    def __exit__(self, kind, error, traceback) -> None:
        if kind is not None:
            shutil.rmtree(self.path, ignore_errors=True)
            return
        for attempt in range(1, 1000):
            final = self.destination if attempt == 1 else self.destination.with_name(f"{self.destination.name}-{attempt}")
            if not final.exists():
                os.rename(self.path, final)
                self.final = final
                return
            if not self.numbered:
                break
        shutil.rmtree(self.path, ignore_errors=True)
        raise FileExistsError(f"{self.destination} appeared while it was being built; nothing was overwritten")
