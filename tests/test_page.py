"""The page (issue 15): what it serves, who may write, and a real headless browser driving it."""

import json
import os
import shutil
import socket
import time
import urllib.request

import numpy as np
import pytest
import soundfile

from conftest import pinned_decision
from edge.home import http_status
from edge.home.alarms import AlarmRule, Alarms
from edge.home.clips import ClipWriter
from edge.home.household import Household
from edge.home.history import History
from edge.home.http_status import StatusServer, is_loopback
from edge.home.page import Page, PageSettings
from test_home import _get
from test_live import FakeSource, Harness


class Clock:
    """Wall time that moves two minutes a hop, so 29 hops fill the page's hour as a real one would."""

    def __init__(self, hops: int = 30, step: float = 120.0) -> None:
        self.now, self.step = time.time() - hops * step, step

    def __call__(self) -> float:
        return self.now

    def tick(self, line) -> None:
        self.now += self.step


class PageHarness:
    """A monitor on a fake microphone with clips, a history and the page, served on loopback."""

    def __init__(self, bundle_dir, tmp_path, token=None):
        self.clips, self.relabel = tmp_path / "clips", tmp_path / "relabel"
        self.source = FakeSource()
        decision = pinned_decision(bundle_dir)
        clock = Clock()
        self.history = History(tmp_path / "history.db", clock=clock)
        household = Household(self.history, Alarms([AlarmRule.parse("ac-run-max=30m")], clock=clock), {}, lambda _: None)
        self.harness = Harness(bundle_dir, self.source, decision=decision, max_lag_sec=100.0, history_sec=12.0)
        monitor = self.harness.monitor
        page = Page(PageSettings(self.clips, self.relabel, tmp_path / "history.db"), decision, household, clock=clock)
        self.server = StatusServer(monitor, "127.0.0.1", 0, page=page, token=token)
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

    def play(self, off_then_ac):
        self.source.feed(np.concatenate(off_then_ac))
        lines = self.harness.wait_for(29)
        assert lines[-1].debounced_status == "ac-on" and len(list(self.clips.glob("*.flac"))) == 1
        return next(self.clips.glob("*.flac")).name


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
        assert data["chart"].count("<polyline") == 2 and 'class="ac-on"' in data["timeline"]
        assert [c["name"] for c in data["clips"]] == [clip] and data["clips"][0]["new_state"] == "ac-on"
        code, answer = _post(page.base + "/api/relabel", _relabel(clip))
        assert code == 200 and answer["written"].startswith("ac-off-fridge-on-night-clip-")
        code, answer = _post(page.base + "/api/relabel", _relabel(clip, ac=True, fridge=False, daypart="day"))
        written = list(page.relabel.iterdir())
        assert code == 200 and [p.name for p in written] == [answer["written"]]  # the correction replaced the first
        assert written[0].read_bytes() == (page.clips / clip).read_bytes()


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


def _browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=800,1100"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(shutil.which("chromedriver") or "/usr/bin/chromedriver"), options=options)


@pytest.mark.browser
def test_the_page_in_a_real_browser(bundle_dir, off_then_ac, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    with PageHarness(bundle_dir, tmp_path) as page:
        clip = page.play(off_then_ac)
        browser = _browser()
        try:
            browser.get(page.base + "/")
            wait = WebDriverWait(browser, 20)
            wait.until(lambda b: b.find_element(By.ID, "state").text == "AC on")
            assert browser.find_element(By.ID, "state").get_attribute("class") == "ac-on"
            points = browser.find_elements(By.CSS_SELECTOR, "#chart polyline.p-ac")[0].get_attribute("points")
            assert len(points.split()) == 29
            assert browser.find_elements(By.CSS_SELECTOR, "#timeline rect.ac-on")
            assert browser.find_element(By.CSS_SELECTOR, "#chart svg").size["height"] > 100
            row = browser.find_element(By.CSS_SELECTOR, f'.clip[data-clip="{clip}"]')
            Select(row.find_element(By.NAME, "ac")).select_by_value("off")
            Select(row.find_element(By.NAME, "fridge")).select_by_value("on")
            row.find_element(By.CSS_SELECTOR, "button.relabel").click()
            wait.until(lambda b: row.find_element(By.CSS_SELECTOR, ".result").text.startswith("saved as"))
            browser.save_screenshot(str(tmp_path / "page.png"))
            if os.environ.get("HUMWATCH_PAGE_SCREENSHOT"):  # how the README's picture is made
                shutil.copy(tmp_path / "page.png", os.environ["HUMWATCH_PAGE_SCREENSHOT"])
        finally:
            browser.quit()
        written = list(page.relabel.iterdir())
        assert len(written) == 1 and written[0].name.startswith("ac-off-fridge-on-")
        assert written[0].suffix == ".flac" and "-clip-" in written[0].name
        relabelled, rate = soundfile.read(written[0], dtype="float32")
        original, original_rate = soundfile.read(page.clips / clip, dtype="float32")
        assert rate == original_rate and np.array_equal(relabelled, original)
