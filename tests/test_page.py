"""The page (issues 15, 20): what it serves, how much, who may write, and a real headless browser
driving it, and attacking it from another origin."""

import dataclasses
import json
import logging
import os
import re
import shutil
import socket
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import soundfile
from conftest import pinned_decision
from loopback_http import LoopbackServer
from test_home import _get, hop_line
from test_live import FakeSource, Harness

from edge.core.bundle import load_bundle
from edge.core.decision import DecisionConfig
from edge.core.labels import Appliances, read_sample_name
from edge.engine.classifier import Classifier
from edge.home import http_status
from edge.home import page as page_module
from edge.home.alarms import AlarmRule, Alarms
from edge.home.clips import ClipWriter
from edge.home.history import DAY, History, Interval
from edge.home.household import Household
from edge.home.http_status import StatusServer, is_loopback, pull_command
from edge.home.page import CHART_COLUMNS, Page, PageSettings, page_title, relabel_hint, timeline_svg

THREE = Appliances(("ac", "fridge", "dehumidifier"))


class Clock:
    """Wall time that moves two minutes a hop, so 29 hops fill the page's hour as a real one would."""

    def __init__(self, hops: int = 30, step: float = 120.0) -> None:
        self.now, self.step = time.time() - hops * step, step

    def __call__(self) -> float:
        return self.now

    def tick(self, line) -> None:
        self.now += self.step


class WithDehumidifier:
    """The tiny bundle's classifier as if it also heard a dehumidifier (a third output), which runs
    (p 0.95) from window `starts` on: a three-appliance monitor end to end but for the model."""

    def __init__(self, bundle_dir, starts: int = 6) -> None:
        self.inner, self.starts, self.windows = Classifier(load_bundle(bundle_dir), "fp32", threads=1), starts, 0
        self.decision = dataclasses.replace(pinned_decision(bundle_dir), appliances=THREE)

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def predict(self, windows):
        probs = self.inner.predict(windows)
        self.windows += len(windows)
        return np.column_stack([probs, np.full(len(probs), 0.95 if self.windows > self.starts else 0.05)])


class PageHarness:
    """A monitor on a fake microphone with clips, a history and the page, served on loopback (the
    tiny bundle's two appliances, or with `dehumidifier` three)."""

    def __init__(self, bundle_dir, tmp_path, token=None, hosts=(), dehumidifier=False, name="humwatch"):
        self.clips, self.relabel = tmp_path / "clips", tmp_path / "relabel"
        self.source = FakeSource()
        classifier = WithDehumidifier(bundle_dir) if dehumidifier else None
        decision = classifier.decision if dehumidifier else pinned_decision(bundle_dir)
        clock = Clock()
        self.history = History(tmp_path / "history.db", clock=clock)
        household = Household(self.history, Alarms([AlarmRule.parse("ac-run-max=30m")], clock=clock), {}, lambda _: None)
        self.harness = Harness(bundle_dir, self.source, decision=decision, classifier=classifier, max_lag_sec=100.0,
                               history_sec=12.0)
        monitor = self.harness.monitor
        page = Page(PageSettings(self.clips, self.relabel, name), lambda: decision, household, clock=clock)
        self.server = StatusServer(monitor, "127.0.0.1", 0, household, page, token=token, hosts=hosts)
        self.harness.sinks += [household, ClipWriter(self.clips, monitor.recent_audio, 16_000, 12.0), self.server,
                               clock.tick]
        self.base = "http://%s:%d" % self.server.address

    def __enter__(self):
        self.server.start()
        self.harness.__enter__()
        return self

    def __exit__(self, *exc):
        self.harness.__exit__(*exc)
        self.server.close()
        self.history.close()

    def play(self, off_then_ac, changes: int = 1):
        """The recording, to the AC's start; the newest clip's name (one clip a change)."""
        self.source.feed(np.concatenate(off_then_ac))
        lines = self.harness.wait_for(29)
        assert lines[-1].debounced_status == "ac-on" and len(list(self.clips.glob("*.flac"))) == changes
        return max(self.clips.glob("*.flac")).name


