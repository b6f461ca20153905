"""One settings object for `humwatch live`, from a TOML file and/or the command line."""

from __future__ import annotations

import dataclasses
import logging
import re
import signal
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import REPO

from edge.cli import main
from edge.commands import live, stream
from edge.core.decision import DecisionOverrides
from edge.core.options import SettingsError, build, load_toml, merge, options_of, to_toml
from edge.engine.settings import LEVELS, DetectorSettings
from edge.monitor.settings import LiveSettings

EXAMPLE = REPO / "edge" / "systemd" / "humwatch.toml"
# The options of `humwatch live` before sections (issue 30): every flag users have stays.
FLAGS = ("bundle precision threads hop cpu_budget signal_floor_dbfs median_sec debounce_sec t_ac t_fridge ac_on ac_off "
         "fridge_on fridge_off level source source_format device only_changes output max_lag name mqtt mqtt_user "
         "mqtt_password mqtt_device_id mqtt_heartbeat http http_token http_host relabel_dir clips clips_seconds "
         "clips_max_mb history history_days alarm watts audit_every_sec audit_max_rate audit_fallback").split()


def print_config(*args: str, env: dict | None = None) -> dict:
    result = CliRunner().invoke(main, ["live", *args, "--print-config"], env=env)
    assert result.exit_code == 0, result.output
    return tomllib.loads(result.output)


def test_every_live_option_has_a_key_and_every_key_an_option():
    options = {param.name for param in live.params} - {"config", "print_config"}
    assert options == {option.key for option in options_of(LiveSettings)} | set(LEVELS.aliases)
    flags = {opt for param in live.params for opt in param.opts}
    assert {f"--{name.replace('_', '-')}" for name in FLAGS} <= flags, "every flag users have is still there"
    assert {option.spelled() for option in options_of(LiveSettings) if option.section} >= {
        "[mqtt] url", "[mqtt] user", "[http] listen", "[http] hosts", "[clips] dir", "[clips] relabel_dir",
        "[audit] every_sec"}


def test_the_example_file_loads_and_is_what_the_unit_runs(caplog):
    settings = load_toml(LiveSettings, EXAMPLE)
    assert settings.bundle == Path("/var/lib/humwatch/bundle") and settings.name == "Kitchen"
    assert settings.alarm == ("fridge-run-max=90m", "fridge-off-max=6h") and settings.only_changes is True
    assert settings.history == Path("/var/lib/humwatch/history.sqlite") and settings.http.listen == "8321"
    assert settings.clips.dir == Path("/var/lib/humwatch/clips") and settings.clips.max_mb == 500.0
    assert "is now" not in caplog.text, "the shipped file is written in sections"
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
    config.write_text('bundle = "/b"\nsource = "rtsp://admin:camera-secret@cam.local/stream1"\n'
                      '[mqtt]\nurl = "mqtt://homeassistant:hunter2@broker:1883"\npassword = "pw-file"\n')
    result = CliRunner().invoke(main, ["live", "--config", str(config), "--http-token", "tok-cli", "--print-config"],
                                env={"HUMWATCH_MQTT_USER": "homeassistant"})
    assert result.exit_code == 0, result.output
    for secret in ("hunter2", "pw-file", "tok-cli", "camera-secret"):
        assert secret not in result.output
    shown = tomllib.loads(result.output)
    mqtt = shown["mqtt"]
    assert mqtt["password"] == "***" and shown["http"]["token"] == "***" and mqtt["user"] == "homeassistant"
    assert mqtt["url"].endswith("@broker:1883") and shown["source"].endswith("@cam.local/stream1")


def test_the_environment_beats_the_file(tmp_path):
    config = tmp_path / "humwatch.toml"
    config.write_text('bundle = "/b"\n[mqtt]\nuser = "from-file"\n')
    assert print_config("--config", str(config), env={"HUMWATCH_MQTT_USER": "from-env"})["mqtt"]["user"] == "from-env"
    assert print_config("--config", str(config))["mqtt"]["user"] == "from-file"


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
    ('[mqtt]\nheartbeat = "60"\n', "[mqtt] heartbeat = '60': expected number in the range 1<=x<=86400"),
    ('[mqtt]\nusr = "me"\n', "unknown key 'usr' in [mqtt]; its keys are: url, user, password, device_id, heartbeat"),
    ('[clips]\ndir = 20\n', "[clips] dir = 20: expected string"),
    ('audit = 5\n', "unknown key 'audit'; the keys are: alarm, bundle,"),
    ('[levels.fridge]\nonn = 0.8\n', "levels.fridge: unknown key 'onn'; the keys are: threshold, on, off"),
    ('[levels.fridge]\non = 1.5\n', "levels.fridge.on: 1.5 is not in the range 0<=x<=1"),
    ('levels = 0.5\n', "levels = 0.5: expected a table per name, e.g. [levels.fridge] on = 0.8"),
    ('mqtt_user = "a"\n[mqtt]\nuser = "b"\n', "mqtt_user and [mqtt] user are one setting; keep [mqtt] user"),
    ('t_ac = 0.6\n[levels.ac]\nthreshold = 0.7\n', "levels: ac.threshold is set twice; keep [levels.NAME]"),
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


