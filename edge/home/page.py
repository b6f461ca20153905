"""The monitor's page at ``/``: the state, then a row per appliance of the bundle (running or off,
the last hour's probability with its on / off levels, the day's timeline), and the clips to
relabel. Charts are SVG drawn here on the server (no chart library, no CDN, nothing to build: it
works on a Pi with no internet and stays light on a phone); the page's own small script polls
``/api/page`` and swaps them in.

The page is polled every few seconds, so what it gets stays small whatever the hop or the
history: the hour's chart keeps the lowest and highest point of each column (spikes stay visible),
the day's timeline is drawn per pixel column, and the clip list is sent only when it changed; each
appliance adds the same bounded share.

Relabelling is the only write: a clip is copied, byte for byte, into the relabel directory under
the sample name of what was really running, every appliance of the bundle named on or off
(``ac-on-fridge-off-day-clip-<clip's name>.flac``), ready to be copied to the workstation and
trained on. A later relabel of the same clip replaces the earlier; two clips never share a
relabelled name.
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
from collections.abc import Mapping
from pathlib import Path
from typing import Callable

from edge.core.decision import DecisionConfig, Levels
from edge.core.files import atomic_path
from edge.core.labels import DAYPARTS, Appliances, parse_sample_name, sample_file_name
from edge.engine.hop import HopLine
from edge.home.history import DAY, gaps, intervals
from edge.home.mqtt import title  # an appliance's name as Home Assistant and the page write it: 'ac' -> 'AC'

HOUR_SEC = 3600.0
CLIP_NAME = re.compile(r"[0-9A-Za-z][\w.-]*\.flac")  # matched whole: no paths, no trailing newline
MAX_CLIP_NAME_BYTES = 200
MAX_WRITTEN_NAME_BYTES = 255 - 14  # a file name's limit, less what atomic_path's temporary name adds
CLIP_STAMP = re.compile(r"^(\d{8}-\d{6})")
CHART_COLUMNS = 300  # the hour's chart keeps at most two points per line in each 12-s column
DAY_HOURS = range(7, 21)  # a clip recorded from 07:00 to 20:59 is offered as "day"
COLORS = ("#1f77b4", "#2ca02c", "#ff7f0e", "#9467bd", "#d62728", "#8c564b", "#e377c2", "#17becf", "#bcbd22")
PAGE_FILE = Path(__file__).with_name("static") / "page.html"
FAVICON_FILE = PAGE_FILE.with_name("favicon.svg")
CONTAINER_MARKS = (Path("/.dockerenv"), Path("/run/.containerenv"))  # docker's and podman's
SHARE = Path("/share")  # Home Assistant's share folder, as an add-on sees it


class Refused(ValueError):
    """A request that cannot be honoured; ``status`` is the HTTP code to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclasses.dataclass(frozen=True)
class PageSettings:
    clips_dir: Path | None = None
    relabel_dir: Path | None = None
    name: str = "humwatch"  # the monitor's name (--name): it heads the page and names the browser's tab
    several: bool = False  # one of several monitors in the process: the page links to their index


def page_title(name: str) -> str:
    """The browser tab's title: 'Kitchen · humwatch' ('humwatch' for a monitor left with that name)."""
    return name if name == "humwatch" else f"{name} · humwatch"


def in_container() -> bool:
    """Whether this process runs in a container, where its folders are not the host's."""
    return any(mark.exists() for mark in CONTAINER_MARKS)


def relabel_hint(folder: Path, pull: str | None) -> str:
    """Where the page's relabelled clips and recordings wait, as the user can reach them, and how the
    workstation fetches them: `pull`, the command with this page's address (None behind Home
    Assistant's ingress, whose address a workstation cannot pull from)."""
    after = "humwatch retrain, judge and push bring the better model back here."
    if pull is None:
        where = (f"Home Assistant's share folder, under {folder.relative_to(SHARE)} (the share of the Samba or SSH "
                 "add-on)" if folder.is_relative_to(SHARE) else f"{folder}, inside the add-on")
        return f"Relabelled clips and recordings wait in {where}: copy them into the workstation's samples folder; {after}"
    where = f"{folder} inside the container (on its data volume)" if in_container() else f"{folder} on this machine"
    return f"Relabelled clips and recordings wait in {where}. On the workstation, {pull} fetches them; {after}"


def color(appliances: Appliances, name: str) -> str:
    """An appliance's colour on the page, by its place among the bundle's (the seed: AC blue, fridge green)."""
    return COLORS[appliances.names.index(name) % len(COLORS)]


