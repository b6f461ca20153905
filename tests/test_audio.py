import numpy as np
import pytest
import soundfile

from edge.core.audio import AudioError, decode, load_audio, resample, slice_windows, window_starts


def _tone(rate: int, seconds: float = 2.0, channels: int = 2) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    mono = 0.25 * np.sin(2 * np.pi * 440 * t)
    return np.stack([mono] * channels, axis=1).astype(np.float32)


@pytest.mark.parametrize("suffix, subtype", [(".wav", "PCM_16"), (".flac", "PCM_16"), (".ogg", "VORBIS")])
def test_soundfile_formats_decode_to_mono_float(tmp_path, suffix, subtype):
    path = tmp_path / f"tone{suffix}"
    soundfile.write(path, _tone(44_100), 44_100, subtype=subtype)
    audio = decode(path)
    assert audio.sample_rate == 44_100 and audio.channels == 2
    assert audio.samples.dtype == np.float32 and audio.samples.ndim == 1
    assert abs(audio.duration_sec - 2.0) < 0.05
    assert 0.2 < np.max(np.abs(audio.samples)) < 0.3


def test_m4a_decodes_with_pyav(project):
    audio = decode(project / "samples" / "ac-on-fridge-off-night.m4a")
    assert audio.sample_rate == 44_100 and audio.channels == 2
    assert audio.samples.dtype == np.float32 and abs(audio.duration_sec - 24.0) < 0.1


def test_resampling_to_16k_keeps_length_and_pitch():
    rate = 44_100
    tone = _tone(rate, channels=1)[:, 0]
    out = resample(tone, rate)
    assert abs(len(out) - 32_000) <= 1
    spectrum = np.abs(np.fft.rfft(out))
    assert abs(np.argmax(spectrum) * 16_000 / len(out) - 440) < 2


def test_same_file_gives_identical_windows_every_time(project):
    path = project / "samples" / "ac-off-fridge-on-day.m4a"
    first, _ = load_audio(path)
    second, _ = load_audio(path)
    assert np.array_equal(slice_windows(first, 96_000, 24_000), slice_windows(second, 96_000, 24_000))


def test_window_slicing_counts_and_offsets():
    samples = np.arange(96_000 + 3 * 24_000 + 100, dtype=np.float32)
    windows = slice_windows(samples, 96_000, 24_000)
    assert windows.shape == (4, 96_000)
    assert windows[2, 0] == 48_000
    assert len(window_starts(95_999, 96_000, 24_000)) == 0
    assert slice_windows(samples[:1000], 96_000, 24_000).shape == (0, 96_000)


def test_missing_empty_and_corrupt_files_name_the_file(tmp_path):
    with pytest.raises(AudioError, match=r"nope\.wav: no such file"):
        decode(tmp_path / "nope.wav")
    empty = tmp_path / "empty.m4a"
    empty.write_bytes(b"")
    with pytest.raises(AudioError, match=r"empty\.m4a: the file is empty"):
        decode(empty)
    corrupt = tmp_path / "corrupt.m4a"
    corrupt.write_bytes(b"\x00\x01not an mp4 at all" * 100)
    with pytest.raises(AudioError, match=r"corrupt\.m4a: cannot decode audio"):
        decode(corrupt)
    garbage_wav = tmp_path / "garbage.wav"
    garbage_wav.write_bytes(b"RIFF....WAVEjunk" * 10)
    with pytest.raises(AudioError, match=r"garbage\.wav: cannot decode audio"):
        decode(garbage_wav)
