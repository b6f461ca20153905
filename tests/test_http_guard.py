"""Who may read and write over HTTP (issue 20): the Host of every request, the Origin, Sec-Fetch-Site
and Content-Type of a write, strict relabel fields, and an answer for every request. Each refusal
also checks that nothing already in the relabel directory was lost or overwritten."""

import http.client
import json

import pytest
from test_page import PageHarness, write_clip

from edge.core.decision import DecisionConfig
from edge.core.labels import Appliances, parse_sample_name
from edge.home.http_status import allowed_hosts, host_name
from edge.home.page import Page, PageSettings, Refused, parse_relabel

SECOND = "20261124-213005"  # two clips written within this one second


def _request(page, method: str, path: str, body: bytes | None = None, headers: dict | None = None,
             host: str | None = "default"):
    """(status, JSON answer) with exactly these headers; host None sends no Host header."""
    address, port = page.server.address
    connection = http.client.HTTPConnection(address, port, timeout=5)
    try:
        connection.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        if host is not None:
            connection.putheader("Host", f"127.0.0.1:{port}" if host == "default" else host)
        for name, value in (headers or {}).items():
            connection.putheader(name, value)
        if body is not None:
            connection.putheader("Content-Length", str(len(body)))
        connection.endheaders(body)
        response = connection.getresponse()
        data = response.read()
        assert data, f"{method} {path}: an empty reply"
        return response.status, (json.loads(data) if response.getheader("Content-Type") == "application/json" else data)
    finally:
        connection.close()


def _relabel(page, fields: dict | None = None, headers: dict | None = None, raw: bytes | None = None, **options):
    body = raw if raw is not None else json.dumps(fields).encode()
    return _request(page, "POST", "/api/relabel", body, {"Content-Type": "application/json", **(headers or {})}, **options)


def _written(page) -> dict:
    """Everything in the relabel directory: name -> bytes."""
    return {p.name: p.read_bytes() for p in page.relabel.iterdir()} if page.relabel.exists() else {}


@pytest.fixture
def page(bundle_dir, tmp_path):
    """The served page with two clips written within one second, and one relabel already written."""
    with PageHarness(bundle_dir, tmp_path, hosts=("pi.local",)) as served:
        served.first, served.second = f"{SECOND}-t0000010.5-both-off-to-ac-on.flac", f"{SECOND}-t0000011.0-ac-on-to-both-off.flac"
        served.sources = {served.first: write_clip(served.clips, served.first, 1), served.second: write_clip(served.clips, served.second, 2)}
        code, answer = _relabel(served, {"clip": served.first, "ac": True, "fridge": False, "daypart": "night"})
        assert code == 200, answer
        served.before = _written(served)
        yield served


def test_host_names_are_parsed_strictly():
    assert host_name("Pi.Local.:8321") == "pi.local" and host_name("[::1]:8321") == "::1" and host_name("127.0.0.1") == "127.0.0.1"
    for bad in (None, "", "evil.example@127.0.0.1", "127.0.0.1/x", "a b", "pi.local:", "[::1"):
        assert host_name(bad) is None, bad
    assert allowed_hosts("0.0.0.0", ["pi.local", "Kitchen.lan"]) >= {"localhost", "pi.local", "kitchen.lan"}
    with pytest.raises(ValueError, match="--http-host 'http://pi.local'"):
        allowed_hosts("127.0.0.1", ["http://pi.local"])


def test_every_request_must_be_addressed_to_this_monitor(page):
    port = page.server.address[1]
    for path in ("/", "/api/page", "/state", "/healthz", "/metrics", f"/clips/{page.first}", "/nothing"):
        for host in ("evil.example", f"evil.example:{port}", f"pi.local.evil.example:{port}", "evil.example@127.0.0.1",
                     "2130706433", "", None):
            code, answer = _request(page, "GET", path, host=host)
            assert code == 421 and "--http-host" in answer["error"], (path, host, answer)
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", "localhost", f"LOCALHOST.:{port}", f"[::1]:{port}",
                 "192.168.1.20:8321", "pi.local", f"Pi.Local:{port}"):
        assert _request(page, "GET", "/api/page", host=host)[0] == 200, host
    code, answer = _relabel(page, {"clip": page.first, "ac": False, "fridge": True, "daypart": "day"}, host=f"evil.example:{port}")
    assert code == 421 and _written(page) == page.before


def test_writes_only_as_json_from_the_page_itself(page):
    port = page.server.address[1]
    fields = {"clip": page.first, "ac": False, "fridge": True, "daypart": "day"}
    for headers, code, said in (
        ({"Content-Type": "text/plain"}, 415, "application/json"),
        ({"Content-Type": "application/x-www-form-urlencoded"}, 415, "application/json"),
        ({"Content-Type": ""}, 415, "application/json"),
        ({"Origin": f"http://127.0.0.1:{port + 1}"}, 403, "Origin"),
        ({"Origin": "http://evil.example"}, 403, "Origin"),
        ({"Origin": "null"}, 403, "Origin"),
        ({"Sec-Fetch-Site": "cross-site"}, 403, "cross-site"),
        ({"Sec-Fetch-Site": "same-site", "Origin": f"http://127.0.0.1:{port}"}, 403, "same-site"),
    ):
        status, answer = _relabel(page, fields, headers)
        assert status == code and said in answer["error"], (headers, answer)
        assert _written(page) == page.before
    # the page itself (same origin), a typed-in request (none) and a program without a browser may write
    for headers in ({"Origin": f"http://127.0.0.1:{port}", "Sec-Fetch-Site": "same-origin"}, {"Sec-Fetch-Site": "none"},
                    {"Content-Type": "application/json; charset=utf-8"}, {}):
        assert _relabel(page, fields, headers)[0] == 200, headers