class Page:
    """A live-line sink that keeps the last hour of probabilities, and builds the page's data for the
    appliances of `decision()` (the detector's settings in force).

    With a household, the timeline is read through its history's :meth:`History.reading`."""

    def __init__(self, settings: PageSettings, decision: Callable[[], DecisionConfig], household=None,
                 clock=time.time, recorder=None, deployed: Callable[[], dict] | None = None) -> None:
        self.settings, self.decision, self.household, self.clock = settings, decision, household, clock
        self.recorder = recorder  # edge.home.samples.Recorder: the relabel folder's recordings (with --relabel-dir)
        self.deployed = deployed  # the bundles running and kept for rollback (with --deploy-dir)
        self._points: collections.deque[tuple[float, Mapping[str, float]]] = collections.deque()
        self._lock = threading.Lock()
        self._relabelling = threading.Lock()  # one relabel at a time: each removes the clip's earlier copy
        self._since: float | None = None
        self._status: str | None = None

    def __call__(self, line: HopLine) -> None:
        now = self.clock()
        with self._lock:
            self._points.append((now, line.probabilities))  # {} for a hop that decided nothing
            while self._points[0][0] < now - HOUR_SEC:
                self._points.popleft()
            if line.debounced_status != self._status:
                self._status, self._since = line.debounced_status, now

    def data(self, line: HopLine | None, clips_seen: str | None = None, pull: str | None = None) -> dict:
        """Everything /api/page answers: the monitor's name, state, a row per appliance (charts as SVG),
        statistics, alarms, and the clips with their version, the clips left out when `clips_seen` is
        that version already; `pull`: the command that fetches its samples (see :func:`relabel_hint`)."""
        now, decision = self.clock(), self.decision()
        with self._lock:
            points, since = [p for p in self._points if p[0] >= now - HOUR_SEC], self._since
        clips = clip_listing(self.settings.clips_dir) if self.settings.clips_dir else None
        clips_version = hashlib.sha256(json.dumps(clips).encode()).hexdigest()[:16]
        day = self._day(now, decision.appliances)
        return {
            "name": self.settings.name,
            "title": page_title(self.settings.name),
            "several": self.settings.several,
            "state": line.debounced_status if line else None,
            "reason": line.reason if line else None,  # why the hops decide nothing (no signal, no audio)
            "held_sec": now - since if since and line else None,
            "precision": line.precision if line else None,
            "appliances": [self._row(name, line, points, day, decision, now) for name in decision.appliances.names],
            "household": self.household.snapshot().to_json() if self.household is not None else None,
            "clips_version": clips_version,
            **({} if clips_seen == clips_version else {"clips": clips}),
            "relabel": self.settings.relabel_dir is not None,
            "relabel_hint": relabel_hint(self.settings.relabel_dir, pull) if self.settings.relabel_dir else None,
            **self._teaching(),
        }

    # --- the home's loop (issue 31): recordings, what is not yet pulled, the bundles deployed ---
    def _teaching(self) -> dict:
        """The recording under way (or why the last one failed), the samples waiting to be pulled,
        and the running bundle with the one a rollback restores."""
        data = {"deployed": self.deployed() if self.deployed is not None else None}
        if self.recorder is not None:
            samples = self.recorder.folder.listing()
            data.update(recording=self.recorder.status(), record_error=self.recorder.last_error, samples=samples,
                        not_pulled=sum(not row["pulled"] for row in samples),
                        record_max_sec=self.recorder.max_sec)
        return data

    @staticmethod
    def _row(name: str, line: HopLine | None, points: list, day: list | None, decision: DecisionConfig,
             now: float) -> dict:
        """One appliance's row: its name and colour, running now, its probability, hour and day."""
        hue = color(decision.appliances, name)
        return {"name": name, "title": title(name), "color": hue,
                "running": line.running.get(name) if line else None,
                "p": line.probabilities.get(name) if line else None,
                "chart": probability_chart(points, name, decision.levels[name], hue, now),
                "timeline": timeline_svg(*day, name, hue, now) if day is not None else None}

    def _day(self, now: float, appliances: Appliances) -> tuple[list, list] | None:
        """The last 24 hours' intervals of these appliances and the gaps, or None without a history."""
        if self.household is None:
            return None
        with self.household.history.reading() as connection:
            return intervals(connection, now - DAY, now, appliances.names), gaps(connection, now - DAY, now)

    def relabel(self, clip: str, labels: Mapping[str, bool], daypart: str) -> Path:
        """Copy a clip into the relabel directory under the name of what was really running."""
        if self.settings.relabel_dir is None or self.settings.clips_dir is None:
            raise Refused(404, "relabelling is off: start the monitor with --clips DIR and --relabel-dir DIR")
        source = clip_path(self.settings.clips_dir, clip)
        if daypart not in DAYPARTS:
            raise Refused(400, f"daypart {daypart[:40]!r}: expected one of {', '.join(DAYPARTS)}")
        tag = f"clip-{source.stem}"  # the clip's own (unique) name: two clips never share a relabelled name
        name = sample_file_name(labels, daypart, tag=tag, suffix=".flac")
        if len(name.encode()) > MAX_WRITTEN_NAME_BYTES:
            raise Refused(400, f"clip {clip[:40]!r}: relabelled it would be named in {len(name.encode())} bytes, "
                               f"over the {MAX_WRITTEN_NAME_BYTES} a file name may take here; rename the clip shorter")
        target = self.settings.relabel_dir / name
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


