"""The Home Assistant add-on's start: /data/options.json -> /data/humwatch.toml -> `humwatch live`.

    python3 addon.py [--options FILE] [--config FILE] [--supervisor URL] [-- LIVE-OPTIONS...]

A script beside the add-on's config.yaml, not part of the humwatch package: the add-on's image
copies it to /opt/humwatch-addon/addon.py and runs it with the image's python3, which imports edge.
The Supervisor keeps the user's options (checked against the schema in config.yaml, beside this) in
/data/options.json. Most are `humwatch live` settings (those marked `addon` on their fields) under
their flat key, the long option's name (mqtt_user: [mqtt] user); the add-on adds what it
decides itself: the page on the ingress port for Home Assistant's proxy (the names Home Assistant
is opened by allowed as Host), the history in /data, clips under /share/humwatch, and the MQTT
broker the Supervisor offers (its services API) unless the options name one. Credentials go to
the environment (HUMWATCH_MQTT_USER, ...), never into the file. Every option is checked first by
`humwatch live`'s own rules (a wrong type, a number out of range, a control character or text that
is not UTF-8 is one log line naming the option; one text where a list is wanted is a list of one).
Then this process becomes `humwatch live --config /data/humwatch.toml` (plus LIVE-OPTIONS, e.g.
--print-config).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from edge.core.options import SettingsError, check_values, options_of, values_toml
from edge.core.redact import log_to_stderr
from edge.monitor.settings import LiveSettings

log = logging.getLogger("humwatch.addon")

INGRESS_PORT = 8321  # config.yaml's ingress_port
DATA = Path("/data")
SHARE = Path("/share/humwatch")
SUPERVISOR = "http://supervisor"
SETTINGS = {option.key: option for option in options_of(LiveSettings) if option.meta["addon"]}  # by flat key
# Credentials: the environment variable `humwatch live` reads each from, never the file.
SECRETS = {key: option.meta["env"] for key, option in SETTINGS.items() if option.meta["env"]}
PASSED = tuple(key for key in SETTINGS if key not in SECRETS)  # written into the settings file as they are
SWITCHES = ("history", "clips")  # the add-on's own options: true or false
LISTS = tuple(key for key, option in SETTINGS.items() if option.meta["multiple"])


class AddonError(Exception):
    """Options the add-on cannot start with; the message says which and what to do."""


class Supervisor:
    """The Supervisor's REST API as an add-on sees it (SUPERVISOR_TOKEN; no token: not under a Supervisor)."""

    def __init__(self, url: str = SUPERVISOR, token: str | None = None, timeout: float = 10.0) -> None:
        self.url, self.token, self.timeout = url.rstrip("/"), token, timeout

    def get(self, path: str) -> dict[str, Any] | None:
        """The `data` of GET path, or None (logged) when there is no Supervisor or it says no."""
        if not self.token:
            return None
        request = urllib.request.Request(self.url + path, headers={"Authorization": f"Bearer {self.token}"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as answer:
                body = json.loads(answer.read())
        except urllib.error.HTTPError as error:
            said = error.read(500).decode("utf-8", "replace")
            try:
                said = json.loads(said).get("message", said)
            except (ValueError, AttributeError):
                pass
            log.info("Supervisor %s: %s %s", path, error.code, said)
            return None
        except (urllib.error.URLError, OSError, ValueError) as error:
            log.warning("Supervisor %s: no answer (%s)", path, getattr(error, "reason", error))
            return None
        data = body.get("data") if isinstance(body, dict) and body.get("result") == "ok" else None
        return data if isinstance(data, dict) else None

    def mqtt(self) -> dict[str, Any] | None:
        """The MQTT broker the Supervisor offers (host, port, ssl, username, password), if any."""
        data = self.get("/services/mqtt")
        return data if data and data.get("host") and data.get("port") else None

    def hostnames(self) -> list[str]:
        """The names this Home Assistant is opened by on the network: its host name and NAME.local."""
        name = (self.get("/info") or {}).get("hostname")
        return [name, f"{name}.local"] if isinstance(name, str) and name else []


def read_options(path: Path) -> dict[str, Any]:
    try:
        options = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise AddonError(f"{path}: cannot read the add-on's options ({error.strerror or error})") from error
    except ValueError as error:
        raise AddonError(f"{path}: not JSON ({error})") from error
    if not isinstance(options, dict):
        raise AddonError(f"{path}: expected a JSON object of options")
    return options


def check_options(options: dict[str, Any], path: Path) -> dict[str, Any]:
    """The options as :func:`plan` takes them, checked by `humwatch live`'s rules (one text where a
    list is wanted becomes a list of one); an AddonError names the option, the value and the fix."""
    options = {key: [value] if isinstance(value, str) and key in LISTS else value for key, value in options.items()}
    for key in SWITCHES:
        if not isinstance(options.get(key, False), bool):
            raise AddonError(f"{path}: {key} = {options[key]!r}: expected true or false")
    if options.get("source") == "-":
        raise AddonError(f"{path}: source '-' is raw PCM on standard input, which an add-on does not have: leave "
                         "'source' empty for Home Assistant's audio input, or give a camera's rtsp:// URL")
    given = {key: value for key, value in options.items() if key in SETTINGS and value not in (None, "", [])}
    try:
        check_values(LiveSettings, given, path)
    except SettingsError as error:
        raise AddonError(error.message) from None
    return options


def plan(options: dict[str, Any], supervisor: Supervisor) -> tuple[dict[str, Any], dict[str, str]]:
    """The settings file's values and the environment (the credentials) for the options."""
    given = {key: value for key, value in options.items() if value not in (None, "", [])}
    settings: dict[str, Any] = {key: given[key] for key in PASSED if key in given}
    env = {SECRETS[key]: str(given[key]) for key in SECRETS if key in given}
    settings["only_changes"] = True  # the add-on's log: one line per change
    settings["http"] = f"0.0.0.0:{INGRESS_PORT}"
    names = [*settings.get("http_host", []), *supervisor.hostnames()]
    settings["http_host"] = list(dict.fromkeys(name.lower() for name in names))
    if given.get("history", True):
        settings["history"] = str(DATA / "history.sqlite")
    if given.get("clips", False):
        settings["clips"] = str(SHARE / "clips")
        settings["relabel_dir"] = str(SHARE / "relabel")
    if "http_token" in given:  # 'humwatch push' needs the token: with one, pushed bundles are kept in /data
        settings["deploy_dir"] = str(DATA / "bundles")
    if "mqtt" not in settings:
        broker = supervisor.mqtt()
        if broker:
            host = f"[{broker['host']}]" if ":" in str(broker["host"]) else broker["host"]
            settings["mqtt"] = f"{'mqtts' if broker.get('ssl') else 'mqtt'}://{host}:{int(broker['port'])}"
            for field, key in (("mqtt_user", "username"), ("mqtt_password", "password")):
                if broker.get(key):
                    env[SECRETS[field]] = str(broker[key])
            log.info("MQTT: the Supervisor's broker %s", settings["mqtt"])
        else:
            log.info("MQTT: none (no broker from the Supervisor and no 'mqtt' option): Home Assistant gets no entities")
    return settings, env


def toml_text(settings: dict[str, Any], options: Path) -> str:
    """The settings ({flat key: value}) as a settings file of `humwatch live`."""
    return (f"# Written by the humwatch add-on from {options} at every start: change the add-on's options,\n"
            "# not this file. The keys are humwatch live's options (docs/reference.md: the settings file).\n"
            + values_toml(LiveSettings, settings))


def write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)


def check_bundle(settings: dict[str, Any]) -> None:
    bundle = Path(settings.get("bundle", ""))
    if not (bundle / "bundle.json").is_file():
        raise AddonError(f"bundle {str(bundle)!r}: no bundle.json there. Copy the bundle folder from `humwatch export` "
                         f"to {SHARE / 'bundle'} (the 'share' folder of the Samba or SSH add-on), or set the "
                         "'bundle' option to where it is")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--options", type=Path, default=DATA / "options.json", help="the Supervisor's options file")
    parser.add_argument("--config", type=Path, default=DATA / "humwatch.toml", help="the settings file to write")
    parser.add_argument("--supervisor", default=SUPERVISOR, help="the Supervisor's API")
    parser.add_argument("live_options", nargs="*", help="after --: more options for humwatch live")
    args = parser.parse_args(argv)
    log_to_stderr()
    try:
        options = check_options(read_options(args.options), args.options)
        settings, env = plan(options, Supervisor(args.supervisor, os.environ.get("SUPERVISOR_TOKEN")))
        check_bundle(settings)
        write_atomically(args.config, toml_text(settings, args.options))
    except (AddonError, OSError) as error:
        log.error("%s", error)
        return 1
    humwatch = str(Path(sys.executable).with_name("humwatch"))  # the venv's, beside this interpreter
    os.execve(humwatch, [humwatch, "live", "--config", str(args.config), *args.live_options], {**os.environ, **env})
    return 1  # not reached: execve replaces this process


if __name__ == "__main__":
    sys.exit(main())
