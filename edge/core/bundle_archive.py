"""A bundle as one archive, for `humwatch push` and the monitor that receives it: a plain tar of the
bundle's own files, flat. Both sides use this module, so what one packs the other unpacks.

Unpacking trusts nothing in the archive: every member must be a regular file with a plain name
(no directory, no '/', no '..', no absolute path, no link, no device), at most MAX_MEMBERS of them,
each named once, their sizes within the limit given; bundle.json must be among them and every other
file must be one it lists (or the judge's report, JUDGED), each with the size and sha256 it records.
A refusal is an :class:`ArchiveError` saying which member and why; nothing is left behind.
"""

from __future__ import annotations

import json
import shutil
import tarfile
from pathlib import Path
from typing import BinaryIO

from edge.core.bundle import MANIFEST, PLAIN_NAME, BundleError, read_manifest
from edge.core.files import sha256_file

MAX_MEMBERS = 32  # a bundle holds bundle.json and a few graphs
JUDGED = "judged.json"  # `humwatch judge`'s scores of this bundle against the one it replaces: shown on the page


class ArchiveError(BundleError):
    """An archive that is not a bundle humwatch would unpack; the message names the member and the reason."""


def pack_bundle(directory: Path, out: BinaryIO) -> list[str]:
    """Write bundle.json, every file it lists and JUDGED (when there) as a flat tar to `out`; the names packed."""
    directory = Path(directory)
    listed = read_manifest(directory / MANIFEST).get("files", {})
    names = [MANIFEST, *sorted(listed), *([JUDGED] if (directory / JUDGED).is_file() else [])]
    with tarfile.open(fileobj=out, mode="w") as archive:
        for name in names:
            archive.add(directory / name, arcname=name, recursive=False)
    return names


def unpack_bundle(archive_path: Path, target: Path, max_bytes: int) -> None:
    """Check every member (see the module's docstring) and write the files into the new folder
    `target`; ArchiveError for anything else (and `target` is removed)."""
    try:
        with tarfile.open(archive_path, mode="r:") as archive:
            members = _checked_members(archive, max_bytes)
            target.mkdir(parents=True)
            try:
                for member in members:
                    with archive.extractfile(member) as source, open(target / member.name, "xb") as copy:
                        shutil.copyfileobj(source, copy, 1 << 20)
                _check_against_manifest(target, {member.name for member in members})
            except BaseException:
                shutil.rmtree(target, ignore_errors=True)
                raise
    except tarfile.TarError as error:
        raise ArchiveError(f"not a tar archive of a bundle ({error}); send one made by 'humwatch push'") from None


def _checked_members(archive: tarfile.TarFile, max_bytes: int) -> list[tarfile.TarInfo]:
    members, total, seen = [], 0, set()
    for member in archive:
        if len(members) >= MAX_MEMBERS:
            raise ArchiveError(f"more than {MAX_MEMBERS} members: not a bundle")
        name = member.name
        if name.startswith("/") or ".." in name.split("/") or "/" in name.strip("/") or "\\" in name:
            raise ArchiveError(f"member {name[:100]!r}: a path (absolute, with '..' or a folder); a bundle's archive "
                               "holds plain file names only")
        if not member.isreg():
            kind = "a symbolic link" if member.issym() else "a hard link" if member.islnk() else "not a regular file"
            raise ArchiveError(f"member {name[:100]!r}: {kind}; a bundle's archive holds regular files only")
        if not PLAIN_NAME.fullmatch(name):
            raise ArchiveError(f"member {name[:100]!r}: not a plain file name (letters, digits, '.', '_', '-')")
        if name in seen:
            raise ArchiveError(f"member {name!r} twice")
        seen.add(name)
        total += member.size
        if total > max_bytes:
            raise ArchiveError(f"the files add up to over {max_bytes / 1e6:.0f} MB, the limit of this monitor "
                               "([deploy] max_mb)")
        members.append(member)
    return members


def _check_against_manifest(directory: Path, names: set[str]) -> None:
    """bundle.json is there, lists every other file (JUDGED aside), and each listed file has its recorded size and sha256."""
    if MANIFEST not in names:
        raise ArchiveError(f"no {MANIFEST} in the archive: not a bundle")
    listed = read_manifest(directory / MANIFEST).get("files")
    if not isinstance(listed, dict):
        raise ArchiveError(f"{MANIFEST} lists no files; re-export the bundle")
    if unlisted := sorted(names - set(listed) - {MANIFEST, JUDGED}):
        raise ArchiveError(f"{', '.join(unlisted)}: not listed in {MANIFEST}; a bundle holds only what it lists")
    for name, entry in listed.items():
        path = directory / str(name)
        if name not in names:
            raise ArchiveError(f"{name}: listed in {MANIFEST} but not in the archive")
        if not isinstance(entry, dict) or sha256_file(path) != entry.get("sha256") or path.stat().st_size != entry.get("bytes"):
            raise ArchiveError(f"{name}: checksum mismatch with {MANIFEST} (altered or cut short); nothing was changed")
    if JUDGED in names:
        try:
            json.loads((directory / JUDGED).read_text(encoding="utf-8"))
        except (UnicodeDecodeError, ValueError) as error:
            raise ArchiveError(f"{JUDGED}: not JSON ({error})") from None

