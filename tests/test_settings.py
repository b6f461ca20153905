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
from edge.monitor.settings import LiveSettings, SettingsError, load_toml

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
    from edge.monitor.settings import DetectorSettings

    settings = DetectorSettings(t_ac=0.6, level=("t_dehumidifier=0.4", "dehumidifier_on=0.9"))
    assert settings.decision_overrides() == {"t_ac": 0.6, "t_dehumidifier": 0.4, "dehumidifier_on": 0.9}
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
    assert "t_washer: not a decision setting of these appliances (ac, fridge)" in result.output, result.output
