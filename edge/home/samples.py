"""The home's new training data on the Pi: the relabel folder (--relabel-dir), holding the page's
relabelled clips and the samples it records from the monitor's own input, until the workstation
pulls them ('humwatch pull').

A recording is named by the sample naming, every appliance of the bundle on or off, with a tag
that never repeats (``ac-off-fridge-on-night-rec-20261204-213005-a1b2c3.flac``; its random part
also decides whether it is kept for judging: one in four recordings is, see
edge.core.labels.kept_for_judging): the monitor's
input at its own rate, FLAC, written whole or not at all when its seconds have arrived; the
monitor decides all along. One recording at a time, at most `max_sec` long and `max_count`
waiting in the folder; a disk without room for it refuses it before it starts (507), and one that
fills meanwhile leaves no file and says so in the listing.

What was pulled is remembered (``.pulled.json``: name -> sha256), so the page shows what is not
yet on the workstation; a file whose content changed since (a relabel redone) counts as new.
"""

from __future__ import annotations

import dataclasses
import errno
import io
import json
import logging
import secrets
import shutil
import threading
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import soundfile

from edge.core.files import atomic_path, sha256_file, write_json_atomic
from edge.core.labels import DAYPARTS, JUDGING_SHARE, SampleName, kept_for_judging, parse_sample_name, sample_file_name
from edge.core.output import error_text
from edge.home.page import CLIP_NAME, Refused

log = logging.getLogger("humwatch.samples")
PULLED = ".pulled.json"
RECORDING_TAG = "rec-"  # a recording's tag starts so (a relabelled clip's with "clip-")
FLAC_BYTES_PER_SAMPLE = 3  # PCM_24, before compression: the room a recording asks for