def write_clip(clips_dir, name: str, seed: int) -> bytes:
    """A short FLAC clip (and its sidecar) as the ClipWriter leaves them; returns its bytes."""
    clips_dir.mkdir(parents=True, exist_ok=True)
    audio = (np.random.default_rng(seed).standard_normal(1600) * 0.1).astype(np.float32)
    soundfile.write(clips_dir / name, audio, 16_000, format="FLAC", subtype="PCM_24")
    (clips_dir / name).with_suffix(".json").write_text(json.dumps({"old_state": "both-off", "new_state": "ac-on"}))
    return (clips_dir / name).read_bytes()


def _post(url, body: bytes, token=None, headers=None):
    request = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Content-Type": "application/json", **({"X-Humwatch-Token": token} if token else {}),
                                              **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def _relabel(clip, ac=False, fridge=True, daypart="night"):
    return json.dumps({"clip": clip, "ac": ac, "fridge": fridge, "daypart": daypart}).encode()


def test_loopback_is_recognised():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.20") and not is_loopback("::")


def test_page_data_and_relabel_on_loopback(bundle_dir, off_then_ac, tmp_path):
    with PageHarness(bundle_dir, tmp_path) as page:
        clip = page.play(off_then_ac)
        code, html = _get(page.base + "/")
        assert code == 200 and "<script>" in html and "http" not in html.split("<script>")[1].split("fetch(")[0]
        data = json.loads(_get(page.base + "/api/page")[1])
        assert data["state"] == "ac-on" and data["held_sec"] >= 0 and data["relabel"]
        ac, fridge = data["appliances"]
        assert (ac["name"], ac["title"], ac["running"], fridge["name"], fridge["running"]) == ("ac", "AC", True, "fridge", False)
        assert ac["chart"].count("<polyline") == 1 and 'class="p-ac"' in ac["chart"] and 'class="p-fridge"' in fridge["chart"]
        assert 'class="ac-on"' in ac["timeline"] and 'class="fridge-off"' in fridge["timeline"]
        assert [c["name"] for c in data["clips"]] == [clip] and data["clips"][0]["new_state"] == "ac-on"
        code, answer = _post(page.base + "/api/relabel", _relabel(clip))
        assert code == 200 and answer["written"].startswith("ac-off-fridge-on-night-clip-")
        code, answer = _post(page.base + "/api/relabel", _relabel(clip, ac=True, fridge=False, daypart="day"))
        written = list(page.relabel.iterdir())
        assert code == 200 and [p.name for p in written] == [answer["written"]]  # the correction replaced the first
        assert written[0].read_bytes() == (page.clips / clip).read_bytes()


def test_the_page_names_its_monitor():
    assert page_title("Kitchen") == "Kitchen · humwatch"
    assert page_title("humwatch") == "humwatch", "a monitor left with the default name is not 'humwatch · humwatch'"


def test_the_relabel_hint_names_what_the_user_can_reach(monkeypatch):
    assert pull_command("pi.local:8321", None, loopback=False) == "humwatch pull http://pi.local:8321/ --token TOKEN"
    assert pull_command("127.0.0.1:8321", "cellar", loopback=True) == "humwatch pull http://127.0.0.1:8321/ --monitor cellar"
    pull = "humwatch pull http://pi.local:8321/ --token TOKEN"
    monkeypatch.setattr(page_module, "in_container", lambda: False)
    hint = relabel_hint(Path("/var/lib/humwatch/relabel"), pull)
    assert "wait in /var/lib/humwatch/relabel on this machine. On the workstation, " + pull + " fetches them" in hint
    monkeypatch.setattr(page_module, "in_container", lambda: True)
    hint = relabel_hint(Path("/data/relabel"), pull)
    assert "/data/relabel inside the container (on its data volume)" in hint and pull in hint
    # behind Home Assistant's ingress the page's address is Home Assistant's: no pull, the share folder instead
    hint = relabel_hint(Path("/share/humwatch/relabel"), None)
    assert "Home Assistant's share folder, under humwatch/relabel" in hint and "humwatch pull" not in hint
    assert "/data/relabel, inside the add-on" in relabel_hint(Path("/data/relabel"), None)


