"""The monitor's page at ``/``: the state, the last hour's probabilities, the day's timeline, and
the clips to relabel. Charts are SVG drawn here on the server (no chart library, no CDN, nothing
to build: it works on a Pi with no internet and stays light on a phone); the page's own small
script polls ``/api/page`` and swaps them in.

The page is polled every few seconds, so what it gets stays small whatever the hop or the
history: the hour's chart keeps the lowest and highest point of each column (spikes stay visible),
the day's timeline is drawn per pixel column, and the clip list is sent only when it changed.

Relabelling is the only write: a clip is copied, byte for byte, into the relabel directory under
the sample name of what was really running (``ac-on-fridge-off-day-clip-<clip's name>.flac``),
ready to be copied to the workstation and trained on. A later relabel of the same clip replaces
the earlier; two clips never share a relabelled name.
"""

from __future__ import annotations

import collections
import dataclasses
import errno
import hashlib
import html
import itertools
import json
import math
import re
import shutil
import threading
import time
from pathlib import Path
from typing import Callable

from edge.core.defaults import LABELS, DecisionConfig
from edge.core.files import atomic_path
from edge.core.labels import DAYPARTS, parse_sample_name, sample_file_name
from edge.home.history import DAY, intervals
from edge.monitor.hop import HopLine

HOUR_SEC = 3600.0
CLIP_NAME = re.compile(r"[0-9A-Za-z][\w.-]*\.flac")  # matched whole: no paths, no trailing newline
MAX_CLIP_NAME_BYTES = 200  # the relabelled name adds 34 bytes and must stay under the file system's 255
CLIP_STAMP = re.compile(r"^(\d{8}-\d{6})")
CHART_COLUMNS = 300  # the hour's chart keeps at most two points per line in each 12-s column
RELABEL_FIELDS = {"clip": str, "ac": bool, "fridge": bool, "daypart": str}
RELABEL_SHAPE = 'a JSON object {"clip": NAME, "ac": true|false, "fridge": true|false, "daypart": "day"|"night"}'
DAY_HOURS = range(7, 21)  # a clip recorded from 07:00 to 20:59 is offered as "day"
COLORS = {"ac": "#1f77b4", "fridge": "#2ca02c"}
PAGE_FILE = Path(__file__).with_name("static") / "page.html"


class Refused(ValueError):
    """A request that cannot be honoured; ``status`` is the HTTP code to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclasses.dataclass(frozen=True)
class PageSettings:
    clips_dir: Path | None = None
    relabel_dir: Path | None = None
    name: str | None = None  # one of several monitors: its name heads the page, which links to their index


class Page:
    """A live-line sink that keeps the last hour of probabilities, and builds the page's data.

    With a household, the timeline is read through its history's :meth:`History.reading`."""

    def __init__(self, settings: PageSettings, decision: Callable[[], DecisionConfig], household=None,
                 clock=time.time) -> None:
        self.settings, self.decision, self.household, self.clock = settings, decision, household, clock
        self._points: collections.deque[tuple[float, float, float]] = collections.deque()
        self._lock = threading.Lock()
        self._relabelling = threading.Lock()  # one relabel at a time: each removes the clip's earlier copy
        self._since: float | None = None
        self._status: str | None = None

    def __call__(self, line: HopLine) -> None:
        now = self.clock()
        with self._lock:
            self._points.append((now, line.p_ac, line.p_fridge))
            while self._points[0][0] < now - HOUR_SEC:
                self._points.popleft()
            if line.debounced_status != self._status:
                self._status, self._since = line.debounced_status, now

    def data(self, line: HopLine | None, clips_seen: str | None = None) -> dict:
        """Everything /api/page answers: state, charts (SVG), statistics, alarms, and the clips
        with their version, the clips left out when `clips_seen` is that version already."""
        now = self.clock()
        with self._lock:
            points, since = [p for p in self._points if p[0] >= now - HOUR_SEC], self._since
        clips = clip_listing(self.settings.clips_dir) if self.settings.clips_dir else None
        clips_version = hashlib.sha256(json.dumps(clips).encode()).hexdigest()[:16]
        return {
            "name": self.settings.name,
            "state": line.debounced_status if line else None,
            "held_sec": now - since if since and line else None,
            "p_ac": line.p_ac if line else None,
            "p_fridge": line.p_fridge if line else None,
            "precision": line.precision if line else None,
            "chart": probability_chart(points, self.decision(), now),
            "timeline": self._timeline(now),
            "household": self.household.snapshot() if self.household is not None else None,
            "clips_version": clips_version,
            **({} if clips_seen == clips_version else {"clips": clips}),
            "relabel": self.settings.relabel_dir is not None,
            "relabel_dir": str(self.settings.relabel_dir) if self.settings.relabel_dir else None,
        }

    def _timeline(self, now: float) -> str | None:
        if self.household is None:
            return None
        with self.household.history.reading() as connection:
            found = intervals(connection, now - DAY, now)
        return timeline_svg(found, now)

    def relabel(self, clip: str, ac: bool, fridge: bool, daypart: str) -> Path:
        """Copy a clip into the relabel directory under the name of what was really running."""
        if self.settings.relabel_dir is None or self.settings.clips_dir is None:
            raise Refused(404, "relabelling is off: start the monitor with --clips DIR and --relabel-dir DIR")
        source = clip_path(self.settings.clips_dir, clip)
        if daypart not in DAYPARTS:
            raise Refused(400, f"daypart {daypart[:40]!r}: expected one of {', '.join(DAYPARTS)}")
        tag = f"clip-{source.stem}"  # the clip's own (unique) name: two clips never share a relabelled name
        target = self.settings.relabel_dir / sample_file_name(ac, fridge, daypart, tag=tag, suffix=".flac")
        with self._relabelling:
            try:
                with atomic_path(target) as temporary:
                    shutil.copyfile(source, temporary)
            except OSError as error:
                raise Refused(507 if error.errno == errno.ENOSPC else 500,
                              f"could not write {target}: {error.strerror or error}") from error
            for earlier in self.settings.relabel_dir.glob("*.flac"):
                named = parse_sample_name(earlier)
                if earlier != target and named is not None and named.tag == tag:
                    earlier.unlink()
        return target


