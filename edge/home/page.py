"""The monitor's page at ``/``: the state, the last hour's probabilities, the day's timeline, and
the clips to relabel. Charts are SVG drawn here on the server (no chart library, no CDN, nothing
to build: it works on a Pi with no internet and stays light on a phone); the page's own small
script polls ``/api/page`` and swaps them in.

Relabelling is the only write: a clip is copied, byte for byte, into the relabel directory under
the sample name of what was really running (``ac-on-fridge-off-day-clip-<time>.flac``), ready to
be copied to the workstation and trained on. A later relabel of the same clip replaces the earlier.
"""

from __future__ import annotations

import collections
import dataclasses
import html
import json
import re
import shutil
import threading
import time
from pathlib import Path

from edge.core.defaults import LABELS, DecisionConfig
from edge.core.files import atomic_path
from edge.core.labels import DAYPARTS, sample_file_name
from edge.home.history import DAY, connect, intervals
from edge.monitor.hop import HopLine

HOUR_SEC = 3600.0
CLIP_NAME = re.compile(r"^[0-9A-Za-z][\w.-]*\.flac$")
CLIP_STAMP = re.compile(r"^(\d{8}-\d{6})")
DAY_HOURS = range(7, 21)  # a clip recorded from 07:00 to 20:59 is offered as "day"
COLORS = {"ac": "#1f77b4", "fridge": "#2ca02c"}
PAGE_FILE = Path(__file__).with_name("static") / "page.html"


class RelabelError(ValueError):
    """A relabel request that cannot be honoured; ``status`` is the HTTP code to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclasses.dataclass(frozen=True)
class PageSettings:
    clips_dir: Path | None = None
    relabel_dir: Path | None = None
    history_path: Path | None = None


class Page:
    """A live-line sink that keeps the last hour of probabilities, and builds the page's data."""

    def __init__(self, settings: PageSettings, decision: DecisionConfig, household=None, clock=time.time) -> None:
        self.settings, self.decision, self.household, self.clock = settings, decision, household, clock
        self._points: collections.deque[tuple[float, float, float]] = collections.deque()
        self._lock = threading.Lock()
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

    def data(self, line: HopLine | None) -> dict:
        """Everything /api/page answers: state, charts (SVG), statistics, alarms, clips."""
        now = self.clock()
        with self._lock:
            points, since = list(self._points), self._since
        return {
            "state": line.debounced_status if line else None,
            "held_sec": now - since if since and line else None,
            "p_ac": line.p_ac if line else None,
            "p_fridge": line.p_fridge if line else None,
            "precision": line.precision if line else None,
            "chart": probability_chart(points, self.decision, now),
            "timeline": self._timeline(now),
            "household": self.household.snapshot() if self.household is not None else None,
            "clips": clip_listing(self.settings.clips_dir) if self.settings.clips_dir else None,
            "relabel": self.settings.relabel_dir is not None,
            "relabel_dir": str(self.settings.relabel_dir) if self.settings.relabel_dir else None,
        }

    def _timeline(self, now: float) -> str | None:
        if self.settings.history_path is None or not self.settings.history_path.exists():
            return None
        connection = connect(self.settings.history_path, read_only=True)
        try:
            return timeline_svg(intervals(connection, now - DAY, now), now)
        finally:
            connection.close()

    def relabel(self, clip: str, ac: bool, fridge: bool, daypart: str) -> Path:
        """Copy a clip into the relabel directory under the name of what was really running."""
        if self.settings.relabel_dir is None or self.settings.clips_dir is None:
            raise RelabelError(404, "relabelling is off: start the monitor with --clips DIR and --relabel-dir DIR")
        source = clip_path(self.settings.clips_dir, clip)
        if daypart not in DAYPARTS:
            raise RelabelError(400, f"daypart {daypart!r}: expected one of {', '.join(DAYPARTS)}")
        stamp = CLIP_STAMP.match(clip)
        tag = f"clip-{stamp.group(1) if stamp else Path(clip).stem}"
        target = self.settings.relabel_dir / sample_file_name(ac, fridge, daypart, tag=tag, suffix=".flac")
        with atomic_path(target) as temporary:
            shutil.copyfile(source, temporary)
        for earlier in self.settings.relabel_dir.glob(f"*-{tag}.flac"):
            if earlier != target:
                earlier.unlink()
        return target


def clip_path(clips_dir: Path, name: str) -> Path:
    """The clip `name` inside clips_dir; RelabelError for anything else (paths, other files)."""
    if not isinstance(name, str) or not CLIP_NAME.match(name) or ".." in name:
        raise RelabelError(400, f"clip {name!r}: not a clip name (letters, digits, '-', '_', '.', ending in .flac)")
    path = clips_dir / name
    if path.resolve().parent != clips_dir.resolve() or not path.is_file():
        raise RelabelError(404, f"clip {name!r}: no such clip")
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
    """The last hour of p_ac / p_fridge as lines, with each detector's on / off levels dashed."""
    def x(wall: float) -> float:
        return width * (1 - (now - wall) / HOUR_SEC)

    def y(p: float) -> float:
        return height * (1 - p)

    body = [f'<rect width="{width}" height="{height}" fill="#fafafa" stroke="#ccc"/>']
    for name, on, off in (("ac", decision.ac_on, decision.ac_off), ("fridge", decision.fridge_on, decision.fridge_off)):
        for level in (on, off):
            body.append(f'<line x1="0" x2="{width}" y1="{y(level):.1f}" y2="{y(level):.1f}" stroke="{COLORS[name]}" '
                        f'stroke-dasharray="4 4" stroke-opacity="0.6" class="threshold-{name}"/>')
    for index, name in enumerate(LABELS, start=1):
        coordinates = " ".join(f"{x(p[0]):.1f},{y(p[index]):.1f}" for p in points)
        body.append(f'<polyline points="{coordinates}" fill="none" stroke="{COLORS[name]}" stroke-width="2" class="p-{name}"/>')
    return _svg(width, height, body, "probabilities over the last hour")


def timeline_svg(found: list, now: float, width: int = 720, row: int = 22) -> str:
    """24 hours, one row per appliance: running dark, off light, not observed blank."""
    def x(wall: float) -> float:
        return width * (1 - (now - wall) / DAY)

    body = []
    for index, name in enumerate(LABELS):
        top = index * (row + 6)
        body.append(f'<rect x="0" y="{top}" width="{width}" height="{row}" fill="none" stroke="#ddd"/>')
        for interval in (i for i in found if i.appliance == name):
            start, end = x(interval.start), x(interval.end)
            body.append(f'<rect x="{start:.1f}" y="{top}" width="{max(end - start, 0.5):.1f}" height="{row}" '
                        f'fill="{COLORS[name]}" fill-opacity="{0.9 if interval.running else 0.15}" '
                        f'class="{name}-{"on" if interval.running else "off"}"/>')
    return _svg(width, len(LABELS) * (row + 6), body, "the last 24 hours")


def page_html() -> bytes:
    return PAGE_FILE.read_bytes()
