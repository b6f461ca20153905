"""The Home Assistant add-on (issue 25): its files against the Supervisor's rules, and its start.

The rules are the Supervisor's own (home-assistant/supervisor: supervisor/apps/validate.py's
_SCHEMA_APP_CONFIG, SCHEMA_APP_TRANSLATIONS and RE_VOLUME / RE_SERVICE; apps/options.py's
RE_SCHEMA_ELEMENT and how options are checked against the schema; store/validate.py's
SCHEMA_REPOSITORY_CONFIG), written out here with the keys humwatch uses. Stricter in one way: an
unknown key fails here, where the Supervisor would silently drop it. The start (ha-addon/addon.py,
a script beside config.yaml, imported here by its path) is run against a fake Supervisor on loopback.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import tomllib
import urllib.parse
import zipfile
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from conftest import REPO
from fake_supervisor import MOSQUITTO, FakeSupervisor

from edge.cli import main
from edge.core.bundle import PRECISIONS
from edge.core.options import load_toml, options_of
from edge.monitor.settings import LiveSettings

ADDON = REPO / "ha-addon"
START = ADDON / "addon.py"  # the add-on's start: not part of the humwatch package, so imported by its path
CONFIG = yaml.safe_load((ADDON / "config.yaml").read_text(encoding="utf-8"))


def _load_start():
    spec = importlib.util.spec_from_file_location("humwatch_addon", START)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


addon = _load_start()

# --- the Supervisor's rules (supervisor/apps/validate.py, options.py, store/validate.py)
RE_SLUG = re.compile(r"^[-_.A-Za-z0-9]+$")
ARCHES = {"aarch64", "amd64", "armhf", "armv7", "i386"}
RE_VOLUME = re.compile(r"^(data|config|ssl|local_apps|addons|backup|share|media|homeassistant_config|all_app_configs"
                       r"|all_addon_configs|app_config|addon_config)(?::(rw|ro))?$")
RE_SERVICE = re.compile(r"^(?P<service>mqtt|mysql):(?P<rights>provide|want|need)$")
RE_DOCKER_IMAGE = re.compile(r"^([a-zA-Z\-\.:\d{}]+/)*?([\-\w{}]+)/([\-\w{}]+)$")
RE_DOCKER_IMAGE_BUILD = re.compile(r"^([a-zA-Z\-\.:\d{}]+/)*?([\-\w{}]+)/([\-\w{}]+)(:[\.\-\w{}]+)?$")
RE_SCHEMA_ELEMENT = re.compile(
    r"^(?:|bool|email|url|port|device(?:\((?P<filter>subsystem=[a-z]+)\))?"
    r"|str(?:\((?P<s_min>\d+)?,(?P<s_max>\d+)?\))?|password(?:\((?P<p_min>\d+)?,(?P<p_max>\d+)?\))?"
    r"|int(?:\((?P<i_min>-?\d+)?,(?P<i_max>-?\d+)?\))?|float(?:\((?P<f_min>-?\d*\.?\d+)?,(?P<f_max>-?\d*\.?\d+)?\))?"
    r"|match\((?P<match>.*)\)|list\((?P<list>.+)\))\??$")


def is_bool(value) -> bool:
    return isinstance(value, bool)


def is_port(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 65535


def is_url(value) -> bool:
    parts = urllib.parse.urlparse(value) if isinstance(value, str) else None
    return bool(parts and parts.scheme and parts.netloc)


KEYS = {  # key: check (the keys of _SCHEMA_APP_CONFIG this add-on uses, and the required ones)
    "name": lambda value: isinstance(value, str) and value,
    "version": lambda value: isinstance(value, str) and re.fullmatch(r"\d+(\.\d+)*", value),
    "slug": lambda value: isinstance(value, str) and RE_SLUG.match(value),
    "description": lambda value: isinstance(value, str),
    "arch": lambda value: isinstance(value, list) and value and set(value) <= ARCHES,
    "url": is_url,
    "image": lambda value: isinstance(value, str) and RE_DOCKER_IMAGE.match(value),
    "startup": lambda value: value in {"initialize", "system", "services", "application", "once"},
    "boot": lambda value: value in {"auto", "manual", "manual_only"},
    "stage": lambda value: value in {"stable", "experimental", "deprecated"},
    "audio": is_bool,
    "ingress": is_bool,
    "ingress_port": lambda value: is_port(value) or value == 0,
    "panel_icon": lambda value: isinstance(value, str),
    "panel_title": lambda value: isinstance(value, str),
    "services": lambda value: isinstance(value, list) and all(isinstance(item, str) and RE_SERVICE.match(item) for item in value),
    "map": lambda value: isinstance(value, list) and all(isinstance(item, str) and RE_VOLUME.match(item) for item in value),
    "timeout": lambda value: isinstance(value, int) and 10 <= value <= 300,
    "options": lambda value: isinstance(value, dict),
    "schema": lambda value: isinstance(value, dict),
}
REQUIRED = {"name", "version", "slug", "description", "arch"}


def schema_element_ok(element) -> bool:
    """SCHEMA_ELEMENT: a type string, a list of one type string or dict, or a dict of elements."""
    if isinstance(element, str):
        return bool(RE_SCHEMA_ELEMENT.match(element))
    if isinstance(element, list):
        return len(element) == 1 and isinstance(element[0], (dict, str)) and schema_element_ok(element[0])
    if isinstance(element, dict):
        return all(isinstance(key, str) and schema_element_ok(value) for key, value in element.items())
    return False


def option_errors(schema: dict, options: dict) -> list[str]:
    """AppOptions: every option has a schema entry and a value of its type; no required one is missing."""
    errors = [f"{key}: not in the schema" for key in options if key not in schema]
    for key, element in schema.items():
        if key not in options:
            inner = element[0] if isinstance(element, list) else element
            if not (isinstance(inner, str) and inner.endswith("?")):
                errors.append(f"{key}: required, missing from options")
            continue
        values = options[key] if isinstance(element, list) else [options[key]]
        if isinstance(element, list) and not isinstance(options[key], list):
            errors.append(f"{key}: expected a list")
            continue
        kind = (element[0] if isinstance(element, list) else element).rstrip("?")
        match = RE_SCHEMA_ELEMENT.match(kind)
        for value in values:
            ok = {"str": isinstance(value, str), "password": isinstance(value, str), "bool": is_bool(value),
                  "int": isinstance(value, int) and not is_bool(value), "float": isinstance(value, (int, float)) and not is_bool(value),
                  "port": is_port(value), "url": is_url(value)}.get(re.match(r"[a-z]+", kind).group())
            if kind.startswith("list("):
                ok = str(value) in match.group("list").split("|")
            elif kind.startswith("match("):
                ok = bool(re.match(match.group("match"), str(value)))
            if not ok:
                errors.append(f"{key} = {value!r}: not a {kind}")
    return errors


def test_config_yaml_keeps_the_supervisors_rules():
    unknown = set(CONFIG) - set(KEYS)
    assert not unknown, f"keys the Supervisor does not know (it would drop them): {unknown}"
    assert REQUIRED <= set(CONFIG)
    bad = [key for key, value in CONFIG.items() if not KEYS[key](value)]
    assert not bad, f"wrong type or value: {[(key, CONFIG[key]) for key in bad]}"
    assert set(CONFIG["arch"]) == {"aarch64", "amd64"} and CONFIG["audio"] is True and CONFIG["ingress"] is True
    assert CONFIG["services"] == ["mqtt:want"] and CONFIG["ingress_port"] == addon.INGRESS_PORT
    assert all(schema_element_ok(element) for element in CONFIG["schema"].values()), CONFIG["schema"]
    assert option_errors(CONFIG["schema"], CONFIG["options"]) == []


def test_the_option_checks_can_fail():
    schema = CONFIG["schema"]
    assert option_errors(schema, {**CONFIG["options"], "history": "yes"}) == ["history = 'yes': not a bool"]
    assert option_errors(schema, {**CONFIG["options"], "precision": "fp16"}) == ["precision = 'fp16': not a list(fp32|int8|student)"]
    assert option_errors(schema, {key: value for key, value in CONFIG["options"].items() if key != "bundle"}) == [
        "bundle: required, missing from options"]
    assert option_errors(schema, {**CONFIG["options"], "colour": "red"}) == ["colour: not in the schema"]
    assert not KEYS["map"](["shares:rw"]) and not KEYS["services"](["mqtt:maybe"]) and not schema_element_ok("text?")


def test_the_options_are_humwatch_settings_and_the_versions_agree():
    options = {option.key: option for option in options_of(LiveSettings)}  # by flat key, as the add-on names them
    schema = CONFIG["schema"]
    assert set(schema) - set(addon.SWITCHES) == set(addon.SETTINGS), "every other option is a setting marked addon"
    assert set(addon.PASSED) | set(addon.SECRETS) == set(addon.SETTINGS) <= set(options)
    assert schema["precision"] == f"list({'|'.join(PRECISIONS)})?"
    assert {key for key, element in schema.items() if str(element).startswith("password")} == {
        key for key, option in options.items() if option.meta["secret"]}
    assert addon.SECRETS == {"mqtt_user": "HUMWATCH_MQTT_USER", "mqtt_password": "HUMWATCH_MQTT_PASSWORD",
                             "http_token": "HUMWATCH_HTTP_TOKEN"}
    assert set(addon.LISTS) == {key for key, element in schema.items() if isinstance(element, list)} - set(addon.SWITCHES)
    version = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"]
    assert CONFIG["version"] == version


def test_translations_name_every_option():
    translations = yaml.safe_load((ADDON / "translations" / "en.yaml").read_text(encoding="utf-8"))
    assert set(translations) <= {"configuration", "network"}
    configuration = translations["configuration"]
    assert set(configuration) == set(CONFIG["schema"])
    for key, text in configuration.items():  # SCHEMA_TRANSLATION_CONFIGURATION: name, optional description
        assert isinstance(text.get("name"), str) and text["name"], key
        assert set(text) <= {"name", "description"} and isinstance(text.get("description", ""), str), key


def test_the_page_works_under_the_ingress_path():
    """Home Assistant serves the page at /api/hassio_ingress/TOKEN/: an absolute URL would leave it."""
    page = (REPO / "edge" / "home" / "static" / "page.html").read_text(encoding="utf-8")
    assert "api/page" in page and not re.findall(r"""(?:fetch\(|src = |href=)["'`]/""", page)


def test_repository_yaml_is_at_the_root():
    repository = yaml.safe_load((REPO / "repository.yaml").read_text(encoding="utf-8"))
    assert isinstance(repository["name"], str) and is_url(repository["url"]) and isinstance(repository["maintainer"], str)
    assert repository["url"] == CONFIG["url"]


# --- where the add-on lives: below repository.yaml, beside its own start; nothing at the root reads as Python

SUPERVISOR_SUFFIXES = (".json", ".yaml", ".yml")  # supervisor/const.py's FILE_SUFFIX_CONFIGURATION


def supervisor_finds(repository: Path) -> dict[str, Path]:
    """The add-ons the Supervisor's store finds in a repository's clone, by slug, with their folders
    (store/data.py's _find_addons: every config.json/.yaml/.yml below it, outside folders named .*
    or rootfs; one without a slug fails the add-on schema and is skipped)."""
    found = {}
    for folder, folders, files in os.walk(repository):
        folders[:] = [name for name in folders if not name.startswith(".") and name != "rootfs"]
        for name in files:
            path = Path(folder) / name
            if path.stem == "config" and path.suffix in SUPERVISOR_SUFFIXES:
                config = yaml.safe_load(path.read_text(encoding="utf-8"))  # JSON is YAML too
                if isinstance(config, dict) and isinstance(config.get("slug"), str):
                    found[config["slug"]] = path.parent
    return found


def test_the_supervisor_finds_the_add_on_below_repository_yaml():
    assert (REPO / "repository.yaml").is_file()
    assert supervisor_finds(REPO) == {"humwatch": ADDON}


def test_the_supervisor_check_finds_add_ons_where_the_supervisor_looks(tmp_path):
    for folder, slug in (("deep/down/one", "one"), ("two", "two"), (".hidden", "hidden"), ("x/rootfs", "rootfs")):
        (tmp_path / folder).mkdir(parents=True)
        (tmp_path / folder / "config.yaml").write_text(f"slug: {slug}\n", encoding="utf-8")
    (tmp_path / "two" / "config.json").write_text('{"slug": "two"}', encoding="utf-8")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.yaml").write_text("labels: [ac, fridge]\n", encoding="utf-8")  # not an add-on
    assert supervisor_finds(tmp_path) == {"one": tmp_path / "deep/down/one", "two": tmp_path / "two"}


# --- the local add-on folder (`humwatch addon-folder DIR`): what the Supervisor builds with no published image

ARCH_ALL = {"aarch64", "amd64", "armhf", "armv7", "i386"}  # supervisor/const.py (ARCH_ALL_COMPAT adds aliases)


def build_yaml_errors(build: dict, arches: list[str]) -> list[str]:
    """SCHEMA_BUILD_CONFIG (apps/validate.py): build_from one image or one per architecture, each
    RE_DOCKER_IMAGE_BUILD; args and labels text. AddonBuild.base_image: every arch of config.yaml has one."""
    errors = [f"{key}: unknown" for key in build if key not in {"build_from", "squash", "args", "labels"}]
    images = build.get("build_from", {})
    images = images if isinstance(images, dict) else {arch: images for arch in arches}
    errors += [f"build_from {arch}: not an architecture" for arch in images if arch not in ARCH_ALL]
    errors += [f"build_from {arch}: {image!r} is not namespace/name[:tag]" for arch, image in images.items()
               if not (isinstance(image, str) and RE_DOCKER_IMAGE_BUILD.match(image))]
    errors += [f"build_from: no base for {arch}" for arch in arches if arch not in images]
    return errors


def test_the_build_yaml_check_can_fail():
    assert build_yaml_errors({"build_from": {"amd64": "python:3.11-slim"}}, ["amd64", "aarch64"]) == [
        "build_from amd64: 'python:3.11-slim' is not namespace/name[:tag]", "build_from: no base for aarch64"]
    assert build_yaml_errors({"build_from": "library/python:3.11", "colour": 1}, ["amd64"]) == ["colour: unknown"]


@pytest.fixture(scope="module")
def addon_folder(tmp_path_factory) -> Path:
    """The add-on folder as `humwatch addon-folder DIR` writes it, in a stand-in for Home Assistant's /addons."""
    folder = tmp_path_factory.mktemp("addons") / "humwatch"
    result = CliRunner().invoke(main, ["addon-folder", str(folder)])
    assert result.exit_code == 0, result.output
    assert f"{folder}: the humwatch add-on" in result.output and "Local add-ons" in result.output
    return folder


def test_the_addon_folder_is_a_local_add_on_the_supervisor_builds(addon_folder):
    assert supervisor_finds(addon_folder.parent) == {"humwatch": addon_folder}
    config = yaml.safe_load((addon_folder / "config.yaml").read_text(encoding="utf-8"))
    assert "image" not in config, "with an image the Supervisor pulls it instead of building the folder"
    assert config == {key: value for key, value in CONFIG.items() if key != "image"}
    build = yaml.safe_load((addon_folder / "build.yaml").read_text(encoding="utf-8"))
    assert build_yaml_errors(build, config["arch"]) == []
    assert all("python:3.11-slim-bookworm" in image for image in build["build_from"].values()), "Debian's Python 3.11"
    assert (addon_folder / "requirements.txt").read_bytes() == (REPO / "edge/install/requirements.txt").read_bytes()


def test_the_addon_folders_dockerfile_builds_from_the_supervisors_base_and_the_folder_alone(addon_folder):
    dockerfile = (addon_folder / "Dockerfile").read_text(encoding="utf-8")
    instructions = [line for line in dockerfile.splitlines() if line and not line.startswith(("#", " "))]
    assert instructions[0] == "ARG BUILD_FROM", "the Supervisor's base, declared before the first FROM"
    assert [line.split()[1] for line in instructions if line.startswith("FROM ")] == ["${BUILD_FROM}"] * 2
    sources = [line.split()[1:-1] for line in instructions if line.startswith("COPY ") and "--from" not in line]
    for source in (name for names in sources for name in names):
        assert len(list(addon_folder.glob(source))) == 1, f"COPY {source}: not in the add-on folder"
    assert "--mount" not in dockerfile and "# syntax" not in dockerfile, "older Supervisors build without BuildKit"
    entrypoint = re.search(r"^ENTRYPOINT (.+)$", dockerfile, re.MULTILINE).group(1)
    assert json.loads(entrypoint) == ["python3", "/opt/humwatch-addon/addon.py"] and (addon_folder / "addon.py").is_file()
    wheel = next(addon_folder.glob("humwatch-*.whl"))
    assert wheel.name == f"humwatch-{CONFIG['version']}-py3-none-any.whl"
    with zipfile.ZipFile(wheel) as archive:
        assert "edge/container/health.py" in archive.namelist() and "edge/monitor/live.py" in archive.namelist()


def test_the_addon_folder_is_replaced_whole_and_a_foreign_folder_is_refused(addon_folder, tmp_path):
    (addon_folder / "humwatch-0.0.9-py3-none-any.whl").write_bytes(b"an older wheel")
    again = CliRunner().invoke(main, ["addon-folder", str(addon_folder)])
    assert again.exit_code == 0, again.output
    assert [path.name for path in addon_folder.glob("*.whl")] == [f"humwatch-{CONFIG['version']}-py3-none-any.whl"]
    assert [path.name for path in addon_folder.parent.iterdir()] == ["humwatch"], "no scratch folder left beside it"
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "holiday.jpg").write_bytes(b"")
    refused = CliRunner().invoke(main, ["addon-folder", str(foreign)])
    assert refused.exit_code == 1 and "not an add-on folder written by humwatch" in refused.output
    assert [path.name for path in foreign.iterdir()] == ["holiday.jpg"]