def overrides(*args: str) -> DecisionOverrides:
    """The decision overrides `humwatch stream ARGS` would run with, parsed by the command itself."""
    ctx = stream.make_context("stream", ["--bundle", "/b", *args, __file__])
    return merge(DetectorSettings, ctx, ctx.params).decision_overrides()


def test_levels_are_keyed_by_appliance_and_the_seeds_options_are_shortcuts(caplog):
    assert overrides("--level", "fridge.on=0.8", "--level", "dehumidifier.threshold=0.6", "--t-ac", "0.6") == \
        DecisionOverrides({"fridge": {"on": 0.8}, "dehumidifier": {"threshold": 0.6}, "ac": {"threshold": 0.6}})
    for shortcut, level in (("--t-ac", "ac.threshold"), ("--ac-on", "ac.on"), ("--ac-off", "ac.off"),
                            ("--t-fridge", "fridge.threshold"), ("--fridge-on", "fridge.on"), ("--fridge-off", "fridge.off")):
        assert overrides(shortcut, "0.25") == overrides("--level", f"{level}=0.25") != overrides()
    assert overrides("--t-ac", "0.6", "--level", "ac.threshold=0.7").levels == {"ac": {"threshold": 0.7}}
    assert "is now" not in caplog.text


def test_the_old_level_syntax_still_works_naming_the_new_one(caplog):
    caplog.set_level(logging.WARNING)
    assert overrides("--level", "t_dehumidifier=0.4", "--level", "dehumidifier_on=0.9") == \
        DecisionOverrides({"dehumidifier": {"threshold": 0.4, "on": 0.9}})
    assert caplog.messages == ["--level t_dehumidifier=0.4 is now --level dehumidifier.threshold=0.4",
                               "--level dehumidifier_on=0.9 is now --level dehumidifier.on=0.9"]


@pytest.mark.parametrize("bad", ["fridge.on=1.5", "t_ac=1.5", "t_ac", "=0.5", "t_ac=x", "fridge.warm=0.5", "fridge=0.5",
                                 ".on=0.5"])
def test_a_bad_level_is_named_with_the_form_it_needs(tmp_path, bad):
    result = CliRunner().invoke(main, ["batch", "--bundle", str(tmp_path), "--level", bad, str(tmp_path)])
    assert result.exit_code == 2, result.output
    assert (f"'--level': {bad!r}: expected APPLIANCE.SIDE=P (SIDE: threshold, on, off; P: 0<=x<=1), "
            "e.g. fridge.on=0.8") in result.output


def test_levels_in_the_file_are_tables_and_the_command_line_beats_them_level_by_level(tmp_path):
    config = tmp_path / "humwatch.toml"
    config.write_text('bundle = "/b"\n[levels.fridge]\non = 0.8\noff = 0.5\n[levels."k\u00fchl"]\nthreshold = 0.4\n',
                      encoding="utf-8")
    assert load_toml(LiveSettings, config).levels == {"fridge": {"on": 0.8, "off": 0.5}, "k\u00fchl": {"threshold": 0.4}}
    shown = print_config("--config", str(config), "--fridge-on", "0.9", "--level", "ac.threshold=0.6")
    assert shown["levels"] == {"fridge": {"on": 0.9, "off": 0.5}, "k\u00fchl": {"threshold": 0.4}, "ac": {"threshold": 0.6}}
    config.write_text('level = ["t_dehumidifier=4"]\n')
    with pytest.raises(SettingsError, match=r"level: 't_dehumidifier=4': expected APPLIANCE.SIDE=P"):
        load_toml(LiveSettings, config)


