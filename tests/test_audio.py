import numpy as np
import pytest
import soundfile

from edge.core.audio import AudioError, AudioFile, StreamResampler, Windower, load_windows
from edge.core.window import WindowConfig


def decode(path):
    """The file at its own rate, whole: (samples, the opened AudioFile)."""
    audio = AudioFile(path)
    return np.concatenate(list(audio.native_chunks())), audio


def _tone(rate: int, seconds: float = 2.0, channels: int = 2) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    mono = 0.25 * np.sin(2 * np.pi * 440 * t)
    return np.stack([mono] * channels, axis=1).astype(np.float32)


@pytest.mark.parametrize("suffix, subtype", [(".wav", "PCM_16"), (".flac", "PCM_16"), (".ogg", "VORBIS")])
def test_soundfile_formats_decode_to_mono_float(tmp_path, suffix, subtype):
    path = tmp_path / f"tone{suffix}"
    soundfile.write(path, _tone(44_100), 44_100, subtype=subtype)
    samples, audio = decode(path)
    assert audio.sample_rate == 44_100 and audio.channels == 2
    assert samples.dtype == np.float32 and samples.ndim == 1
    assert abs(audio.duration_sec - 2.0) < 0.05
    assert 0.2 < np.max(np.abs(samples)) < 0.3


def test_m4a_decodes_with_pyav(project):
    samples, audio = decode(project / "samples" / "ac-on-fridge-off-night.m4a")
    assert audio.sample_rate == 44_100 and audio.channels == 2
    assert samples.dtype == np.float32 and abs(audio.duration_sec - 24.0) < 0.1


def test_resampling_to_16k_keeps_length_and_pitch():
    rate = 44_100
    tone = _tone(rate, channels=1)[:, 0]
    resample = StreamResampler(rate)
    out = np.concatenate([resample(tone[i : i + 5000]) for i in range(0, len(tone), 5000)] + [resample.flush()])
    assert abs(len(out) - 32_000) <= 1
    spectrum = np.abs(np.fft.rfft(out))
    assert abs(np.argmax(spectrum) * 16_000 / len(out) - 440) < 2


def test_same_file_gives_identical_windows_every_time(project):
    path = project / "samples" / "ac-off-fridge-on-day.m4a"
    first, _ = load_windows(path, WindowConfig())
    second, _ = load_windows(path, WindowConfig())
    assert len(first) == 13 and np.array_equal(first, second)


def test_windower_counts_offsets_and_times_whatever_the_chunking():
    samples = np.arange(96_000 + 3 * 24_000 + 100, dtype=np.float32)
    for chunk in (len(samples), 24_000, 777):
        windower = Windower(96_000, 24_000, 16_000)
        found = []
        for start in range(0, len(samples), chunk):
            windower.push(samples[start : start + chunk])
            found += [(t, window[0]) for t, window in windower.windows()]
        assert found == [(6.0, 0), (7.5, 24_000), (9.0, 48_000), (10.5, 72_000)]
    short = Windower(96_000, 24_000, 16_000)
    short.push(samples[:95_999])
    assert list(short.windows()) == []


def test_windower_skips_a_backlog_to_the_newest_window_and_keeps_recent_audio():
    windower = Windower(4, 2, 1, recent_samples=6)
    windower.push(np.arange(20, dtype=np.float32))
    assert windower.skip_backlog(keep_sec=3) == 16  # 16 samples wait beyond the next window: more than 2 + 3
    [(t, window)] = list(windower.windows())
    assert t == 20 and window.tolist() == [16, 17, 18, 19]
    assert windower.recent.tolist() == [14, 15, 16, 17, 18, 19]


def test_missing_empty_and_corrupt_files_name_the_file(tmp_path):
    with pytest.raises(AudioError, match=r"nope\.wav: no such file"):
        AudioFile(tmp_path / "nope.wav")
    empty = tmp_path / "empty.m4a"
    empty.write_bytes(b"")
    with pytest.raises(AudioError, match=r"empty\.m4a: the file is empty"):
        AudioFile(empty)
    corrupt = tmp_path / "corrupt.m4a"
    corrupt.write_bytes(b"\x00\x01not an mp4 at all" * 100)
    with pytest.raises(AudioError, match=r"corrupt\.m4a: cannot decode audio"):
        decode(corrupt)
    garbage_wav = tmp_path / "garbage.wav"
    garbage_wav.write_bytes(b"RIFF....WAVEjunk" * 10)
    with pytest.raises(AudioError, match=r"garbage\.wav: cannot decode audio"):
        decode(garbage_wav)