def test_the_repository_add_on_names_the_published_image_and_the_docs_say_which_is_which():
    assert CONFIG["image"] == "ghcr.io/humwatch/{arch}-addon-humwatch"
    docs = (ADDON / "DOCS.md").read_text(encoding="utf-8")
    assert "humwatch addon-folder" in docs and CONFIG["image"].split("/{")[0] in docs and "Local add-ons" in docs
    assert "docs/home-assistant.md" in docs and "docs/containers.md" in docs
    assert not re.search(r"standard input|stdin|source_format|`-`", docs), "an add-on has no standard input"
    assert "source_format" not in CONFIG["schema"]


PACKAGES = {"edge", "train", "export", "tests"}  # the Python at the root, the wheel's packages and the tests


def python_at_the_root(root: Path) -> list[str]:
    """What at a checkout's root reads as Python besides PACKAGES: a module file; a folder named like a
    module that holds Python; anything named humwatch (`import humwatch` in a clone would find it)."""
    found = []
    for path in sorted(root.iterdir()):
        if path.name.startswith((".", "__")):  # .git, .venv, __pycache__
            continue
        if path.is_file() and (path.suffix == ".py" or path.name == "humwatch"):
            found.append(path.name)
        elif path.is_dir() and path.name not in PACKAGES and path.name.isidentifier() and (
                path.name == "humwatch" or next(path.rglob("*.py"), None)):
            found.append(path.name + "/")
    return found


