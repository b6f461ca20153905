"""Kaldi log-mel filterbank exactly as BEATs computes it, in ONNX-exportable torch ops.

Equivalent to ``torchaudio.compliance.kaldi.fbank(waveform * 2**15, num_mel_bins=128,
sample_frequency=16000, frame_length=25, frame_shift=10)`` followed by BEATs' normalisation,
but written with fixed-shape ops that export to ONNX (opset >= 17). torchaudio is only its test
oracle.
"""

from __future__ import annotations

import functools
import math

import torch
from torch import nn

from edge.core.window import SAMPLE_RATE

FRAME_LENGTH = 400  # 25 ms
FRAME_SHIFT = 160  # 10 ms
FFT_SIZE = 512
NUM_MEL_BINS = 128
PREEMPHASIS = 0.97
LOW_FREQ = 20.0
INPUT_SCALE = 2.0**15
FBANK_MEAN = 15.41663
FBANK_STD = 6.55582
LOG_FLOOR = float(torch.finfo(torch.float32).eps)


def num_frames(num_samples: int) -> int:
    """Frames Kaldi produces for `num_samples` (snip_edges=True)."""
    if num_samples < FRAME_LENGTH:
        raise ValueError(f"need at least {FRAME_LENGTH} samples for one fbank frame, got {num_samples}")
    return 1 + (num_samples - FRAME_LENGTH) // FRAME_SHIFT


def _mel(freq):
    return 1127.0 * (1.0 + freq / 700.0).log() if torch.is_tensor(freq) else 1127.0 * math.log(1.0 + freq / 700.0)


def kaldi_mel_banks(fft_size: int = FFT_SIZE, bins: int = NUM_MEL_BINS) -> torch.Tensor:
    """Triangular mel filters [fft_size // 2, bins] as Kaldi builds them (no VTLN); the defaults are BEATs'.

    Computed in float32, as the reference does: at a pure tone's quiet bands the result sits at
    float32 resolution, so the rounding of the filters themselves shows.
    """
    mel_low, mel_high = _mel(LOW_FREQ), _mel(SAMPLE_RATE / 2)
    mel_delta = (mel_high - mel_low) / (bins + 1)
    mel_bin = torch.arange(bins, dtype=torch.float32)[None, :]
    left = mel_low + mel_bin * mel_delta
    center = mel_low + (mel_bin + 1.0) * mel_delta
    right = mel_low + (mel_bin + 2.0) * mel_delta
    fft_mel = _mel(SAMPLE_RATE / fft_size * torch.arange(fft_size // 2, dtype=torch.float32))[:, None]
    up = (fft_mel - left) / (center - left)
    down = (right - fft_mel) / (right - center)
    return torch.clamp(torch.minimum(up, down), min=0.0)


def povey_window() -> torch.Tensor:
    """Kaldi's povey window: a symmetric Hann window raised to 0.85 (float32)."""
    return torch.hann_window(FRAME_LENGTH, periodic=False, dtype=torch.float32).pow(0.85)


class BeatsFbank(nn.Module):
    """waveform [B, N] float32 in [-1, 1] at 16 kHz -> normalised log-mel fbank [B, F, 128].

    Steps in Kaldi's order: frame (snip edges), remove DC, pre-emphasise, povey window,
    512-point power spectrum, mel, log. The spectrum uses ``torch.fft.rfft`` (ONNX ``DFT``): a
    DFT written as a float32 matmul drowns the quiet bands of a pure tone in rounding noise.
    """

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("window", povey_window(), persistent=False)
        self.register_buffer("mel_banks", kaldi_mel_banks(), persistent=False)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        frame_count = num_frames(waveform.shape[-1])
        frame_index = (
            torch.arange(frame_count)[:, None] * FRAME_SHIFT + torch.arange(FRAME_LENGTH)[None, :]
        )
        frames = (waveform * INPUT_SCALE)[:, frame_index]
        frames = frames - frames.mean(dim=-1, keepdim=True)
        previous = torch.cat([frames[..., :1], frames[..., :-1]], dim=-1)
        frames = (frames - PREEMPHASIS * previous) * self.window
        spectrum = torch.fft.rfft(frames, n=FFT_SIZE)[..., : FFT_SIZE // 2]
        power = spectrum.real.square() + spectrum.imag.square()
        log_mel = torch.clamp(power @ self.mel_banks, min=LOG_FLOOR).log()
        return (log_mel - FBANK_MEAN) / (2 * FBANK_STD)


@functools.cache
def _fbank_module() -> BeatsFbank:
    return BeatsFbank()


def beats_fbank(waveform: torch.Tensor) -> torch.Tensor:
    """Functional form of :class:`BeatsFbank`: [B, N] -> [B, F, 128]."""
    return _fbank_module().to(waveform.device)(waveform)