class SampleFolder:
    """The relabel folder as the page and `humwatch pull` see it."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self._sums: dict[str, tuple[float, int, str]] = {}  # name -> (mtime, size, sha256): hashed once per content
        self._lock = threading.Lock()

    def path(self, name: str) -> Path:
        """The sample `name` in the folder; Refused for anything else (paths, hidden or other files)."""
        if not isinstance(name, str) or not CLIP_NAME.fullmatch(name) or ".." in name or parse_sample_name(name) is None:
            raise Refused(400, f"sample {str(name)[:80]!r}: not a sample name in the relabel folder")
        path = self.directory / name
        if path.resolve().parent != self.directory.resolve() or not path.is_file():
            raise Refused(404, f"sample {name!r}: no such sample")
        return path

    def listing(self) -> list[dict]:
        """Every sample (newest first): name, kind (recording or relabel), bytes, sha256, pulled."""
        pulled = self._pulled()
        rows = []
        for path in sorted(self.directory.glob("*.flac"), key=lambda p: p.stat().st_mtime, reverse=True):
            named = parse_sample_name(path)
            if named is None:
                continue
            digest = self._sha256(path)
            rows.append({"name": path.name, "kind": "recording" if (named.tag or "").startswith(RECORDING_TAG)
                         else "relabel", "bytes": path.stat().st_size, "sha256": digest,
                         "labels": named.labels, "daypart": named.daypart, "pulled": pulled.get(path.name) == digest,
                         "judging": kept_for_judging(named)})
        return rows

    def mark_pulled(self, names: Mapping[str, str]) -> int:
        """Remember these samples (name -> the sha256 the workstation checked) as pulled; how many matched."""
        with self._lock:
            pulled, marked = self._pulled(), 0
            for name, digest in names.items():
                path = self.path(name)
                if self._sha256(path) == digest:
                    pulled[name] = digest
                    marked += 1
            current = {path.name for path in self.directory.glob("*.flac")}
            write_json_atomic(self.directory / PULLED, {name: s for name, s in pulled.items() if name in current})
        return marked

    def delete(self, name: str) -> None:
        """Remove a recording (relabelled clips are replaced by relabelling them again)."""
        path = self.path(name)
        named = parse_sample_name(path)
        if not (named.tag or "").startswith(RECORDING_TAG):
            raise Refused(400, f"sample {name!r}: not a recording; only recordings are deleted here")
        path.unlink()

    def recordings(self) -> int:
        return sum(1 for _ in self.directory.glob(f"*-{RECORDING_TAG}*.flac"))

    def _pulled(self) -> dict[str, str]:
        try:
            pulled = json.loads((self.directory / PULLED).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return pulled if isinstance(pulled, dict) else {}

    def _sha256(self, path: Path) -> str:
        status = path.stat()
        known = self._sums.get(path.name)
        if known is None or known[:2] != (status.st_mtime, status.st_size):
            known = self._sums[path.name] = (status.st_mtime, status.st_size, sha256_file(path))
        return known[2]


@dataclasses.dataclass
class Recording:
    name: str
    seconds: float
    started: float
    chunks: list = dataclasses.field(default_factory=list)
    samples: int = 0
    rate: int | None = None


class Recorder:
    """The monitor's audio tap (called with each chunk of its input and the chunk's rate, from the
    monitor's worker: it only copies) that records one labelled sample at a time into `folder`."""

    def __init__(self, folder: SampleFolder, max_sec: float = 600.0, max_count: int = 200, clock=time.time) -> None:
        self.folder, self.max_sec, self.max_count, self.clock = folder, max_sec, max_count, clock
        self.now: Recording | None = None
        self.rate = 48_000  # the input's, once a chunk came
        self.last_error: str | None = None  # why the last recording was not written
        self._lock = threading.Lock()

    def start(self, labels: Mapping[str, bool], daypart: str, seconds: float) -> Recording:
        """Begin recording what the input hears for `seconds`, named by these labels; Refused when one
        is under way, the folder holds max_count recordings, the seconds are out of range or the disk
        has no room for it."""
        if daypart not in DAYPARTS:
            raise Refused(400, f"daypart {daypart[:40]!r}: expected one of {', '.join(DAYPARTS)}")
        if not 1 <= seconds <= self.max_sec:
            raise Refused(400, f"seconds {seconds:g}: expected 1 to {self.max_sec:g} ([clips] record_max_sec)")
        with self._lock:
            if self.now is not None:
                raise Refused(409, f"a recording is under way ({self.now.name}); wait for it to end")
            if self.folder.recordings() >= self.max_count:
                raise Refused(507, f"{self.max_count} recordings wait in {self.folder.directory} ([clips] recordings_max);"
                                   " pull them to the workstation and delete some")
            needed = seconds * self.rate * FLAC_BYTES_PER_SAMPLE
            if shutil.disk_usage(self.folder.directory).free < needed:
                raise Refused(507, f"{self.folder.directory}: no room for {seconds:g} s of audio (about "
                                   f"{needed / 1e6:.0f} MB); free some space")
            name = sample_file_name(labels, daypart, tag=self._tag(), suffix=".flac")
            self.now, self.last_error = Recording(name, seconds, self.clock()), None
            log.info("recording %s (%g s)", name, seconds)
            return self.now

    def _tag(self) -> str:
        """A new recording's tag: its time and a random part, drawn so that one in JUDGING_SHARE of
        the folder's recordings (the first one too) is kept for judging (edge.core.labels.kept_for_judging)."""
        recordings = [parse_sample_name(path) for path in self.folder.directory.glob(f"*-{RECORDING_TAG}*.flac")]
        held = sum(kept_for_judging(named) for named in recordings if named is not None)
        hold = held * JUDGING_SHARE <= len(recordings)
        stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(self.clock()))
        while True:
            tag = f"{RECORDING_TAG}{stamp}-{secrets.token_hex(3)}"
            if kept_for_judging(SampleName({}, "day", tag)) == hold:
                return tag

    def status(self) -> dict | None:
        """The recording under way: its name, seconds asked for and heard so far (None when none)."""
        recording = self.now
        if recording is None:
            return None
        return {"name": recording.name, "seconds": recording.seconds,
                "heard_sec": recording.samples / recording.rate if recording.rate else 0.0}

    def __call__(self, chunk: np.ndarray, rate: int) -> None:
        self.rate = rate
        with self._lock:
            recording = self.now
            if recording is None:
                return
            if recording.rate not in (None, rate):  # the source reopened at another rate: keep what came first
                self._finish(recording)
                return
            recording.rate = rate
            wanted = int(recording.seconds * rate) - recording.samples
            recording.chunks.append(np.array(chunk[:wanted], dtype=np.float32))
            recording.samples += min(len(chunk), wanted)
            if recording.samples >= int(recording.seconds * rate):
                self._finish(recording)

    def _finish(self, recording: Recording) -> None:
        """Write it in a thread of its own (the monitor's worker goes on deciding)."""
        self.now = None
        threading.Thread(target=self._write, args=(recording,), name="humwatch-recording", daemon=True).start()

    def _write(self, recording: Recording) -> None:
        encoded = io.BytesIO()
        soundfile.write(encoded, np.concatenate(recording.chunks), recording.rate, format="FLAC", subtype="PCM_24")
        try:
            with atomic_path(self.folder.directory / recording.name) as temporary:
                temporary.write_bytes(encoded.getvalue())
        except OSError as error:
            reason = "the disk is full" if error.errno == errno.ENOSPC else error_text(error)
            self.last_error = f"{recording.name} was not written: {reason}"
            log.error("%s", self.last_error)
            return
        log.info("recorded %s (%.1f s at %d Hz)", recording.name, recording.samples / recording.rate, recording.rate)