def test_nothing_at_the_root_reads_as_a_python_package():
    assert python_at_the_root(REPO) == []
    assert not ADDON.name.isidentifier(), "the add-on's folder holds Python: its name must not be importable"


def test_the_root_check_finds_what_reads_as_python(tmp_path):
    for folder in ("edge", "samples", "humwatch", "addon", "ha-addon", ".venv"):
        (tmp_path / folder).mkdir()
    for name in ("edge/__init__.py", "addon/run.py", "ha-addon/addon.py", ".venv/site.py", "samples/README.md", "setup.py"):
        (tmp_path / name).write_text("", encoding="utf-8")
    assert python_at_the_root(tmp_path) == ["addon/", "humwatch/", "setup.py"]


# --- the start: options -> settings file (+ environment), MQTT and names from a fake Supervisor

@pytest.fixture
def supervisor(request):
    fake = FakeSupervisor(getattr(request, "param", MOSQUITTO))
    yield fake
    fake.close()


def test_options_become_live_settings_with_the_supervisors_broker(supervisor, tmp_path, caplog):
    options = {**CONFIG["options"], "name": "Kitchen", "source": "rtsp://cam:554/stream1", "precision": "student",
               "alarm": ["fridge-run-max=90m"], "clips": True, "http_host": ["HA.example.org"], "http_token": "s3cret"}
    settings, env = addon.plan(options, addon.Supervisor(supervisor.url, supervisor.TOKEN))
    assert settings["mqtt"] == "mqtt://core-mosquitto:1883"
    assert env == {"HUMWATCH_MQTT_USER": "addons", "HUMWATCH_MQTT_PASSWORD": "Eeph7iex", "HUMWATCH_HTTP_TOKEN": "s3cret"}
    assert settings["http"] == f"0.0.0.0:{CONFIG['ingress_port']}"
    assert settings["http_host"] == ["ha.example.org", "homeassistant", "homeassistant.local"]
    assert settings["history"] == "/data/history.sqlite" and settings["only_changes"] is True
    assert settings["clips"] == "/share/humwatch/clips" and settings["relabel_dir"] == "/share/humwatch/relabel"
    path = tmp_path / "humwatch.toml"
    path.write_text(addon.toml_text(settings, Path("/data/options.json")), encoding="utf-8")
    loaded = load_toml(LiveSettings, path)  # what `humwatch live --config` accepts: known keys, right types
    assert loaded.source == "rtsp://cam:554/stream1" and loaded.precision == "student" and loaded.name == "Kitchen"
    assert loaded.alarm == ("fridge-run-max=90m",) and loaded.http.hosts == ("ha.example.org", "homeassistant", "homeassistant.local")
    assert loaded.clips.dir == Path("/share/humwatch/clips") and loaded.mqtt.url == "mqtt://core-mosquitto:1883"
    assert loaded.deploy.dir == Path("/data/bundles")  # with a token, bundles may be pushed (kept in /data)
    assert "Eeph7iex" not in path.read_text() and "s3cret" not in path.read_text()  # credentials: the environment only
    assert "is now" not in caplog.text, "the add-on writes the settings in sections"


