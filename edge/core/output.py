"""Output for machines (JSON lines, flushed) and for people (aligned tables); the live monitor's
line printer, whose `--output` file never holds half a line."""

from __future__ import annotations

import collections
import contextlib
import errno
import json
import os
import sys
from pathlib import Path
from typing import IO, Iterable, Sequence

MAX_WAITING_LINES = 10_000  # lines kept in memory while --output cannot be written (about 3 MB)


def _rounded(value):
    return round(value, 4) if isinstance(value, float) else value


def encode_line(record: dict) -> str:
    """One JSON object as one line, newline included."""
    return json.dumps({k: _rounded(v) for k, v in record.items()}) + "\n"


def json_line(record: dict, stream: IO[str] | None = None) -> None:
    """Write one JSON object as one line and flush it."""
    stream = stream or sys.stdout
    stream.write(encode_line(record))
    stream.flush()


def error_text(error: BaseException) -> str:
    """An error in words for a log line or /healthz, with "disk full" where the disk filled."""
    if isinstance(error, OSError) and error.strerror and not error.filename:
        text = error.strerror  # OSError(errno, message): the message without "[Errno N]"
    else:
        text = str(error) or type(error).__name__
    if getattr(error, "errno", None) == errno.ENOSPC and "disk full" not in text:
        text += " (disk full)"
    return text


class JsonLinesFile:
    """Appends JSON lines to a file, each one whole or not at all.

    Every line goes out in os.write calls on an O_APPEND descriptor; when one fails (a full disk),
    the file is truncated back to its last complete line and the line waits in memory (up to
    MAX_WAITING_LINES, the oldest going first) to be written, in order, once there is room.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        try:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except OSError as error:
            raise OSError(error.errno, f"--output {self.path}: cannot open it ({error_text(error)})") from None
        self.waiting: collections.deque[bytes] = collections.deque()
        self.lost = 0  # lines that waited too long and were given up

    def write(self, record: dict) -> None:
        """Queue one line and write everything waiting; OSError (naming the file) while that fails."""
        if len(self.waiting) >= MAX_WAITING_LINES:
            self.waiting.popleft()
            self.lost += 1
        self.waiting.append(encode_line(record).encode())
        self.flush()

    def flush(self) -> None:
        """Write the waiting lines, oldest first."""
        while self.waiting:
            self._append(self.waiting[0])
            self.waiting.popleft()

    def _append(self, data: bytes) -> None:
        end = os.lseek(self._fd, 0, os.SEEK_END)
        try:
            written = 0
            while written < len(data):  # a regular file writes short only when the disk fills: the next call says why
                written += os.write(self._fd, data[written:])
        except OSError as error:
            os.ftruncate(self._fd, end)  # back to the last complete line
            lost = f", {self.lost} given up" if self.lost else ""
            raise OSError(error.errno, f"--output {self.path}: {error_text(error)}; "
                                       f"{len(self.waiting)} lines wait to be written{lost}") from None

    def close(self) -> None:
        os.close(self._fd)


class LinePrinter:
    """The live monitor's printer: hop lines (all, or only changes) and event lines to stdout, and
    appended to an --output file once `append_to` opened it."""

    def __init__(self, only_changes: bool) -> None:
        self.only_changes = only_changes
        self.file: JsonLinesFile | None = None

    @property
    def name(self) -> str:
        return f"--output {self.file.path}" if self.file else "stdout"

    def append_to(self, path: Path) -> None:
        self.file = JsonLinesFile(path)

    def __call__(self, line) -> None:
        """A hop line; raises OSError while --output cannot be written (lines wait meanwhile)."""
        if not self.only_changes or line.changed:
            self._print(line.to_json())
        elif self.file:
            self.file.flush()  # lines that wait are retried every hop, printed or not

    def event(self, record: dict) -> None:
        """An event line (an alarm raised or cleared): always printed, whatever --only-changes says."""
        with contextlib.suppress(OSError):  # it waits in the file's queue; the next hop retries and reports
            self._print(record)

    def _print(self, record: dict) -> None:
        json_line(record)
        if self.file:
            self.file.write(record)

    def close(self) -> None:
        if self.file:
            self.file.close()


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def format_table(rows: Iterable[dict], columns: Sequence[str]) -> str:
    """A plain aligned text table of the given columns."""
    cells = [[_cell(row.get(column)) for column in columns] for row in rows]
    widths = [max([len(column), *(len(r[i]) for r in cells)]) for i, column in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in cells]
    return "\n".join(lines)
