"""torch -> ONNX for the graphs of a bundle: encoder (waveform -> frame embeddings), head (frame
embeddings -> probabilities) and the student (waveform -> probabilities). Sample axis fixed, batch
axis dynamic."""

from __future__ import annotations

import copy
import logging
import warnings
from pathlib import Path

import torch
from torch import nn

from train.beats import BEATs
from train.head import AttentionPoolHead, ProbabilityHead
from train.student import StudentNet

OPSET = 18
EXAMPLE_BATCH = 2


class EncoderGraph(nn.Module):
    """The exported encoder: BEATs.extract_features with the weight norm folded in."""

    def __init__(self, encoder: BEATs) -> None:
        super().__init__()
        self.encoder = copy.deepcopy(encoder).fold_weight_norm().eval()

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        return self.encoder.extract_features(waveform)


def _export(module: nn.Module, example: torch.Tensor, path: Path, input_name: str, output_name: str) -> None:
    batch = torch.export.Dim("batch", min=1, max=1024)
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module.eval(), (example,), str(path), dynamo=True, opset_version=OPSET, external_data=False,
            input_names=[input_name], output_names=[output_name],
            dynamic_shapes=({0: batch},), verbose=False,
        )


def export_encoder(encoder: BEATs, window_samples: int, path: Path) -> None:
    example = torch.randn(EXAMPLE_BATCH, window_samples) * 0.1
    _export(EncoderGraph(encoder), example, path, "waveform", "embeddings")


def export_head(head: AttentionPoolHead, frames: int, path: Path) -> None:
    example = torch.randn(EXAMPLE_BATCH, frames, head.config["dim"])
    _export(ProbabilityHead(copy.deepcopy(head)), example, path, "embeddings", "probs")


class StudentGraph(nn.Module):
    """The exported student: waveform -> sigmoid probabilities."""

    def __init__(self, student: StudentNet) -> None:
        super().__init__()
        self.student = copy.deepcopy(student).eval()

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        return self.student.probabilities(waveform)


def export_student(student: StudentNet, window_samples: int, path: Path) -> None:
    example = torch.randn(EXAMPLE_BATCH, window_samples) * 0.1
    _export(StudentGraph(student), example, path, "waveform", "probs")