@pytest.mark.parametrize("supervisor", [None], indirect=True)
def test_no_broker_from_the_supervisor_means_no_mqtt(supervisor, caplog):
    caplog.set_level("INFO")
    settings, env = addon.plan(CONFIG["options"], addon.Supervisor(supervisor.url, supervisor.TOKEN))
    assert "mqtt" not in settings and env == {}
    assert "Service not enabled" in caplog.text and "MQTT: none" in caplog.text


def test_an_mqtt_option_beats_the_supervisor_and_no_token_asks_nothing(supervisor):
    options = {**CONFIG["options"], "mqtt": "mqtts://broker.lan:8883", "mqtt_user": "me", "mqtt_password": "pw"}
    settings, env = addon.plan(options, addon.Supervisor(supervisor.url, supervisor.TOKEN))
    assert settings["mqtt"] == "mqtts://broker.lan:8883" and env == {"HUMWATCH_MQTT_USER": "me", "HUMWATCH_MQTT_PASSWORD": "pw"}
    assert "/services/mqtt" not in supervisor.requests
    supervisor.requests.clear()
    settings, env = addon.plan(CONFIG["options"], addon.Supervisor(supervisor.url, token=None))
    assert supervisor.requests == [] and "mqtt" not in settings and settings["http_host"] == []