def parse_relabel(body: bytes) -> dict:
    """A relabel request's body, strictly: exactly the four fields, each of its JSON type."""
    try:
        request = json.loads(body)
    except RecursionError:
        raise Refused(400, f"the body nests too deeply; expected {RELABEL_SHAPE}") from None
    except ValueError as error:
        raise Refused(400, f"the body is not JSON ({error}); expected {RELABEL_SHAPE}") from None
    if not isinstance(request, dict):
        raise Refused(400, f"the body is a JSON {_json_kind(request)}; expected {RELABEL_SHAPE}")
    problems = []
    if unknown := sorted(set(request) - set(RELABEL_FIELDS)):
        problems.append(f"unknown field(s) {', '.join(repr(name[:40]) for name in unknown)}")
    if missing := [name for name in RELABEL_FIELDS if name not in request]:
        problems.append(f"missing {', '.join(map(repr, missing))}")
    if problems:
        raise Refused(400, f"{'; '.join(problems)}; expected {RELABEL_SHAPE}")
    for name, kind in RELABEL_FIELDS.items():
        if type(request[name]) is not kind:
            value = request[name]
            got = f"the string {value[:40]!r}" if isinstance(value, str) else f"a JSON {_json_kind(value)}"
            raise Refused(400, f"field {name!r}: got {got}, expected a JSON "
                               f"{'boolean (true or false)' if kind is bool else 'string'}")
    return request


def _json_kind(value) -> str:
    kinds = ((bool, "boolean"), (str, "string"), (int, "number"), (float, "number"), (list, "array"), (dict, "object"))
    return next((kind for python, kind in kinds if isinstance(value, python)), "null")


def clip_path(clips_dir: Path, name: str) -> Path:
    """The clip `name` inside clips_dir; Refused for anything else (paths, other files)."""
    if not isinstance(name, str) or not CLIP_NAME.fullmatch(name) or ".." in name:
        raise Refused(400, f"clip {name[:80] if isinstance(name, str) else name!r}: not a clip name "
                           "(letters, digits, '-', '_', '.', ending in .flac)")
    if len(name.encode()) > MAX_CLIP_NAME_BYTES:
        raise Refused(400, f"clip {name[:40]!r}...: a name of {len(name.encode())} bytes; "
                           f"clip names are at most {MAX_CLIP_NAME_BYTES}")
    path = clips_dir / name
    if path.resolve().parent != clips_dir.resolve() or not path.is_file():
        raise Refused(404, f"clip {name!r}: no such clip")
    return path