def test_the_favicon_and_the_pull_address_are_served(bundle_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(page_module, "in_container", lambda: False)
    with PageHarness(bundle_dir, tmp_path, name="Kitchen") as page:
        for path in ("/favicon.ico", "/favicon.svg"):
            with urllib.request.urlopen(page.base + path, timeout=5) as response:
                assert response.status == 200 and response.headers["Content-Type"] == "image/svg+xml"
                assert response.read().startswith(b"<svg")
        data = json.loads(_get(page.base + "/api/page")[1])
        assert (data["name"], data["title"], data["several"]) == ("Kitchen", "Kitchen · humwatch", False)
        host = page.base.removeprefix("http://")
        assert f"wait in {page.relabel} on this machine. On the workstation, humwatch pull http://{host}/ fetches" in \
            data["relabel_hint"]
        request = urllib.request.Request(page.base + "/api/page", headers={"X-Ingress-Path": "/api/hassio_ingress/x"})
        with urllib.request.urlopen(request, timeout=5) as response:
            hint = json.loads(response.read())["relabel_hint"]
        assert "humwatch pull" not in hint and f"{page.relabel}, inside the add-on" in hint


def test_writes_off_loopback_need_the_token(bundle_dir, off_then_ac, tmp_path, monkeypatch):
    # Tests listen on loopback only: the server is told its address is not loopback.
    monkeypatch.setattr(http_status, "is_loopback", lambda host: False)
    with PageHarness(bundle_dir, tmp_path / "without") as page:
        clip = page.play(off_then_ac)
        code, answer = _post(page.base + "/api/relabel", _relabel(clip))
        assert code == 403 and "--http-token" in answer["error"]
        assert _get(page.base + "/api/page")[0] == 200  # reads stay open
    with PageHarness(bundle_dir, tmp_path / "with", token="s3cret") as page:
        clip = page.play(off_then_ac)
        assert _post(page.base + "/api/relabel", _relabel(clip))[0] == 401
        assert _post(page.base + "/api/relabel", _relabel(clip), token="guess")[0] == 401
        assert _post(page.base + "/api/relabel", _relabel(clip), token="s3cret")[0] == 200
        assert len(list(page.relabel.iterdir())) == 1


def test_bad_clip_names_and_bodies_are_refused(bundle_dir, off_then_ac, tmp_path):
    (tmp_path / "secret.flac").write_bytes(b"not yours")
    with PageHarness(bundle_dir, tmp_path) as page:
        page.play(off_then_ac)
        for name in ("../secret.flac", "..%2Fsecret.flac", "/etc/passwd", "x.json"):
            code, answer = _post(page.base + "/api/relabel", _relabel(name))
            assert code in (400, 404) and "clip" in answer["error"]
        assert _get(page.base + "/clips/..%2Fsecret.flac")[0] == 400
        assert _get(page.base + "/clips/nothing-here.flac")[0] == 404
        assert _post(page.base + "/api/relabel", b"{" * 5000)[0] == 413
        assert _post(page.base + "/api/relabel", b"not json")[0] == 400
        assert not page.relabel.exists()


def _chart_points(chart: str, name: str) -> list[tuple[float, float]]:
    points = re.search(rf'points="([^"]*)"[^>]*class="p-{name}"', chart).group(1)
    return [tuple(map(float, point.split(","))) for point in points.split()]


def _an_hour_of_half_second_hops(tmp_path, appliances: Appliances) -> tuple[dict, dict]:
    """/api/page's first answer and a later poll's after an hour at the 0.5 s hop --hop auto picks on
    a Pi: the AC runs every other 10 minutes (with one spike while off), any third appliance every
    other 15; every probability has noise."""
    hops = 7200
    clock = Clock(hops=hops, step=0.5)
    history = History(tmp_path / "history.db", clock=clock)
    household = Household(history, Alarms([], clock=clock), {}, lambda _: None)
    clips = tmp_path / "clips"
    for minute in range(0, 60, 5):
        write_clip(clips, f"20261124-21{minute:02d}00-t{minute * 60:09.1f}-both-off-to-ac-on.flac", minute)
    page = Page(PageSettings(clips, tmp_path / "relabel"), lambda: DecisionConfig(appliances), household, clock=clock)
    noise = np.random.default_rng(0).uniform(0, 0.3, size=(hops, len(appliances.names)))
    try:
        for hop in range(hops):
            clock.now += 0.5
            running = {name: hop // period % 2 == 1 for name, period in zip(appliances.names, (1200, 10**9, 1800))}
            probabilities = {name: float(noise[hop, index]) + (0.65 if running[name] else 0)
                             for index, name in enumerate(appliances.names)}
            probabilities["ac"] = 0.99 if hop == 3000 else probabilities["ac"]  # one spike while off
            line = hop_line(hop * 0.5, appliances.status(running), probabilities, running)
            page(line)
            if hop % 20 == 0:  # the history needs only the changes: every 10 s keeps the test quick
                household(line)
        first = page.data(line)
        return first, page.data(line, clips_seen=first["clips_version"])
    finally:
        history.close()


def test_the_page_data_stays_small_after_an_hour_of_half_second_hops(tmp_path):
    sizes = {}
    for appliances in (Appliances(), THREE):
        first, polled = _an_hour_of_half_second_hops(tmp_path / str(len(appliances.names)), appliances)
        first_size, polled_size = len(json.dumps(first)), len(json.dumps(polled))
        sizes[len(appliances.names)] = polled_size
        print(f"/api/page after an hour of 0.5 s hops, {len(appliances.names)} appliances: {first_size} bytes with "
              f"the 12 clips, {polled_size} bytes per poll after")
        assert len(first["clips"]) == 12 and "clips" not in polled and polled["clips_version"] == first["clips_version"]
        assert first_size < polled_size + 3_000
        rows = {row["name"]: row for row in polled["appliances"]}
        assert list(rows) == list(appliances.names)
        assert 'class="ac-on"' in rows["ac"]["timeline"] and 'class="ac-off"' in rows["ac"]["timeline"]
        for name, row in rows.items():
            points = _chart_points(row["chart"], name)
            assert CHART_COLUMNS <= len(points) <= 2 * CHART_COLUMNS + 2  # the hour, at most two points a column
            assert points[0][0] < 2 and points[-1][0] > 598 and [x for x, _ in points] == sorted(x for x, _ in points)
            assert row["chart"].count(f'class="threshold-{name}"') == 2  # its on and off levels
        heights = [y for _, y in _chart_points(rows["ac"]["chart"], "ac")]
        assert min(heights) == pytest.approx(160 * (1 - 0.99), abs=0.06)  # the one-hop spike is kept
        assert max(heights) > 160 * (1 - 0.01)  # and so are the lows
    assert 'class="dehumidifier-on"' in rows["dehumidifier"]["timeline"]
    assert sizes[2] < 20_000 and sizes[3] < sizes[2] * 1.6, sizes  # each appliance adds its own bounded share


def test_the_timeline_is_drawn_by_column_whatever_the_day_holds():
    now, hour = 1_800_000_000.0, 3600.0
    day = [Interval("ac", False, now - DAY, now - 12 * hour, False, True),
           Interval("ac", True, now - 12 * hour, now - 6 * hour, True, True),
           Interval("ac", False, now - 6 * hour, now - 3 * hour, True, False)]  # then the monitor stopped
    svg = timeline_svg(day, [], "ac", "#1f77b4", now)
    assert 'd="M360 0h180v22h-180z" fill="#1f77b4" fill-opacity="0.9" class="ac-on"' in svg
    assert 'd="M0 0h360v22h-360zM540 0h90v22h-90z"' in svg
    assert "path" not in timeline_svg(day, [], "fridge", "#2ca02c", now), "the fridge was not observed: its row is blank"
    # an hour of digital silence in the afternoon, a lost camera at night: grey where nothing was decided
    unheard = [(now - 16 * hour, now - 15 * hour, "no-signal"), (now - 2 * hour, now - hour, "no-audio")]
    svg = timeline_svg(day, unheard, "ac", "#1f77b4", now)
    assert 'd="M240 0h30v22h-30z" fill="#999" fill-opacity="0.5" class="gap-no-signal"><title>no signal' in svg
    assert 'class="gap-no-audio"><title>no audio (input lost)</title>' in svg and 'd="M660 0h30v22h-30z"' in svg
    assert 'd="M360 0h180v22h-180z" fill="#1f77b4" fill-opacity="0.9" class="ac-on"' in svg, "a run outranks the gap"
    # a dead microphone's day: a segment every 40 s, each with its own short run
    restless = [Interval("fridge", True, now - DAY + 40 * i, now - DAY + 40 * i + 10, True, True) for i in range(2160)]
    svg = timeline_svg(restless + [Interval("fridge", False, i.end, i.end + 20, True, False) for i in restless], [],
                       "fridge", "#2ca02c", now)
    assert len(svg) < 1000 and 'd="M0 0h720v22h-720z"' in svg
    # the worst case, a different kind every column, stays bounded by the width
    columns = [Interval("ac", c % 3 == 0, now - DAY + 120 * c, now - DAY + 120 * c + 60, True, True)
               for c in range(720) if c % 3 != 2]
    assert len(timeline_svg(columns, [], "ac", "#1f77b4", now)) < 20_000


def test_a_silent_client_does_not_delay_the_hops(bundle_dir, off_then_ac, tmp_path):
    with PageHarness(bundle_dir, tmp_path) as page:
        host, port = page.server.address
        silent = [socket.create_connection((host, port)) for _ in range(3)]  # connect, send nothing
        try:
            started = time.monotonic()
            page.source.feed(off_then_ac[0])
            lines = page.harness.wait_for(13, timeout=10)
            assert len(lines) == 13 and time.monotonic() - started < 5
            assert _get(page.base + "/state")[0] == 200  # and others are still served
        finally:
            for connection in silent:
                connection.close()


def _browser(*extra_flags):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=800,1100", *extra_flags):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(shutil.which("chromedriver") or "/usr/bin/chromedriver"), options=options)


ATTACK_SCRIPT = """
async function attack() {
  const results = {};
  const tries = [
    ["text", TARGET + "/api/relabel", {method: "POST", body: BODY, headers: {"Content-Type": "text/plain"}}],
    ["blind", TARGET + "/api/relabel", {method: "POST", body: BODY, mode: "no-cors", headers: {"Content-Type": "text/plain"}}],
    ["json", TARGET + "/api/relabel", {method: "POST", body: BODY, headers: {"Content-Type": "application/json"}}],
    ["read", TARGET + "/api/page", {}],
  ];
  for (const [name, url, init] of tries) {
    try {
      const response = await fetch(url, init);
      results[name] = response.type === "opaque" ? "sent blind" : await response.text();
    } catch (error) {
      results[name] = "blocked";
    }
  }
  document.getElementById("form").submit();  // and the classic: a form posting text/plain JSON
  return results;
}
"""


class AttackerSite(LoopbackServer):
    """Another origin on loopback serving a page that tries to relabel through the visitor's browser."""

    def __init__(self, target: str, fields: dict) -> None:
        body = json.dumps(fields)
        form_name = body[:-1] + ', "pad": "'  # text/plain form bodies are NAME=VALUE: this one is JSON
        page = (f"<!doctype html><title>another site</title><form id='form' method='POST' enctype='text/plain' "
                f"target='sink' action='{target}/api/relabel'><input name='{form_name}' value='\"}}'></form>"
                f"<iframe name='sink'></iframe><script>const TARGET = {json.dumps(target)}, "
                f"BODY = {json.dumps(body)};{ATTACK_SCRIPT}</script>").encode()

        super().__init__(lambda request: (200, "text/html", page))


@pytest.mark.browser
def test_another_site_cannot_use_the_browser_to_relabel_or_read(bundle_dir, tmp_path, caplog):
    caplog.set_level(logging.DEBUG, logger="humwatch.http")
    with PageHarness(bundle_dir, tmp_path) as page:
        clip = "20261124-213005-t0000010.5-both-off-to-ac-on.flac"
        write_clip(page.clips, clip, 1)
        fields = {"clip": clip, "ac": False, "fridge": True, "daypart": "night"}
        attacker = AttackerSite(page.base, fields)
        # evil.test stands in for a DNS-rebinding name: the browser resolves it to loopback
        browser = _browser("--host-resolver-rules=MAP evil.test 127.0.0.1")
        port = page.server.address[1]
        try:
            browser.set_script_timeout(20)
            for origin in (f"http://127.0.0.1:{attacker.port}", f"http://evil.test:{attacker.port}"):  # same-site, cross-site
                browser.get(origin + "/")
                results = browser.execute_async_script("attack().then(arguments[arguments.length - 1]);")
                assert results == {"text": "blocked", "blind": "sent blind", "json": "blocked", "read": "blocked"}, results
                deadline = time.monotonic() + 10  # the form's POST lands in the hidden frame
                while sum("POST /api/relabel" in r.getMessage() for r in caplog.records) < 3 and time.monotonic() < deadline:
                    time.sleep(0.1)
                posts = [r.getMessage() for r in caplog.records if "POST /api/relabel" in r.getMessage()]
                assert len(posts) == 3 and all('" 403 ' in post for post in posts), posts  # they came, and were refused
                assert any('"OPTIONS /api/relabel' in r.getMessage() for r in caplog.records)  # JSON: a preflight only
                caplog.clear()
                assert not page.relabel.exists()
            # a rebinding page: same origin as the monitor by name, so the browser lets it read; the Host refuses
            browser.get(f"http://evil.test:{port}/")
            assert "--http-host" in browser.find_element("tag name", "body").text
            answer = browser.execute_async_script(
                "fetch('/api/page').then(r => r.text().then(t => arguments[0]([r.status, t])));")
            assert answer[0] == 421 and "--http-host" in answer[1]
        finally:
            browser.quit()
            attacker.close()
        assert not page.relabel.exists()
        code, answer = _post(page.base + "/api/relabel", json.dumps(fields).encode())  # the same request, from no page
        assert code == 200 and [p.name for p in page.relabel.iterdir()] == [answer["written"]]


@pytest.mark.browser
def test_the_page_in_a_real_browser(bundle_dir, off_then_ac, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    with PageHarness(bundle_dir, tmp_path, name="Kitchen") as page:
        clip = page.play(off_then_ac)
        browser = _browser()
        try:
            browser.get(page.base + "/")
            wait = WebDriverWait(browser, 20)
            wait.until(lambda b: b.find_element(By.ID, "state").text == "AC on")
            assert browser.find_element(By.ID, "state").get_attribute("class") == "ac-on"
            assert browser.title == "Kitchen · humwatch" and browser.find_element(By.ID, "name").text == "Kitchen"
            assert not browser.find_element(By.ID, "monitors").is_displayed(), "one monitor: no index to go back to"
            icon = browser.find_element(By.CSS_SELECTOR, 'link[rel="icon"]').get_attribute("href")
            fetched = "fetch(arguments[0]).then((r) => arguments[1](`${r.status} ${r.headers.get('Content-Type')}`));"
            assert browser.execute_async_script(fetched, icon) == "200 image/svg+xml"
            assert browser.execute_async_script(fetched, page.base + "/favicon.ico") == "200 image/svg+xml"
            hint = browser.find_element(By.ID, "relabel-help").text
            assert f"humwatch pull {page.base}/ fetches them" in hint and f"{page.relabel} " in hint, hint
            rows = browser.find_elements(By.CSS_SELECTOR, "#appliances .appliance")
            heads = [row.find_element(By.CLASS_NAME, "head").text for row in rows]
            assert len(heads) == 2 and re.fullmatch(r"AC running · p [01]\.\d\d", heads[0]), heads
            assert re.fullmatch(r"Fridge off · p [01]\.\d\d", heads[1]), heads
            points = rows[0].find_element(By.CSS_SELECTOR, ".chart polyline.p-ac").get_attribute("points")
            assert len(points.split()) == 29
            assert rows[0].find_elements(By.CSS_SELECTOR, ".timeline path.ac-on")
            assert rows[1].find_elements(By.CSS_SELECTOR, ".timeline path.fridge-off")
            assert rows[0].find_element(By.CSS_SELECTOR, ".chart svg").size["height"] > 100
            row = browser.find_element(By.CSS_SELECTOR, f'.clip[data-clip="{clip}"]')
            Select(row.find_element(By.NAME, "ac")).select_by_value("off")
            Select(row.find_element(By.NAME, "fridge")).select_by_value("on")
            row.find_element(By.CSS_SELECTOR, "button.relabel").click()
            wait.until(lambda b: row.find_element(By.CSS_SELECTOR, ".result").text.startswith("saved as"))
            browser.save_screenshot(str(tmp_path / "page.png"))
            if os.environ.get("HUMWATCH_PAGE_SCREENSHOT"):  # how edge/home/docs/page.png is made
                shutil.copy(tmp_path / "page.png", os.environ["HUMWATCH_PAGE_SCREENSHOT"])
        finally:
            browser.quit()
        written = list(page.relabel.iterdir())
        assert len(written) == 1 and written[0].name.startswith("ac-off-fridge-on-")
        assert written[0].suffix == ".flac" and "-clip-" in written[0].name
        relabelled, rate = soundfile.read(written[0], dtype="float32")
        original, original_rate = soundfile.read(page.clips / clip, dtype="float32")
        assert rate == original_rate and np.array_equal(relabelled, original)


@pytest.mark.browser
def test_a_run_heard_since_the_monitor_began_counts_as_a_cycle_in_a_real_browser(bundle_dir, off_then_ac, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def ac_row(browser) -> list[str]:
        return [cell.text for cell in browser.find_elements(By.CSS_SELECTOR, "#stats tr:nth-child(2) td")]

    with PageHarness(bundle_dir, tmp_path) as page:
        page.source.feed(off_then_ac[1])  # the AC runs from the monitor's first hop: the run's start is not heard
        lines = page.harness.wait_for(13)
        assert [line.debounced_status for line in lines] == ["ac-on"] * len(lines)
        browser = _browser()
        try:
            browser.get(page.base + "/")
            WebDriverWait(browser, 20).until(lambda b: len(ac_row(b)) == 6)
            title, now, _, _, cycles, _ = ac_row(browser)  # (this clock's hops are minutes apart: each its own segment)
            assert (title, now, cycles) == ("AC", "running", "1"), ac_row(browser)
        finally:
            browser.quit()


def test_three_appliances_on_the_page_state_metrics_clips_and_relabel(bundle_dir, off_then_ac, tmp_path):
    with PageHarness(bundle_dir, tmp_path, dehumidifier=True) as page:
        clip = page.play(off_then_ac, changes=2)  # all-off -> dehumidifier-on -> ac-on (the AC comes first)
        data = json.loads(_get(page.base + "/api/page")[1])
        rows = {row["name"]: row for row in data["appliances"]}
        assert list(rows) == ["ac", "fridge", "dehumidifier"] and data["state"] == "ac-on"
        assert (rows["dehumidifier"]["title"], rows["dehumidifier"]["running"], rows["dehumidifier"]["p"]) == ("Dehumidifier", True, 0.95)
        assert 'class="p-dehumidifier"' in rows["dehumidifier"]["chart"]
        assert 'class="dehumidifier-off"' in rows["dehumidifier"]["timeline"] and 'class="dehumidifier-on"' in rows["dehumidifier"]["timeline"]
        assert [(c["old_state"], c["new_state"]) for c in data["clips"]] == [("dehumidifier-on", "ac-on"), ("all-off", "dehumidifier-on")]
        state = json.loads(_get(page.base + "/state")[1])
        assert state == page.harness.monitor.last_line.to_json()
        assert (state["p_dehumidifier"], state["dehumidifier_running"], state["ac_running"], state["fridge_running"]) == (0.95, True, True, False)
        metrics = _get(page.base + "/metrics")[1]
        for series in ('humwatch_probability{label="dehumidifier"} 0.950000', 'humwatch_state{state="ac-on"} 1',
                       'humwatch_state{state="dehumidifier-on"} 0', 'humwatch_state{state="all-off"} 0'):
            assert series in metrics, series
        assert 'humwatch_runtime_today_seconds{appliance="dehumidifier"}' in metrics and "both-off" not in metrics
        sidecar = json.loads((page.clips / clip).with_suffix(".json").read_text())
        assert [key for key in sidecar if key.startswith(("p_", "median_"))] == [
            "p_ac", "p_fridge", "p_dehumidifier", "median_ac", "median_fridge", "median_dehumidifier"]
        assert sidecar["p_dehumidifier"] == 0.95 and sidecar["new_state"] == "ac-on"
        code, answer = _post(page.base + "/api/relabel", _relabel(clip))  # the seed's body: the dehumidifier is missing
        assert code == 400 and "missing 'dehumidifier'" in answer["error"] and '"dehumidifier": true|false' in answer["error"]
        body = json.dumps({"clip": clip, "ac": False, "fridge": True, "dehumidifier": True, "daypart": "day"}).encode()
        code, answer = _post(page.base + "/api/relabel", body)
        assert code == 200 and answer["written"].startswith("ac-off-fridge-on-dehumidifier-on-day-clip-")
        named = read_sample_name(answer["written"])
        assert (named.labels, named.daypart, named.tag) == ({"ac": False, "fridge": True, "dehumidifier": True}, "day",
                                                            "clip-" + clip.removesuffix(".flac"))
        assert (page.relabel / answer["written"]).read_bytes() == (page.clips / clip).read_bytes()


@pytest.mark.browser
def test_three_appliances_in_a_real_browser(bundle_dir, off_then_ac, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    with PageHarness(bundle_dir, tmp_path, dehumidifier=True) as page:
        clip = page.play(off_then_ac, changes=2)
        browser = _browser()
        try:
            browser.get(page.base + "/")
            wait = WebDriverWait(browser, 20)
            wait.until(lambda b: b.find_element(By.ID, "state").text == "AC on")
            row = browser.find_element(By.CSS_SELECTOR, '#appliances .appliance[data-appliance="dehumidifier"]')
            assert row.find_element(By.CLASS_NAME, "head").text == "Dehumidifier running · p 0.95"
            assert len(row.find_element(By.CSS_SELECTOR, ".chart polyline.p-dehumidifier").get_attribute("points").split()) == 29
            assert row.find_elements(By.CSS_SELECTOR, ".timeline path.dehumidifier-on")
            older = browser.find_elements(By.CSS_SELECTOR, ".clip")[1]
            assert older.find_element(By.TAG_NAME, "div").text.endswith("All off → Dehumidifier on")
            assert Select(older.find_element(By.NAME, "dehumidifier")).first_selected_option.text == "Dehumidifier on"
            form = browser.find_element(By.CSS_SELECTOR, f'.clip[data-clip="{clip}"]')
            assert [s.get_attribute("name") for s in form.find_elements(By.TAG_NAME, "select")] == [
                "ac", "fridge", "dehumidifier", "daypart"]
            Select(form.find_element(By.NAME, "ac")).select_by_value("off")
            Select(form.find_element(By.NAME, "dehumidifier")).select_by_value("on")
            form.find_element(By.CSS_SELECTOR, "button.relabel").click()
            wait.until(lambda b: form.find_element(By.CSS_SELECTOR, ".result").text.startswith("saved as"))
        finally:
            browser.quit()
        written = [p.name for p in page.relabel.iterdir()]
        assert len(written) == 1 and read_sample_name(written[0]).labels == {"ac": False, "fridge": False, "dehumidifier": True}