def test_a_wrong_token_is_refused_and_the_add_on_goes_on_without_mqtt(supervisor):
    settings, _ = addon.plan(CONFIG["options"], addon.Supervisor(supervisor.url, "f" * 32))
    assert "mqtt" not in settings and supervisor.requests == ["/info", "/services/mqtt"]


def _start(tmp_path, options, supervisor, *live_options, token=FakeSupervisor.TOKEN):
    (tmp_path / "options.json").write_text(json.dumps(options), encoding="utf-8")
    command = [sys.executable, START, "--options", tmp_path / "options.json",
               "--config", tmp_path / "humwatch.toml", "--supervisor", supervisor.url, "--", *live_options]
    env = {"PATH": "/usr/bin:/bin", "SUPERVISOR_TOKEN": token}
    return subprocess.run([str(part) for part in command], capture_output=True, text=True, env=env, cwd=REPO, timeout=60)


def test_the_start_writes_the_settings_and_becomes_humwatch_live(supervisor, bundle_dir, tmp_path):
    result = _start(tmp_path, {**CONFIG["options"], "bundle": str(bundle_dir)}, supervisor, "--print-config")
    assert result.returncode == 0, result.stderr
    shown = tomllib.loads(result.stdout)  # humwatch live --config humwatch.toml --print-config, the secrets from the environment
    assert shown["mqtt"]["url"] == "mqtt://core-mosquitto:1883" and shown["mqtt"]["user"] == "addons"
    assert shown["mqtt"]["password"] == "***" and "is now" not in result.stderr
    assert shown["bundle"] == str(bundle_dir) and shown["http"]["listen"] == "0.0.0.0:8321" and shown["name"] == "humwatch"
    assert tomllib.loads((tmp_path / "humwatch.toml").read_text())["http"]["hosts"] == ["homeassistant", "homeassistant.local"]