def relabel_shape(appliances: Appliances) -> str:
    """The relabel body these appliances take, as the refusals write it."""
    flags = "".join(f'"{name}": true|false, ' for name in appliances.names)
    return f'a JSON object {{"clip": NAME, {flags}"daypart": "day"|"night"}}'


def parse_relabel(body: bytes, appliances: Appliances) -> dict:
    """A relabel request's body, strictly: exactly the clip, a boolean per appliance and the daypart,
    each of its JSON type -> {"clip", "labels": {name: running}, "daypart"} (the :meth:`Page.relabel`
    arguments)."""
    request = parse_body(body, {"clip": str, **dict.fromkeys(appliances.names, bool), "daypart": str},
                         relabel_shape(appliances))
    return {"clip": request["clip"], "labels": {name: request[name] for name in appliances.names},
            "daypart": request["daypart"]}


def parse_record(body: bytes, appliances: Appliances) -> dict:
    """A record request's body, as strictly: a boolean per appliance, the daypart and the seconds ->
    {"labels", "daypart", "seconds"} (edge.home.samples.Recorder.start's arguments)."""
    flags = "".join(f'"{name}": true|false, ' for name in appliances.names)
    request = parse_body(body, {**dict.fromkeys(appliances.names, bool), "daypart": str, "seconds": float},
                         f'a JSON object {{{flags}"daypart": "day"|"night", "seconds": NUMBER}}')
    return {"labels": {name: request[name] for name in appliances.names}, "daypart": request["daypart"],
            "seconds": float(request["seconds"])}


def parse_body(body: bytes, fields: dict[str, type], shape: str) -> dict:
    """A write's JSON body, strictly: exactly `fields`, each of its JSON type (str, bool, or float: a
    number); Refused (400) naming what is wrong and the `shape` expected."""
    try:
        request = json.loads(body)
    except RecursionError:
        raise Refused(400, f"the body nests too deeply; expected {shape}") from None
    except ValueError as error:
        raise Refused(400, f"the body is not JSON ({error}); expected {shape}") from None
    if not isinstance(request, dict):
        raise Refused(400, f"the body is a JSON {_json_kind(request)}; expected {shape}")
    problems = []
    if unknown := sorted(set(request) - set(fields)):
        problems.append(f"unknown field(s) {', '.join(repr(name[:40]) for name in unknown)}")
    if missing := [name for name in fields if name not in request]:
        problems.append(f"missing {', '.join(map(repr, missing))}")
    if problems:
        raise Refused(400, f"{'; '.join(problems)}; expected {shape}")
    for name, kind in fields.items():
        value = request[name]
        fits = (type(value) in (int, float) and math.isfinite(value)) if kind is float else type(value) is kind
        if not fits:
            got = f"the string {value[:40]!r}" if isinstance(value, str) else f"a JSON {_json_kind(value)}"
            expected = {bool: "boolean (true or false)", str: "string", float: "number"}[kind]
            raise Refused(400, f"field {name!r}: got {got}, expected a JSON {expected}")
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