def clip_listing(clips_dir: Path) -> list[dict]:
    """The clips, newest first, with their sidecar's states and time, and the daypart to offer."""
    listing = []
    for clip in sorted(clips_dir.glob("*.flac"), reverse=True):
        try:
            sidecar = json.loads(clip.with_suffix(".json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            sidecar = {}
        stamp = CLIP_STAMP.match(clip.name)
        hour = int(stamp.group(1)[9:11]) if stamp else 12
        listing.append({"name": clip.name, "time": sidecar.get("time"), "old_state": sidecar.get("old_state"),
                        "new_state": sidecar.get("new_state"), "daypart": "day" if hour in DAY_HOURS else "night"})
    return listing


def _svg(width: int, height: int, body: list[str], label: str) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" role="img" '
            f'aria-label="{html.escape(label)}" preserveAspectRatio="none">' + "".join(body) + "</svg>")


def probability_chart(points: list[tuple[float, float, float]], decision: DecisionConfig, now: float,
                      width: int = 600, height: int = 160) -> str:
    """The last hour of p_ac / p_fridge as lines (see :func:`envelope`), with each detector's on /
    off levels dashed."""
    def x(wall: float) -> float:
        return width * (1 - (now - wall) / HOUR_SEC)

    def y(p: float) -> float:
        return height * (1 - p)

    body = [f'<rect width="{width}" height="{height}" fill="#fafafa" stroke="#ccc"/>']
    for name, on, off in (("ac", decision.ac_on, decision.ac_off), ("fridge", decision.fridge_on, decision.fridge_off)):
        for level in (on, off):
            body.append(f'<line x1="0" x2="{width}" y1="{y(level):.1f}" y2="{y(level):.1f}" stroke="{COLORS[name]}" '
                        f'stroke-dasharray="4 4" stroke-opacity="0.6" class="threshold-{name}"/>')
    for name, line in envelope(points, now).items():
        coordinates = " ".join(f"{x(wall):.1f},{y(p):.1f}" for wall, p in line)
        body.append(f'<polyline points="{coordinates}" fill="none" stroke="{COLORS[name]}" stroke-width="2" class="p-{name}"/>')
    return _svg(width, height, body, "probabilities over the last hour")


def envelope(points: list[tuple[float, float, float]], now: float, columns: int = CHART_COLUMNS) -> dict[str, list]:
    """Per label, [(wall, p)]: the lowest and the highest point of each of `columns` equal slices of
    the hour before `now`, in time order, so the chart stays small at any hop and keeps its spikes."""
    def column(point: tuple[float, float, float]) -> int:
        return int((point[0] - now + HOUR_SEC) * columns / HOUR_SEC)

    lines: dict[str, list] = {name: [] for name in LABELS}
    for _, group in itertools.groupby(points, key=column):
        group = list(group)
        for index, name in enumerate(LABELS, start=1):
            extremes = {min(group, key=lambda p: p[index]), max(group, key=lambda p: p[index])}
            lines[name] += [(point[0], point[index]) for point in sorted(extremes)]
    return lines


def timeline_svg(found: list, now: float, width: int = 720, row: int = 22) -> str:
    """24 hours, one row per appliance, by pixel column: dark where it ran (at all) in that column,
    light where it was only off, blank where the monitor was not running. Each kind is one SVG path,
    so the size is bounded by the width, however many intervals the day holds."""
    column_sec = DAY / width
    body = []
    for index, name in enumerate(LABELS):
        top = index * (row + 6)
        body.append(f'<rect x="0" y="{top}" width="{width}" height="{row}" fill="none" stroke="#ddd"/>')
        running: list[bool | None] = [None] * width  # None: not observed
        for interval in (i for i in found if i.appliance == name):
            first = max(int((interval.start - now + DAY) / column_sec), 0)
            last = min(max(math.ceil((interval.end - now + DAY) / column_sec) - 1, first), width - 1)
            for column in range(first, last + 1):
                running[column] = running[column] or interval.running
        shapes: dict[bool, list[str]] = {True: [], False: []}
        for state, group in itertools.groupby(range(width), key=running.__getitem__):
            if state is not None:
                columns = list(group)
                shapes[state].append(f"M{columns[0]} {top}h{len(columns)}v{row}h-{len(columns)}z")
        for state, shape in shapes.items():
            if shape:
                body.append(f'<path d="{"".join(shape)}" fill="{COLORS[name]}" fill-opacity="{0.9 if state else 0.15}" '
                            f'class="{name}-{"on" if state else "off"}"/>')
    return _svg(width, len(LABELS) * (row + 6), body, "the last 24 hours")


def page_html() -> bytes:
    return PAGE_FILE.read_bytes()