def test_the_start_says_where_the_bundle_belongs(supervisor, tmp_path):
    result = _start(tmp_path, CONFIG["options"], supervisor)
    assert result.returncode == 1 and not (tmp_path / "humwatch.toml").exists()
    assert "bundle '/share/humwatch/bundle': no bundle.json there" in result.stderr and "Samba" in result.stderr
    (tmp_path / "options.json").write_text("{not json", encoding="utf-8")
    broken = subprocess.run([sys.executable, START, "--options", str(tmp_path / "options.json")],
                            capture_output=True, text=True, cwd=REPO)
    assert broken.returncode == 1 and f"{tmp_path / 'options.json'}: not JSON" in broken.stderr


@pytest.mark.parametrize("option, value, message", [
    ("name", "Kit\u0007chen", "name: 'Kit\\x07chen': a control character, U+0007, at character 4; remove it"),
    ("name", "\ud800", "name: '\\ud800': a lone surrogate (not UTF-8 text), U+D800, at character 1"),
    ("name", 42, "name = 42: expected string"),
    ("source", 554, "source = 554: expected string"),
    ("source", "-", "source '-' is raw PCM on standard input, which an add-on does not have"),
    ("alarm", ["fridge-run-max=90m", 90], "alarm = 90: expected string"),
    ("http_host", [["a"]], "http_host = ['a']: expected string"),
    ("cpu_budget", float("nan"), "cpu_budget: nan is not a number in the range 0<x<=1"),
    ("clips_max_mb", float("inf"), "clips_max_mb: inf is not in the range 1<=x<=1000000"),
    ("history_days", 10**20, "history_days: 1e+20 is not in the range 1<=x<=36500"),
    ("hop", "inf", "hop: --hop 'inf': expected seconds"),
    ("history", "false", "history = 'false': expected true or false"),
    ("mqtt", "mqtt://me:hunter2@broker\n", "mqtt: 'mqtt://***@broker\\n': a control character, U+000A"),
    ("mqtt_password", "hunter2\u0000", "mqtt_password: ***: a control character, U+0000"),
    ("http_token", 1234, "http_token = ***: expected string"),
])
def test_options_that_humwatch_would_refuse_are_one_line_naming_the_option(tmp_path, option, value, message):
    path = tmp_path / "options.json"
    with pytest.raises(addon.AddonError) as error:
        addon.check_options({**CONFIG["options"], option: value}, path)
    assert str(error.value).startswith(f"{path}: ") and message in str(error.value), str(error.value)
    assert "hunter2" not in str(error.value) and "1234" not in str(error.value)


