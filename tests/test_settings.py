"""One settings object for `humwatch live`, from a TOML file and/or the command line."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import REPO

from edge.cli import main
from edge.commands import live
from edge.core.options import SettingsError, load_toml, to_toml
from edge.monitor.settings import LiveSettings

EXAMPLE = REPO / "edge" / "systemd" / "humwatch.toml"


def print_config(*args: str, env: dict | None = None) -> dict:
    result = CliRunner().invoke(main, ["live", *args, "--print-config"], env=env)
    assert result.exit_code == 0, result.output
    return tomllib.loads(result.output)


def test_every_live_option_has_a_key_and_every_key_an_option():
    options = {param.name for param in live.params} - {"config", "print_config"}
    assert options == {field.name for field in dataclasses.fields(LiveSettings)}
    flags = {opt for param in live.params for opt in param.opts}
    assert all(f"--{field.name.replace('_', '-')}" in flags for field in dataclasses.fields(LiveSettings))


def test_the_example_file_loads_and_is_what_the_unit_runs():
    values = load_toml(LiveSettings, EXAMPLE)
    settings = LiveSettings(**values)
    assert settings.bundle == Path("/var/lib/humwatch/bundle") and settings.name == "Kitchen"
    assert settings.alarm == ("fridge-run-max=90m", "fridge-off-max=6h") and settings.only_changes is True
    assert settings.history == Path("/var/lib/humwatch/history.sqlite") and settings.http == "8321"
    unit = (REPO / "edge" / "systemd" / "humwatch-live.service").read_text()
    assert "humwatch live --config /etc/humwatch/humwatch.toml" in unit


def test_print_config_shows_the_file_with_the_command_line_on_top(tmp_path):
    config = tmp_path / "humwatch.toml"
    config.write_text('bundle = "/b"\nname = "Kitchen"\ncpu_budget = 0.25\nalarm = ["fridge-run-max=90m"]\n'
                      'median_sec = 6\nhop = 1.5\n')
    shown = print_config("--config", str(config), "--name", "Cellar", "--alarm", "ac-run-max=3h")
    assert shown["name"] == "Cellar" and shown["cpu_budget"] == 0.25 and shown["median_sec"] == 6.0
    assert shown["alarm"] == ["ac-run-max=3h"] and shown["bundle"] == "/b" and shown["hop"] == "1.5"
    assert print_config("--config", str(config))["name"] == "Kitchen"


def test_print_config_masks_secrets(tmp_path):
    config = tmp_path / "humwatch.toml"
    config.write_text('bundle = "/b"\nmqtt = "mqtt://homeassistant:hunter2@broker:1883"\nmqtt_password = "pw-file"\n'
                      'source = "rtsp://admin:camera-secret@cam.local/stream1"\n')
    result = CliRunner().invoke(main, ["live", "--config", str(config), "--http-token", "tok-cli", "--print-config"],
                                env={"HUMWATCH_MQTT_USER": "homeassistant"})
    assert result.exit_code == 0, result.output
    for secret in ("hunter2", "pw-file", "tok-cli", "camera-secret"):
        assert secret not in result.output
    shown = tomllib.loads(result.output)
    assert shown["mqtt_password"] == "***" and shown["http_token"] == "***" and shown["mqtt_user"] == "homeassistant"
    assert shown["mqtt"].endswith("@broker:1883") and shown["source"].endswith("@cam.local/stream1")


def test_the_environment_beats_the_file(tmp_path):
    config = tmp_path / "humwatch.toml"
    config.write_text('bundle = "/b"\nmqtt_user = "from-file"\n')
    assert print_config("--config", str(config), env={"HUMWATCH_MQTT_USER": "from-env"})["mqtt_user"] == "from-env"


@pytest.mark.parametrize("text, message", [
    ('bundle = "/b"\ncpu_budet = 0.3\n', "unknown key 'cpu_budet'"),
    ('cpu_budget = "0.3"\n', "cpu_budget = '0.3': expected number"),
    ('cpu_budget = 3.0\n', "cpu_budget: 3.0 is not in the range 0<x<=1"),
    ('only_changes = "yes"\n', "only_changes = 'yes': expected true/false"),
    ('alarm = "fridge-run-max=90m"\n', "alarm = 'fridge-run-max=90m': expected a list"),
    ('threads = 2.5\n', "threads = 2.5: expected integer"),
    ('precision = "int4"\n', "precision: 'int4' is not one of"),
    ('bundle = \n', "not valid TOML"),
    ('hop = "often"\n', "hop: --hop 'often': expected seconds (e.g. 1.5) or 'auto'"),
])
def test_a_bad_file_is_one_error_naming_the_key_and_the_file(tmp_path, text, message):
    config = tmp_path / "bad.toml"
    config.write_text(text)
    with pytest.raises(SettingsError) as error:
        load_toml(LiveSettings, config)
    assert str(config) in error.value.message and message in error.value.message
    result = CliRunner().invoke(main, ["live", "--config", str(config), "--print-config"])
    assert result.exit_code == 1 and message in result.output and "Traceback" not in result.output


def test_a_missing_config_file_is_named(tmp_path):
    result = CliRunner().invoke(main, ["live", "--config", str(tmp_path / "none.toml"), "--print-config"])
    assert result.exit_code == 1 and "none.toml: cannot read it" in result.output


def test_live_without_a_bundle_says_where_to_give_one():
    result = CliRunner().invoke(main, ["live", "--source", "-", "--source-format", "s16le:16000:1"])
    assert result.exit_code == 1 and "no bundle: pass --bundle DIR or set bundle" in result.output


def test_level_overrides_any_appliance_and_a_bad_one_is_named(tmp_path):
    from edge.core.decision import DecisionOverrides
    from edge.engine.settings import DetectorSettings

    settings = DetectorSettings(t_ac=0.6, level=("t_dehumidifier=0.4", "dehumidifier_on=0.9"))
    assert settings.decision_overrides() == DecisionOverrides({"ac": {"threshold": 0.6},
                                                               "dehumidifier": {"threshold": 0.4, "on": 0.9}})
    for bad in ("t_ac=1.5", "t_ac", "=0.5", "t_ac=x"):
        result = CliRunner().invoke(main, ["batch", "--bundle", str(tmp_path), "--level", bad, str(tmp_path)])
        assert result.exit_code == 2 and f"'--level': {bad!r}: expected KEY=P" in result.output, result.output
    config = tmp_path / "humwatch.toml"
    config.write_text('level = ["t_dehumidifier=0.4"]\n')
    assert load_toml(LiveSettings, config)["level"] == ("t_dehumidifier=0.4",)
    config.write_text('level = ["t_dehumidifier=4"]\n')
    with pytest.raises(SettingsError, match=r"level.*t_dehumidifier=4"):
        load_toml(LiveSettings, config)


def test_a_level_for_an_appliance_the_bundle_lacks_is_refused_naming_it(tmp_path):
    import numpy as np
    import soundfile

    path = tmp_path / "ac-on-fridge-off-day.wav"
    soundfile.write(path, np.zeros(16_000 * 7, dtype=np.float32), 16_000)
    bundle = Path(__file__).parent / "fixtures" / "bundle-v2"
    result = CliRunner().invoke(main, ["batch", "--bundle", str(bundle), "--level", "t_washer=0.5", str(path)])
    assert result.exit_code == 1
    assert "washer: not an appliance of these levels (ac, fridge)" in result.output, result.output


@pytest.mark.parametrize("key, value, message, typed, bounds", [
    ("max_lag", "nan", "max_lag: nan is not a number in the range 0<=x<=600", "nan", "0<=x<=600"),
    ("max_lag", "-1.0", "max_lag: -1.0 is not in the range 0<=x<=600", "-1", "0<=x<=600"),
    ("hop", '"inf"', "hop: --hop 'inf': expected seconds (e.g. 1.5) or 'auto'; a hop is 0.1 to 60 s", "inf",
     "a hop is 0.1 to 60 s"),
    ("hop", "1e-300", "hop: --hop '1e-300': expected seconds", "1e-300", "a hop is 0.1 to 60 s"),
    ("clips_max_mb", "inf", "clips_max_mb: inf is not in the range 1<=x<=1000000", "inf", "1<=x<=1000000"),
    ("threads", "1e20", "threads = 1e+20: expected integer in the range 1<=x<=1024", "1e20", "'1e20'"),
    ("threads", "100000000000000000000", "threads: 100000000000000000000 is not in the range 1<=x<=1024",
     "100000000000000000000", "1<=x<=1024"),
    ("cpu_budget", "nan", "cpu_budget: nan is not a number in the range 0<x<=1", "nan", "0<x<=1"),
    ("clips_seconds", "1e9", "clips_seconds: 1000000000.0 is not in the range 1<=x<=600", "1e9", "1<=x<=600"),
    ("median_sec", "1e300", "median_sec: 1e+300 is not in the range 0<x<=3600", "1e300", "0<x<=3600"),
    ("history_days", "1e308", "history_days: 1e+308 is not in the range 1<=x<=36500", "1e308", "1<=x<=36500"),
    ("mqtt_heartbeat", "inf", "mqtt_heartbeat: inf is not in the range 1<=x<=86400", "inf", "1<=x<=86400"),
    ("audit_fallback", "nan", "audit_fallback: nan is not a number in the range 0<=x<=1", "NaN", "0<=x<=1"),
])
def test_every_number_is_finite_and_in_its_range_in_the_file_and_on_the_command_line(tmp_path, key, value, message,
                                                                                      typed, bounds):
    config = tmp_path / "humwatch.toml"
    config.write_text(f'bundle = "/b"\n{key} = {value}\n')
    from_file = CliRunner().invoke(main, ["live", "--config", str(config), "--print-config"])
    assert from_file.exit_code == 1 and f"{config}: {message}" in from_file.output, from_file.output
    option = f"--{key.replace('_', '-')}"
    typed_in = CliRunner().invoke(main, ["live", "--bundle", "/b", f"{option}={typed}", "--print-config"])
    assert typed_in.exit_code == 2 and f"Invalid value for '{option}'" in typed_in.output, typed_in.output
    assert bounds in typed_in.output and "Traceback" not in from_file.output + typed_in.output


HOSTILE = r'''K\u00fcche \"S\u00fcd\" \\ back\\slash \U0001F600 # = [x] 'q' \u2028'''  # inside a TOML basic string


def test_print_config_is_toml_that_reads_back_to_the_same_settings(tmp_path):
    config = tmp_path / "humwatch.toml"
    config.write_text(f'bundle = "/b {HOSTILE}"\nthreads = 1024\ncpu_budget = 1e-3\nhop = 0.1\nmax_lag = 0\n'
                      f'level = ["t_k\u00fchl=0.5"]\nhttp_host = ["{HOSTILE}", "pi.local"]\n\n'
                      f'[[monitor]]\nname = "{HOSTILE}"\nhistory = "/h/{HOSTILE}.sqlite"\nalarm = ["fridge-run-max=90m"]\n\n'
                      f'[[monitor]]\nname = "Cellar"\nsource = "-"\nsource_format = "s16le:48000:1"\n', encoding="utf-8")
    printed = CliRunner().invoke(main, ["live", "--config", str(config), "--print-config"])
    assert printed.exit_code == 0, printed.output
    shown = tomllib.loads(printed.output)  # valid TOML ...
    assert shown["monitor"][0]["name"] == tomllib.loads(config.read_text(encoding="utf-8"))["monitor"][0]["name"]
    assert shown["http_host"][0].endswith("\U0001F600 # = [x] 'q' \u2028") and shown["threads"] == 1024
    again = tmp_path / "printed.toml"
    again.write_text(printed.output, encoding="utf-8")
    reprinted = CliRunner().invoke(main, ["live", "--config", str(again), "--print-config"])
    assert reprinted.output == printed.output  # ... that reads back to the same settings


def test_any_text_a_setting_holds_is_written_as_toml():
    """Settings made in Python are checked by no option: their text still becomes valid TOML, control
    characters escaped; a lone surrogate, which TOML cannot hold, is an error naming it."""
    text = "a\x00\x07\t\n\r\x1b\x7f\x85\"\\\U0001F600z"
    settings = LiveSettings(name=text, alarm=(text,), max_lag=1e-300, history=Path(text))
    shown = tomllib.loads(to_toml(settings))
    assert shown["name"] == text and shown["alarm"] == [text] and shown["history"] == text and shown["max_lag"] == 1e-300
    with pytest.raises(ValueError, match="U\\+D800 is a lone surrogate"):
        to_toml(LiveSettings(name="a\ud800"))


@pytest.mark.parametrize("text, message", [
    ('name = "Kit\\u0007chen"\n', "name: 'Kit\\x07chen': a control character, U+0007, at character 4; remove it"),
    ('source = "rtsp://u:hunter2@cam/s\\n"\n', "source: 'rtsp://***@cam/s\\n': a control character, U+000A"),
    ('http_host = ["pi.local", "a\\tb"]\n', "http_host: 'a\\tb': a control character, U+0009, at character 2"),
    ('history = "/h\\u001b.sqlite"\n', "history: '/h\\x1b.sqlite': a control character, U+001B"),
    ('mqtt_password = "hunter2\\u0000"\n', "mqtt_password: ***: a control character, U+0000, at character 8"),
    ('mqtt_password = 1234\n', "mqtt_password = ***: expected string"),
])
def test_text_with_control_characters_is_refused_naming_the_key_and_never_a_secret(tmp_path, text, message):
    config = tmp_path / "humwatch.toml"
    config.write_text(text)
    result = CliRunner().invoke(main, ["live", "--config", str(config), "--print-config"])
    assert result.exit_code == 1 and f"{config}: {message}" in result.output, result.output
    assert "hunter2" not in result.output and "1234" not in result.output


def test_text_that_is_not_utf8_is_refused_on_the_command_line():
    """A name typed in another encoding reaches Python as lone surrogates (os.fsdecode)."""
    result = CliRunner().invoke(main, ["live", "--bundle", "/b", "--name", "K\udcfcche", "--print-config"])
    assert result.exit_code == 2 and "Invalid value for '--name': 'K\\udcfcche': a lone surrogate (not UTF-8 text)" \
        in result.output, result.output
    secret = CliRunner().invoke(main, ["live", "--bundle", "/b", "--print-config"], env={"HUMWATCH_HTTP_TOKEN": "t\udcfc"})
    assert secret.exit_code == 2 and "'--http-token': ***: a lone surrogate" in secret.output, secret.output
