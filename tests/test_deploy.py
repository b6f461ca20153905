"""Push and swap without a restart (issue 31): a bundle's archive checked member by member, a real
`humwatch live` fed through --source - that swaps models between two hops while audio flows (the
history, the MQTT device and the page going on, a new appliance's entity appearing and going on
rollback), and hostile pushes refused with the running model untouched."""

from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from broker import Broker
from click.testing import CliRunner
from live_process import LiveProcess, retained_messages
from loopback_http import post
from toy_bundle import copy_of_base, toy_bundle

from edge.cli import main
from edge.core.bundle_archive import ArchiveError, pack_bundle, unpack_bundle

TOKEN = "s3cret-token"


def _archive(bundle: Path) -> bytes:
    out = io.BytesIO()
    pack_bundle(bundle, out)
    return out.getvalue()


def _tar(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as archive:
        for info, data in members:
            info.size = len(data) if data is not None else 0
            archive.addfile(info, io.BytesIO(data) if data is not None else None)
    return out.getvalue()


def _hostile_archives(bundle: Path) -> dict[str, bytes]:
    """A valid bundle's archive with one thing wrong each."""
    files = {name: (bundle / name).read_bytes() for name in ("bundle.json", "encoder.onnx", "head.onnx", "student.onnx")}

    def with_member(info: tarfile.TarInfo, data: bytes | None) -> bytes:
        return _tar([(tarfile.TarInfo(name), content) for name, content in files.items()] + [(info, data)])

    symlink = tarfile.TarInfo("evil.onnx")
    symlink.type, symlink.linkname = tarfile.SYMTYPE, "/etc/passwd"
    altered = dict(files, **{"head.onnx": files["head.onnx"][:-1] + bytes([files["head.onnx"][-1] ^ 1])})
    return {
        "../": with_member(tarfile.TarInfo("../escape.onnx"), b"x"),
        "absolute": with_member(tarfile.TarInfo("/tmp/escape.onnx"), b"x"),
        "folder": with_member(tarfile.TarInfo("sub/escape.onnx"), b"x"),
        "symlink": with_member(symlink, None),
        "checksum": _tar([(tarfile.TarInfo(name), content) for name, content in altered.items()]),
        "unlisted": with_member(tarfile.TarInfo("extra.onnx"), b"x"),
        "missing": _tar([(tarfile.TarInfo(name), content) for name, content in files.items() if name != "head.onnx"]),
        "not a tar": b"PK\x03\x04 not a tar at all" * 100,
    }


def test_an_archive_unpacks_only_a_bundle_with_every_checksum(tmp_path):
    bundle = copy_of_base(tmp_path)
    archive = tmp_path / "good.tar"
    archive.write_bytes(_archive(bundle))
    unpack_bundle(archive, tmp_path / "unpacked", max_bytes=10_000_000)
    assert sorted(os.listdir(tmp_path / "unpacked")) == sorted(os.listdir(bundle))
    assert all((tmp_path / "unpacked" / name).read_bytes() == (bundle / name).read_bytes() for name in os.listdir(bundle))

    reasons = {}
    for what, data in _hostile_archives(bundle).items():
        archive.write_bytes(data)
        with pytest.raises(ArchiveError) as refused:
            unpack_bundle(archive, tmp_path / f"refused-{len(reasons)}", max_bytes=10_000_000)
        assert not (tmp_path / f"refused-{len(reasons)}").exists()  # nothing left behind
        reasons[what] = str(refused.value)
    assert not (tmp_path.parent / "escape.onnx").exists() and not Path("/tmp/escape.onnx").exists()
    assert "a path" in reasons["../"] and "a path" in reasons["absolute"] and "a path" in reasons["folder"]
    assert "symbolic link" in reasons["symlink"]
    assert "head.onnx: checksum mismatch" in reasons["checksum"]
    assert "extra.onnx: not listed" in reasons["unlisted"]
    assert "head.onnx: listed in bundle.json but not in the archive" in reasons["missing"]
    assert "not a tar archive" in reasons["not a tar"]
    archive.write_bytes(_archive(bundle))
    with pytest.raises(ArchiveError, match="over 3 MB"):
        unpack_bundle(archive, tmp_path / "too-big", max_bytes=3_000_000)  # the bundle holds 3.7 MB


def _push(port: int, data: bytes, **headers) -> tuple[int, dict]:
    return post(port, "/api/bundle", data, {"Content-Type": "application/x-tar", "X-Humwatch-Token": TOKEN, **headers})


def _noise(seconds: float) -> np.ndarray:
    return (np.random.default_rng(1).standard_normal(int(seconds * 16_000)) * 0.05).astype(np.float32)


def _config_topics(retained: dict[str, str]) -> set[str]:
    return {topic for topic, payload in retained.items() if topic.endswith("/config") and payload}


def test_a_pushed_bundle_swaps_between_two_hops_and_hostile_pushes_change_nothing(tmp_path):
    base = copy_of_base(tmp_path)
    dehumidifier = toy_bundle(tmp_path / "toy-dehumidifier", labels=("ac", "fridge", "dehumidifier"), run_id="toy-3")
    broker = Broker(tmp_path).start()
    live = LiveProcess(base, tmp_path, ["--deploy-dir", str(tmp_path / "deployed"), "--deploy-max-mb", "5",
                                        "--http-token", TOKEN, "--history", str(tmp_path / "history.sqlite"),
                                        "--mqtt", f"mqtt://127.0.0.1:{broker.port}", "--name", "Kitchen"])
    feeder = live.feed_in_background(_noise(900), speed=5)
    try:
        assert live.wait_for(lambda lines: len(lines) >= 10), live.stderr_path.read_text()
        assert "dehumidifier" not in json.dumps(retained_messages(broker.port))

        hostile = {what: data for what, data in _hostile_archives(base).items()}
        hostile["NaN graph"] = _archive(toy_bundle(tmp_path / "toy-nan", probabilities=(float("nan"), 0.5)))
        hostile["3 s window"] = _archive(toy_bundle(tmp_path / "toy-window", window_sec=3.0))
        answers = {what: _push(live.port, data) for what, data in hostile.items()}
        good = _archive(dehumidifier)
        answers["no token"] = post(live.port, "/api/bundle", good, {"Content-Type": "application/x-tar"})
        answers["wrong token"] = _push(live.port, good, **{"X-Humwatch-Token": "guess"})
        answers["cross-site"] = _push(live.port, good, **{"Sec-Fetch-Site": "cross-site"})
        answers["foreign origin"] = _push(live.port, good, Origin="http://evil.example")
        answers["over the size limit"] = _push(live.port, b"\0" * 7_000_000)
        codes = {what: code for what, (code, _) in answers.items()}
        assert codes == {**{what: 422 for what in hostile}, "no token": 401, "wrong token": 401, "cross-site": 403,
                         "foreign origin": 403, "over the size limit": 413}, answers
        assert "gave [[nan, 0.5]]" in answers["NaN graph"][1]["error"]
        assert "window is 3 s" in answers["3 s window"][1]["error"]
        assert "running model is unchanged" in answers["3 s window"][1]["error"]
        status, running = live.get("/api/bundle")
        assert status == 401  # the bundle endpoints need the token, reads too
        request = urllib.request.Request(f"http://127.0.0.1:{live.port}/api/bundle", headers={"X-Humwatch-Token": TOKEN})
        running = json.loads(urllib.request.urlopen(request, timeout=10).read())
        assert running["current"]["path"] == str(base) and running["previous"] is None
        assert not any("p_dehumidifier" in line for line in live.lines())

        before = len(live.lines())
        code, answer = _push(live.port, good)
        assert code == 200, answer
        assert answer["current"]["run_id"] == "toy-3" and answer["previous"]["path"] == str(base)
        assert live.wait_for(lambda lines: sum("p_dehumidifier" in line for line in lines) >= 10)
        swapped = live.lines()
        assert all("p_dehumidifier" not in line for line in swapped[:before])
        first_new = next(i for i, line in enumerate(swapped) if "p_dehumidifier" in line)
        assert all("p_dehumidifier" in line for line in swapped[first_new:])  # from one hop on, every hop
        times = [line["t"] for line in swapped]
        assert np.allclose(np.diff(times), 1.5), "a hop skipped or repeated around the swap"
        assert swapped[first_new + 3]["status"] == "dehumidifier-on"  # the toy's constant 0.9
        page = json.loads(live.get("/api/page")[1])
        assert [row["name"] for row in page["appliances"]] == ["ac", "fridge", "dehumidifier"]
        assert any(topic.endswith("/dehumidifier/config") for topic in _config_topics(retained_messages(broker.port)))

        code, answer = post(live.port, "/api/bundle/rollback", b"{}",
                             {"Content-Type": "application/json", "X-Humwatch-Token": TOKEN})
        assert code == 200 and answer["current"]["path"] == str(base), answer
        count = len(live.lines())
        assert live.wait_for(lambda lines: len(lines) >= count + 10)
        assert all("p_dehumidifier" not in line for line in live.lines()[count + 2:])
        assert not any(topic.endswith("/dehumidifier/config") for topic in _config_topics(retained_messages(broker.port)))
        assert np.allclose(np.diff([line["t"] for line in live.lines()]), 1.5)
        page = json.loads(live.get("/api/page")[1])
        assert [row["name"] for row in page["appliances"]] == ["ac", "fridge"]
    finally:
        returncode, stderr = live.stop()
        feeder.join(5)
        broker.stop()
    assert returncode == 0, stderr
    deployed = json.loads((tmp_path / "deployed" / "deployed.json").read_text())
    assert deployed["current"]["path"] == str(base)


def test_push_refuses_a_bundle_judged_worse_unless_forced(tmp_path, monkeypatch):
    base = copy_of_base(tmp_path)
    new = toy_bundle(tmp_path / "new", run_id="new-run")
    live = LiveProcess(base, tmp_path, ["--deploy-dir", str(tmp_path / "deployed"), "--http-token", TOKEN])
    feeder = live.feed_in_background(_noise(300), speed=5)
    try:
        assert live.wait_for(lambda lines: len(lines) >= 2), live.stderr_path.read_text()
        url = f"http://127.0.0.1:{live.port}/"
        monkeypatch.setenv("HUMWATCH_HTTP_TOKEN", TOKEN)
        running_sha = json.loads(urllib.request.urlopen(urllib.request.Request(
            url + "api/bundle", headers={"X-Humwatch-Token": TOKEN}), timeout=10).read())["current"]["manifest_sha256"]
        (new / "judged.json").write_text(json.dumps({"verdict": "worse", "against_sha256": running_sha,
                                                     "summary": "worse on 2 of 4 held-out clips"}))
        refused = CliRunner().invoke(main, ["push", url, str(new)])
        assert refused.exit_code == 1 and "not pushed" in refused.output and "worse on 2 of 4" in refused.output
        wrong = CliRunner().invoke(main, ["push", url, str(new), "--token", "guess"])
        assert wrong.exit_code == 1 and "401" in wrong.output
        pushed = CliRunner().invoke(main, ["push", url, str(new), "--force"])
        assert pushed.exit_code == 0, pushed.output
        assert "running" in pushed.output and "new-run" in pushed.output
        rolled = CliRunner().invoke(main, ["rollback", url])
        assert rolled.exit_code == 0 and str(base) in rolled.output, rolled.output
    finally:
        live.stop()
        feeder.join(5)


def test_a_restart_starts_with_the_bundle_pushed_last(tmp_path):
    base = copy_of_base(tmp_path)
    new = toy_bundle(tmp_path / "new", labels=("ac", "fridge", "dehumidifier"), run_id="new-run")
    args = ["--deploy-dir", str(tmp_path / "deployed"), "--http-token", TOKEN]
    first = LiveProcess(base, tmp_path, args, name="first")
    feeder = first.feed_in_background(_noise(120), speed=5)
    try:
        assert first.wait_for(lambda lines: len(lines) >= 2), first.stderr_path.read_text()
        assert _push(first.port, _archive(new))[0] == 200
    finally:
        first.stop()
        feeder.join(5)
    second = LiveProcess(base, tmp_path, args, name="second")
    feeder = second.feed_in_background(_noise(60), speed=5)
    try:
        assert second.wait_for(lambda lines: len(lines) >= 2), second.stderr_path.read_text()
        assert "p_dehumidifier" in second.lines()[0]
    finally:
        returncode, stderr = second.stop()
        feeder.join(5)
    assert "starting with the bundle pushed last" in stderr
    shutil.rmtree(tmp_path / "deployed")


def test_several_monitors_share_one_model_and_a_push_swaps_it_for_all(tmp_path):
    from broker import free_port
    from test_live import FakeSource, eventually
    from test_monitors import TWO, Running, settings_of, write

    port = free_port()
    extra = (f'[http]\nlisten = "127.0.0.1:{port}"\ntoken = "{TOKEN}"\n'
             f'[deploy]\ndir = "{tmp_path / "deployed"}"')
    settings = settings_of(write(tmp_path, TWO.format(bundle=copy_of_base(tmp_path), tmp=tmp_path, extra=extra)))
    sources = {"Kitchen": FakeSource(), "Cellar": FakeSource()}
    no_fridge = _archive(toy_bundle(tmp_path / "no-fridge", labels=("ac", "dehumidifier")))
    three = _archive(toy_bundle(tmp_path / "three", labels=("ac", "fridge", "dehumidifier")))
    with Running(settings, sources) as running:
        kitchen, cellar = running.assembly.monitors
        old = kitchen.detector.classifier
        code, refused = _push(port, no_fridge)  # [levels.fridge] names an appliance it lacks
        assert code == 422 and "fridge" in refused["error"] and kitchen.detector.classifier is old
        assert _push(port, three)[0] == 200
        assert kitchen.detector.classifier is cellar.detector.classifier is not old  # one model, swapped for all
        for source in sources.values():
            source.feed(_noise(12))
        assert eventually(lambda: all(lines and "dehumidifier" in lines[-1].probabilities
                                      for lines in running.lines.values()), 30)
