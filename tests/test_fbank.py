import numpy as np
import pytest
import torch
import torchaudio.compliance.kaldi as kaldi

from train.fbank import FBANK_MEAN, FBANK_STD, beats_fbank, num_frames

TOLERANCE = 1e-3
SECONDS = 6.0
N = int(16000 * SECONDS)


def torchaudio_fbank(waveform: torch.Tensor) -> torch.Tensor:
    """The oracle: what BEATs' preprocess computes, row by row."""
    rows = [
        kaldi.fbank(row[None] * 2**15, num_mel_bins=128, sample_frequency=16000, frame_length=25, frame_shift=10)
        for row in waveform
    ]
    return (torch.stack(rows) - FBANK_MEAN) / (2 * FBANK_STD)


def test_matches_fixture_fbank(beats_fixtures):
    data = np.load(beats_fixtures / "tiny_beats_io.npz")
    ours = beats_fbank(torch.from_numpy(data["waveform"]))
    assert ours.shape == data["fbank"].shape
    assert (ours - torch.from_numpy(data["fbank"])).abs().max() <= TOLERANCE


def _signals() -> dict[str, torch.Tensor]:
    t = torch.arange(N) / 16000
    generator = torch.Generator().manual_seed(7)
    return {
        "silence": torch.zeros(N),
        "full-scale clipping": torch.clamp(4.0 * torch.sin(2 * torch.pi * 220 * t), -1.0, 1.0),
        "1 kHz tone": 0.5 * torch.sin(2 * torch.pi * 1000 * t),
        "white noise": torch.rand(N, generator=generator) * 2 - 1,
    }


@pytest.mark.parametrize("name", list(_signals()))
def test_matches_torchaudio_kaldi(name):
    waveform = _signals()[name][None]
    difference = (beats_fbank(waveform) - torchaudio_fbank(waveform)).abs().max()
    assert difference <= TOLERANCE, f"{name}: max |diff| {difference}"


def test_six_second_window_gives_598_frames():
    assert num_frames(96_000) == 598
    assert beats_fbank(torch.zeros(2, 96_000)).shape == (2, 598, 128)


def test_too_short_input_is_an_error():
    with pytest.raises(ValueError, match="at least 400 samples"):
        beats_fbank(torch.zeros(1, 399))
