"""Secrets stay secret (issue 29, item 8): one redaction rule for every URL shown anywhere.

A table of hostile texts against edge.core.redact, then a real `humwatch live` process whose source
URL and MQTT URL hold secrets: its log, /healthz and --print-config never show them.
"""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request

import pytest
from broker import free_port
from conftest import REPO

from edge.core.redact import RedactingFormatter, redact
from edge.home.mqtt import MqttSettings

BUNDLE = REPO / "tests" / "fixtures" / "bundle-v2"
HUMWATCH = [sys.executable, "-c", "from edge.cli import main; main()"]


@pytest.mark.parametrize("text, shown", [
    # userinfo: everything from scheme:// to the last @ of the line, whatever the password holds
    ("rtsp://admin:hunter2@192.168.1.20:554/h264Preview_01_main", "rtsp://***@192.168.1.20:554/h264Preview_01_main"),
    ("rtsp://token@cam/live", "rtsp://***@cam/live"),
    ("rtsp://admin:p@ss@cam/stream1", "rtsp://***@cam/stream1"),
    ("rtsp://admin:pa/ss?w#rd@cam/stream1", "rtsp://***@cam/stream1"),
    ("rtsp://admin:my secret pass@cam/s: cannot open the stream (timed out)",
     "rtsp://***@cam/s: cannot open the stream (timed out)"),
    ("rtsp://admin:x://y@cam/s", "rtsp://***@cam/s"),  # a scheme-like piece inside a password
    ("rtsp://@cam/s", "rtsp://***@cam/s"),
    ("rtsp://u:p@", "rtsp://***@"),  # no host
    # every query value, any key
    ("http://cam/audio.cgi?user=admin&pwd=hunter2&ch=1", "http://cam/audio.cgi?user=***&pwd=***&ch=***"),
    ("http://cam/a?access_token=abc123: cannot open the stream (401)",
     "http://cam/a?access_token=***: cannot open the stream (401)"),
    ("https://cam/a?apikey=K3Y&passcode=1234#frag=x", "https://cam/a?apikey=***&passcode=***#frag=***"),
    ("'http://cam/a?token=abc': expected ...", "'http://cam/a?token=***': expected ..."),
    ("http://cam/a?email=me@x.com&token=abc", "http://***@x.com&token=***"),  # an @ in the query: more hidden
    ("http://cam/a?next=http://u:p@b/c", "http://cam/a?next=http://***@b/c"),
    ("http://cam/a?k=%zz%&sig=%41%42", "http://cam/a?k=***&sig=***"),  # bad % escapes
    # odd schemes and malformed URLs
    ("RTSP://Admin:PW@cam/x", "RTSP://***@cam/x"),
    ("rtsp+tcp://u:p@cam", "rtsp+tcp://***@cam"),
    ("x-cam.v2://u:p@cam", "x-cam.v2://***@cam"),
    ("rtsp://u:p@[::1", "rtsp://***@[::1"),  # unclosed [
    ("rtsp://u:p%40x%zz@cam/%zz?k=%zz", "rtsp://***@cam/%zz?k=***"),
    ("source:rtsp://u:p@cam/x", "source:rtsp://***@cam/x"),
    ("ok\nsource:rtsp://u:p@cam/x", "ok\nsource:rtsp://***@cam/x"),
    # messages with several URLs, lines, and none
    ("Kitchen: rtsp://***@cam1/x: lost; Cellar: rtsp://u:p@cam2/y?t=1: lost",
     "Kitchen: rtsp://***@cam1/x: lost; Cellar: rtsp://***@cam2/y?t=***: lost"),
    ("mqtt://u:p@broker:1883 down\nrtsp://cam/ok is fine", "mqtt://***@broker:1883 down\nrtsp://cam/ok is fine"),
    ("rtsp://cam:8554/kitchen", "rtsp://cam:8554/kitchen"),
    ("plain text, a=b, user@example.org", "plain text, a=b, user@example.org"),
    ("http://", "http://"),
])
def test_redact_hides_userinfo_and_query_values_of_any_url(text, shown):
    assert redact(text) == shown
    assert redact(shown) == shown  # a message built from a redacted URL is shown as it is