def probability_chart(points: list[tuple[float, Mapping[str, float]]], name: str, levels: Levels, hue: str,
                      now: float, width: int = 600, height: int = 160) -> str:
    """The last hour of one appliance's probability as a line (see :func:`envelope`), broken where
    the hops decided nothing (those columns shaded) or a bundle without it decided, with its
    detector's on / off levels dashed."""
    def x(wall: float) -> float:
        return width * (1 - (now - wall) / HOUR_SEC)

    def y(p: float) -> float:
        return height * (1 - p)

    body = [f'<rect width="{width}" height="{height}" fill="#fafafa" stroke="#ccc"/>']
    unheard = sorted({int(x(wall) * CHART_COLUMNS / width) for wall, probs in points if not probs})
    if unheard:
        step = width / CHART_COLUMNS
        shape = "".join(f"M{column * step:.1f} 0h{step:.1f}v{height}h-{step:.1f}z" for column in unheard)
        body.append(f'<path d="{shape}" fill="#999" fill-opacity="0.35" class="unheard"><title>nothing heard '
                    '(no signal or no audio): no decision</title></path>')
    for level in (levels.on, levels.off):
        body.append(f'<line x1="0" x2="{width}" y1="{y(level):.1f}" y2="{y(level):.1f}" stroke="{hue}" '
                    f'stroke-dasharray="4 4" stroke-opacity="0.6" class="threshold-{name}"/>')
    for heard, stretch in itertools.groupby(points, key=lambda point: name in point[1]):  # (a bundle swapped in
        if heard:                                                                      # may not have had it)
            coordinates = " ".join(f"{x(wall):.1f},{y(p):.1f}" for wall, p in envelope(list(stretch), name, now))
            body.append(f'<polyline points="{coordinates}" fill="none" stroke="{hue}" stroke-width="2" class="p-{name}"/>')
    return _svg(width, height, body, f"p({title(name)}) over the last hour")


def envelope(points: list[tuple[float, Mapping[str, float]]], name: str, now: float,
             columns: int = CHART_COLUMNS) -> list[tuple[float, float]]:
    """[(wall, p)] of one appliance: the lowest and the highest point of each of `columns` equal
    slices of the hour before `now`, in time order, so the chart stays small at any hop and keeps
    its spikes."""
    def column(point: tuple[float, Mapping[str, float]]) -> int:
        return int((point[0] - now + HOUR_SEC) * columns / HOUR_SEC)

    line = []
    for _, group in itertools.groupby(((wall, probs[name]) for wall, probs in points), key=column):
        group = list(group)
        line += sorted({min(group, key=lambda p: p[1]), max(group, key=lambda p: p[1])})
    return line


GAP_TITLES = {"no-signal": "no signal (silent input)", "no-audio": "no audio (input lost)"}


def timeline_svg(found: list, unheard: list[tuple[float, float, str]], name: str, hue: str, now: float,
                 width: int = 720, height: int = 22) -> str:
    """One appliance's 24 hours by pixel column: dark where it ran (at all) in that column, else grey
    where the hops decided nothing (`unheard`: the history's gaps, by reason), light where it was
    only heard off, blank where the monitor was not running. Each kind is one SVG path, so the size is
    bounded by the width, however many intervals the day holds."""
    column_sec = DAY / width

    def columns(start: float, end: float) -> range:
        first = max(int((start - now + DAY) / column_sec), 0)
        return range(first, min(max(math.ceil((end - now + DAY) / column_sec) - 1, first), width - 1) + 1)

    body = [f'<rect x="0" y="0" width="{width}" height="{height}" fill="none" stroke="#ddd"/>']
    running: list[bool | str | None] = [None] * width  # None: not observed; a gap's reason where nothing was decided
    for interval in (i for i in found if i.appliance == name):
        for column in columns(interval.start, interval.end):
            running[column] = running[column] or interval.running
    for start, end, reason in unheard:  # a gap outranks "off" in its columns: off was not heard all along
        for column in columns(start, end):
            running[column] = True if running[column] is True else reason
    shapes: dict[bool | str, list[str]] = {}
    for state, group in itertools.groupby(range(width), key=running.__getitem__):
        if state is not None:
            group = list(group)
            shapes.setdefault(state, []).append(f"M{group[0]} 0h{len(group)}v{height}h-{len(group)}z")
    for state, shape in shapes.items():
        if isinstance(state, str):
            body.append(f'<path d="{"".join(shape)}" fill="#999" fill-opacity="0.5" class="gap-{html.escape(state)}">'
                        f'<title>{html.escape(GAP_TITLES.get(state, state))}</title></path>')
        else:
            body.append(f'<path d="{"".join(shape)}" fill="{hue}" fill-opacity="{0.9 if state else 0.15}" '
                        f'class="{name}-{"on" if state else "off"}"/>')
    return _svg(width, height, body, f"{title(name)}: the last 24 hours")


def page_html() -> bytes:
    return PAGE_FILE.read_bytes()


def favicon() -> bytes:
    return FAVICON_FILE.read_bytes()
