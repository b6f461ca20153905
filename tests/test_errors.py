"""Errors that say what happened, name the thing and the fix, with the documented exit codes."""

import socket
import types

import numpy as np
import pytest
import soundfile
from click.testing import CliRunner

import edge.monitor.sources
from edge.cli import main


class FakePortAudioError(Exception):
    pass


def fake_sounddevice():
    """What sounddevice answers on a Pi with one USB microphone (PortAudio is not on this machine)."""
    devices = [{"name": "bcm2835 Headphones", "max_input_channels": 0, "default_samplerate": 48000.0},
               {"name": "USB PnP Sound Device: Audio (hw:1,0)", "max_input_channels": 1, "default_samplerate": 44100.0}]

    def query_devices(device=None, kind=None):
        if device is None and kind is None:
            return devices
        if isinstance(device, int):
            if not 0 <= device < len(devices):
                raise FakePortAudioError(f"Error querying device {device}")
            return devices[device]
        matches = [d for d in devices if (device or "USB") in d["name"] and d["max_input_channels"] > 0]
        if not matches:
            raise ValueError(f"No input device matching {device!r}")
        return matches[0]

    return types.SimpleNamespace(query_devices=query_devices, PortAudioError=FakePortAudioError)


@pytest.fixture
def one_microphone(monkeypatch):
    monkeypatch.setattr(edge.monitor.sources, "import_sounddevice", fake_sounddevice)


@pytest.mark.parametrize("device", ["nosuchmic", "99"])
def test_live_with_an_unknown_device_is_an_error_listing_the_devices(bundle_dir, one_microphone, device):
    result = CliRunner().invoke(main, ["live", "--bundle", str(bundle_dir), "--device", device])
    assert result.exit_code == 1
    assert f"--device {device}: no such input device" in result.output
    assert "1: USB PnP Sound Device: Audio (hw:1,0) (1 ch, 44100 Hz)" in result.output
    assert "Headphones" not in result.output and "Pick one by index or by (part of) its name" in result.output


def test_devices_lists_the_inputs(one_microphone):
    result = CliRunner().invoke(main, ["devices"])
    assert result.exit_code == 0 and "USB PnP Sound Device" in result.output and "Headphones" not in result.output


def test_a_busy_http_port_names_the_address_and_the_fix(bundle_dir, one_microphone):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(main, ["live", "--bundle", str(bundle_dir), "--device", "USB", "--http", str(port)])
    assert result.exit_code == 1
    assert f"--http 127.0.0.1:{port}: the port is in use" in result.output and f"--http {port + 1}" in result.output


def test_batch_on_a_directory_without_audio_is_an_error(bundle_dir, tmp_path):
    (tmp_path / "notes.txt").write_text("no audio here")
    result = CliRunner().invoke(main, ["batch", "--bundle", str(bundle_dir), str(tmp_path)])
    assert result.exit_code == 1 and f"no audio files (.m4a .aac .mp3 .wav .flac .ogg) in {tmp_path}" in result.output


def test_batch_searches_subdirectories(bundle_dir, tmp_path):
    (tmp_path / "kitchen" / "monday").mkdir(parents=True)
    soundfile.write(tmp_path / "kitchen" / "monday" / "take.wav", np.zeros(16_000 * 7, np.float32), 16_000)
    result = CliRunner().invoke(main, ["batch", "--bundle", str(bundle_dir), str(tmp_path)])
    assert result.exit_code == 0 and "kitchen/monday/take.wav" in result.output
