"""The classifier on top of BEATs: attention pooling over frames, then a small MLP, one logit per appliance."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from train.beats import BEATs

HIDDEN = 256
DROPOUT = 0.2


class AttentionPoolHead(nn.Module):
    """frames [B, T, D] -> logits [B, labels], one per appliance in the run's label order."""

    def __init__(self, dim: int, labels: int, hidden: int = HIDDEN, dropout: float = DROPOUT) -> None:
        super().__init__()
        self.config = {"dim": dim, "hidden": hidden, "dropout": dropout, "labels": labels}
        self.score = nn.Linear(dim, 1)
        self.mlp = nn.Sequential(
            nn.Dropout(dropout), nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, labels)
        )

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        weights = torch.softmax(frames @ self.score.weight[0] + self.score.bias, dim=1)
        pooled = torch.bmm(weights.unsqueeze(1), frames).squeeze(1)  # no [B, T, D] temporary
        return self.mlp(pooled)


class ProbabilityHead(nn.Module):
    """The head as exported: frames -> sigmoid probabilities."""

    def __init__(self, head: AttentionPoolHead) -> None:
        super().__init__()
        self.head = head

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.head(frames))


class HumwatchModel(nn.Module):
    """BEATs encoder + head: waveform windows [B, N] -> logits [B, labels]."""

    def __init__(self, encoder: BEATs, head: AttentionPoolHead) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = head

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder.extract_features(waveform))

    def probabilities(self, waveform: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self(waveform))


def predict_model(model: HumwatchModel, windows: np.ndarray) -> np.ndarray:
    """Probabilities [n, labels] of waveform windows [n, N] on the model's device, in batches that suit
    it, without gradients; a progress bar when there are many."""
    from tqdm import tqdm

    from train.device import encode_batch

    model.eval()
    device = next(model.parameters()).device
    size = encode_batch(device)
    starts = range(0, len(windows), size)
    with torch.inference_mode():
        return np.concatenate([
            model.probabilities(torch.tensor(windows[i : i + size]).to(device)).cpu().numpy()
            for i in tqdm(starts, desc="torch model", unit="batch", leave=False, disable=len(windows) < 64)
        ])