OLD_FILE = """bundle = "/b"
t_ac = 0.6
ac_on = 0.85
fridge_off = 0.5
level = ["t_dehumidifier=0.4", "dehumidifier.on=0.9"]
mqtt = "mqtt://broker"
mqtt_user = "me"
mqtt_password = "pw"
mqtt_device_id = "kitchen-1"
mqtt_heartbeat = 30
http = "8321"
http_token = "tok"
http_host = ["pi.local"]
clips = "/c"
clips_seconds = 10
clips_max_mb = 100
relabel_dir = "/r"
audit_every_sec = 30
audit_max_rate = 0.2
audit_fallback = 0.5
"""

NEW_FILE = """bundle = "/b"

[levels.ac]
threshold = 0.6
on = 0.85

[levels.fridge]
off = 0.5

[levels.dehumidifier]
threshold = 0.4
on = 0.9

[mqtt]
url = "mqtt://broker"
user = "me"
password = "pw"
device_id = "kitchen-1"
heartbeat = 30

[http]
listen = "8321"
token = "tok"
hosts = ["pi.local"]

[clips]
dir = "/c"
seconds = 10
max_mb = 100
relabel_dir = "/r"

[audit]
every_sec = 30
max_rate = 0.2
fallback = 0.5
"""


def test_last_releases_flat_keys_still_read_each_naming_its_new_spelling(tmp_path, caplog):
    old, new = tmp_path / "old.toml", tmp_path / "new.toml"
    old.write_text(OLD_FILE)
    new.write_text(NEW_FILE)
    caplog.set_level(logging.WARNING)
    settings = load_toml(LiveSettings, new)
    assert not caplog.messages, "the new form reads without a word"
    assert settings.levels == {"ac": {"threshold": 0.6, "on": 0.85}, "fridge": {"off": 0.5},
                               "dehumidifier": {"threshold": 0.4, "on": 0.9}}
    assert (settings.mqtt.url, settings.mqtt.user, settings.mqtt.device_id, settings.mqtt.heartbeat) == (
        "mqtt://broker", "me", "kitchen-1", 30.0)
    assert settings.http.hosts == ("pi.local",) and settings.clips.dir == Path("/c") and settings.clips.seconds == 10.0
    assert settings.clips.relabel_dir == Path("/r") and settings.audit.fallback == 0.5
    assert load_toml(LiveSettings, old) == load_toml(LiveSettings, new)
    spelled = {"t_ac": "[levels.ac] threshold", "ac_on": "[levels.ac] on", "fridge_off": "[levels.fridge] off",
               "level": "[levels.NAME] threshold / on / off", "mqtt": "[mqtt] url", "mqtt_user": "[mqtt] user",
               "mqtt_password": "[mqtt] password", "mqtt_device_id": "[mqtt] device_id", "mqtt_heartbeat": "[mqtt] heartbeat",
               "http": "[http] listen", "http_token": "[http] token", "http_host": "[http] hosts", "clips": "[clips] dir",
               "clips_seconds": "[clips] seconds", "clips_max_mb": "[clips] max_mb", "relabel_dir": "[clips] relabel_dir",
               "audit_every_sec": "[audit] every_sec", "audit_max_rate": "[audit] max_rate",
               "audit_fallback": "[audit] fallback"}
    assert caplog.messages == [f"{old}: {key} is now {new_key}" for key, new_key in spelled.items()]
    process = subprocess.run([sys.executable, "-c", "from edge.cli import main; main()", "live", "--config", str(old),
                              "--print-config"], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert process.returncode == 0 and tomllib.loads(process.stdout)["mqtt"]["user"] == "me", process.stderr
    assert f"WARNING humwatch.settings: {old}: mqtt_user is now [mqtt] user\n" in process.stderr


def test_a_level_for_an_appliance_the_bundle_lacks_is_refused_naming_it(tmp_path):
    import numpy as np
    import soundfile

    path = tmp_path / "ac-on-fridge-off-day.wav"
    soundfile.write(path, np.zeros(16_000 * 7, dtype=np.float32), 16_000)
    bundle = Path(__file__).parent / "fixtures" / "bundle-v2"
    result = CliRunner().invoke(main, ["batch", "--bundle", str(bundle), "--level", "washer.threshold=0.5", str(path)])
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
                      f'[levels."k\u00fchl {HOSTILE}"]\nthreshold = 0.5\n[http]\nhosts = ["{HOSTILE}", "pi.local"]\n\n'
                      f'[[monitor]]\nname = "{HOSTILE}"\nhistory = "/h/{HOSTILE}.sqlite"\nalarm = ["fridge-run-max=90m"]\n'
                      f'[monitor.clips]\ndir = "/c/{HOSTILE}"\n[monitor.mqtt]\ndevice_id = "kueche"\n\n'
                      f'[[monitor]]\nname = "Cellar"\nsource = "-"\nsource_format = "s16le:48000:1"\n', encoding="utf-8")
    printed = CliRunner().invoke(main, ["live", "--config", str(config), "--print-config"])
    assert printed.exit_code == 0, printed.output
    shown = tomllib.loads(printed.output)  # valid TOML ...
    assert shown["monitor"][0]["name"] == tomllib.loads(config.read_text(encoding="utf-8"))["monitor"][0]["name"]
    assert shown["http"]["hosts"][0].endswith("\U0001F600 # = [x] 'q' \u2028") and shown["threads"] == 1024
    assert shown["monitor"][0]["clips"]["dir"].endswith("\U0001F600 # = [x] 'q' \u2028")
    assert shown["monitor"][0]["mqtt"] == {"device_id": "kueche"} and "device_id" not in shown["mqtt"]
    assert list(shown["levels"]) == [tomllib.loads(config.read_text(encoding="utf-8"))["levels"].popitem()[0]]
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
    ('[mqtt]\npassword = "hunter2\\u0000"\n', "[mqtt] password: ***: a control character, U+0000, at character 8"),
    ('[levels."a\\u0007"]\non = 0.5\n', "levels: 'a\\x07': a control character, U+0007, at character 2"),
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