def test_relabel_fields_are_strict(page):
    good = {"clip": page.second, "ac": False, "fridge": True, "daypart": "night"}
    for change, said in (
        ({"ac": "false"}, "field 'ac': got the string 'false', expected a JSON boolean"),
        ({"fridge": 1}, "field 'fridge': got a JSON number"),
        ({"ac": None}, "field 'ac': got a JSON null"),
        ({"daypart": ["day"]}, "field 'daypart': got a JSON array"),
        ({"daypart": "noon"}, "daypart 'noon'"),
        ({"clip": {"name": page.second}}, "field 'clip': got a JSON object"),
        ({"extra": 1}, "unknown field(s) 'extra'"),
        ({"clip": "a" * 300 + ".flac"}, "at most 200"),
        ({"clip": page.second + "\n"}, "not a clip name"),
        ({"clip": "../" + page.second}, "not a clip name"),
    ):
        code, answer = _relabel(page, {**good, **change})
        assert code == 400 and said in answer["error"], (change, answer)
    code, answer = _relabel(page, {"clip": page.second, "ac": False})
    assert code == 400 and "missing 'fridge', 'daypart'" in answer["error"]
    for raw, said in ((b"[" * 4000, "nests too deeply"), (b'{"clip": ' + b"[" * 2000 + b"]" * 2000 + b"}", "nests too deeply"),
                      (b"[1, 2]", "a JSON array"), (b"\xff\xfe", "not JSON"), (b"", "not JSON")):
        code, answer = _relabel(page, raw=raw)
        assert code == 400 and said in answer["error"], (raw[:20], answer)
    code, answer = _request(page, "GET", "/clips/" + "a" * 300 + ".flac")
    assert code == 400 and "at most 200" in answer["error"]
    assert _written(page) == page.before
    assert _request(page, "GET", "/healthz")[0] in (200, 503)  # and the server still answers


def test_two_clips_in_one_second_keep_their_own_relabels(page):
    code, answer = _relabel(page, {"clip": page.second, "ac": False, "fridge": True, "daypart": "night"})
    assert code == 200
    written = _written(page)
    assert len(written) == 2 and set(page.before) < set(written)  # the first clip's relabel is still there
    names = {parse_sample_name(name).tag: name for name in written}
    assert set(names) == {"clip-" + page.first.removesuffix(".flac"), "clip-" + page.second.removesuffix(".flac")}
    for clip in (page.first, page.second):
        assert written[names["clip-" + clip.removesuffix(".flac")]] == page.sources[clip]
    labels = parse_sample_name(names["clip-" + page.second.removesuffix(".flac")])
    assert (labels.labels, labels.daypart) == ({"ac": False, "fridge": True}, "night")
    # a correction of the first clip replaces its own earlier relabel and nothing else
    code, answer = _relabel(page, {"clip": page.first, "ac": False, "fridge": False, "daypart": "day"})
    after = _written(page)
    assert code == 200 and set(after) == {answer["written"], names["clip-" + page.second.removesuffix(".flac")]}
    assert after[answer["written"]] == page.sources[page.first]


def test_a_failure_is_an_answer_not_an_empty_reply(page, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("the page's data could not be built")

    monkeypatch.setattr(Page, "data", broken)
    code, answer = _request(page, "GET", "/api/page")
    assert code == 500 and "log" in answer["error"]
    assert _request(page, "GET", "/healthz")[0] in (200, 503)


def test_a_relabel_names_every_appliance_of_the_bundle_and_fits_a_file_name(tmp_path):
    three = Appliances(("ac", "fridge", "dehumidifier"))
    body = {"clip": f"{SECOND}-t0000010.5-all-off-to-dehumidifier-on.flac", "dehumidifier": True, "ac": False,
            "fridge": False, "daypart": "day"}
    assert parse_relabel(json.dumps(body).encode(), three) == {
        "clip": body["clip"], "labels": {"ac": False, "fridge": False, "dehumidifier": True}, "daypart": "day"}
    with pytest.raises(Refused, match="missing 'dehumidifier'") as refused:
        parse_relabel(json.dumps({key: value for key, value in body.items() if key != "dehumidifier"}).encode(), three)
    assert refused.value.status == 400
    # appliance names long enough that the relabelled name would not fit a file name: refused, nothing written
    longer = Appliances(tuple(letter * 60 for letter in "abc"))
    clips, relabel = tmp_path / "clips", tmp_path / "relabel"
    write_clip(clips, body["clip"], 1)
    page = Page(PageSettings(clips, relabel), lambda: DecisionConfig(longer))
    with pytest.raises(Refused, match=r"relabelled it would be named in 2\d\d bytes, over the 241") as refused:
        page.relabel(body["clip"], dict.fromkeys(longer.names, True), "day")
    assert refused.value.status == 400 and not relabel.exists()