def test_one_text_where_a_list_is_wanted_is_a_list_of_one(supervisor, tmp_path):
    options = addon.check_options({**CONFIG["options"], "alarm": "fridge-run-max=90m", "http_host": "HA.example.org",
                                   "name": "K\u00fcche \"S\u00fcd\" \\ \U0001F600"}, tmp_path / "options.json")
    settings, _ = addon.plan(options, addon.Supervisor(supervisor.url, supervisor.TOKEN))
    written = tomllib.loads(addon.toml_text(settings, Path("/data/options.json")))
    assert written["alarm"] == ["fridge-run-max=90m"] and written["name"] == "K\u00fcche \"S\u00fcd\" \\ \U0001F600"
    assert written["http"]["hosts"] == ["ha.example.org", "homeassistant", "homeassistant.local"]


def test_an_option_that_is_not_utf8_stops_the_start_with_one_line(supervisor, tmp_path):
    """JSON may hold "\\ud800", which no UTF-8 file can: the Supervisor's options.json as written."""
    bundle = REPO / "tests" / "fixtures" / "bundle-v2"
    (tmp_path / "options.json").write_text(json.dumps({**CONFIG["options"], "bundle": str(bundle), "name": "\ud800"}),
                                           encoding="utf-8")
    command = [sys.executable, START, "--options", tmp_path / "options.json",
               "--config", tmp_path / "humwatch.toml", "--supervisor", supervisor.url]
    result = subprocess.run([str(part) for part in command], capture_output=True, text=True, cwd=REPO, timeout=60,
                            env={"PATH": "/usr/bin:/bin", "SUPERVISOR_TOKEN": FakeSupervisor.TOKEN})
    assert result.returncode == 1 and "Traceback" not in result.stderr and not (tmp_path / "humwatch.toml").exists()
    assert f"{tmp_path / 'options.json'}: name: '\\ud800': a lone surrogate (not UTF-8 text)" in result.stderr