def _help_blocks(command: str) -> dict[str, str]:
    """`humwatch COMMAND --help`: each option's flag -> its lines (not the help option's: click keeps the
    spelling of the first context that asked for it, '--help' alone when another test called the command)."""
    result = CliRunner().invoke(main, [command, "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    blocks = re.split(r"\n  (?=--)", result.output.split("Options:\n", 1)[1])
    return {block.split()[0]: " ".join(block.split()) for block in blocks
            if block.strip().startswith("--") and block.split()[0] != "--help"}


@pytest.mark.parametrize("command, record, flags", [
    ("train", "TrainOptions", "--beats-checkpoint --manifests --models --cache-dir --val-daypart --val-recordings --priority "
                              "--views --epochs --unfreeze-blocks --stage2-epochs --seed --device --cluster --worker-cpus"),
    ("distill", "DistillOptions", "--run --label-weight --epochs --seed --device"),
])
def test_train_and_distill_options_are_their_records_fields_with_one_default_each(command, record, flags):
    import train.options

    blocks = _help_blocks(command)
    assert set(blocks) == set(flags.split()), "every flag users have, and no other"
    for option in options_of(getattr(train.options, record)):
        default = option.field.default
        shown = re.findall(r"\[default: ([^;\]]*)", blocks[f"--{option.key.replace('_', '-')}"])
        assert shown == ([] if default in ((), dataclasses.MISSING) else [str(default)]), option.key


def test_train_options_from_the_command_line():
    from train.cli import train
    from train.options import TrainOptions

    ctx = train.make_context("train", ["--beats-checkpoint", "beats.pt", "--manifests", "m", "--val-recordings", "a,b",
                                       "--val-recordings", "c", "--priority", "fridge, ac", "--epochs", "5"])
    assert build(TrainOptions, ctx.params) == TrainOptions(beats_checkpoint=Path("beats.pt"), manifests_dir=Path("m"),
                                                           val_recordings=("a", "b", "c"), priority=("fridge", "ac"),
                                                           epochs=5)
    assert build(TrainOptions, train.make_context("train", ["--beats-checkpoint", "b.pt"]).params) == \
        TrainOptions(beats_checkpoint=Path("b.pt")), "the command line's defaults are the record's"


@pytest.mark.parametrize("args", [["--print-config"], ["--bundle", "no-such-bundle"]])
def test_live_run_in_process_gives_back_the_signal_handlers_it_found(args):
    """`live` stops on SIGINT/SIGTERM while it runs; called from Python (a test, a notebook) it leaves
    the caller's handlers as they were, whether it printed, refused or ran."""
    before = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    CliRunner().invoke(main, ["live", *args])
    assert {signum: signal.getsignal(signum) for signum in before} == before