def test_log_lines_are_redacted_with_their_arguments_and_traceback():
    formatter = RedactingFormatter("%(levelname)s %(message)s")
    try:
        raise OSError("cannot open rtsp://admin:hunter2@cam/s?apikey=K3Y")
    except OSError as error:
        record = logging.LogRecord("humwatch", logging.ERROR, __file__, 1, "source %s lost: %s",
                                   ("rtsp://admin:hunter2@cam/s", error), sys.exc_info())
    line = formatter.format(record)
    assert "hunter2" not in line and "K3Y" not in line and "admin" not in line
    assert "source rtsp://***@cam/s lost" in line and "Traceback" in line


@pytest.mark.parametrize("url, secret", [("mqtt://u:pa/ss@broker", "pa"), ("mqtt://u:12/ss@broker:1883", "12"),
                                         ("mqtt://u:pa?ss@broker", "pa"), ("mqtt://me:pa#ss@broker", "me")])
def test_an_mqtt_url_with_an_unencoded_password_is_refused_without_showing_it(url, secret):
    """urlsplit takes the part of such a password before its / ? # for the host or the port: it would
    be shown in every log line as the broker's address ("cannot reach the broker at u:12")."""
    with pytest.raises(ValueError, match="expected mqtt://HOST") as error:
        MqttSettings.from_url(url)
    assert f"'{redact(url)}'" in str(error.value) and secret not in redact(url)


CAMERA_SECRETS = ("camuser", "Cam pa55", "w#rd", "TOKEN123abc", "APIKEY456", "PASS789")
MQTT_SECRETS = ("mqttuser", "mq pa55 w0rd")


def test_a_live_monitor_never_shows_its_urls_secrets(broker, tmp_path):
    """A real `humwatch live`: a camera that never answers (its URL's password holds a space, ? and
    #, its query a token, an API key and a passcode) and a real broker with the credentials in its
    URL. Its log, /healthz (no login) and --print-config keep the hosts and paths, never the secrets."""
    camera, http = free_port(), free_port()
    source = f"rtsp://camuser:Cam pa55?w#rd@127.0.0.1:{camera}/stream1?access_token=TOKEN123abc&apikey=APIKEY456&passcode=PASS789"
    config = tmp_path / "humwatch.toml"
    config.write_text(f'bundle = "{BUNDLE}"\nsource = "{source}"\nmqtt = "mqtt://mqttuser:mq pa55 w0rd@127.0.0.1:{broker.port}"\n'
                      f'http = "{http}"\nhop = "1.5"\n', encoding="utf-8")
    shown = subprocess.run([*HUMWATCH, "live", "--config", str(config), "--print-config"],
                           capture_output=True, text=True, cwd=REPO, timeout=60)
    assert shown.returncode == 0, shown.stderr
    printed = tomllib.loads(shown.stdout)
    assert printed["source"] == f"rtsp://***@127.0.0.1:{camera}/stream1?access_token=***&apikey=***&passcode=***"
    assert printed["mqtt"]["url"] == f"mqtt://***@127.0.0.1:{broker.port}"

    stderr = tmp_path / "stderr.txt"
    with open(stderr, "w") as log:
        process = subprocess.Popen([*HUMWATCH, "live", "--config", str(config)], cwd=REPO,
                                   stdout=subprocess.DEVNULL, stderr=log)
    try:
        health = _wait_for_health(http, process, lambda reason: "cannot open the stream" in reason)
        deadline = time.monotonic() + 20  # the broker too: its connection is logged
        while "MQTT: connected" not in stderr.read_text() and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
    log_text = stderr.read_text()
    assert f"rtsp://***@127.0.0.1:{camera}/stream1?access_token=***" in health["reason"], health
    assert "MQTT: connected" in log_text and "rtsp://***@127.0.0.1" in log_text, log_text
    for secret in CAMERA_SECRETS + MQTT_SECRETS:
        for where, text in (("--print-config", shown.stdout), ("/healthz", json.dumps(health)), ("the log", log_text)):
            assert secret not in text, f"{secret!r} shown in {where}: {text}"


def _wait_for_health(port: int, process: subprocess.Popen, wanted, timeout: float = 60.0) -> dict:
    """/healthz's answer once its reason is `wanted` (the monitor has started by then)."""
    deadline, answer = time.monotonic() + timeout, {}
    while time.monotonic() < deadline and process.poll() is None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as response:
                answer = json.loads(response.read())
        except urllib.error.HTTPError as error:  # 503 while degraded: the body says why
            answer = json.loads(error.read())
        except OSError:
            pass
        if wanted(answer.get("reason", "")):
            return answer
        time.sleep(0.2)
    raise AssertionError(f"/healthz never said it (exit code {process.poll()}): {answer}")
