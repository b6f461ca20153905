"""BEATs audio encoder (Chen et al., 2022), written for the official checkpoint format.

Loads ``{"cfg": dict, "model": state_dict}`` files such as BEATs_iter3_plus_AS2M.pt strictly and
reproduces the reference ``extract_features``: patch embedding of the normalised Kaldi fbank,
convolutional positional embedding (weight-normed), and a post-LN transformer with deep norm and
gated relative position bias. Every shape is fixed by the input, with no data-dependent control
flow, so the module exports to ONNX.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from train.fbank import NUM_MEL_BINS, BeatsFbank, num_frames

PATCH_SIZE = 16
LAYER_NORM_EPS = 1e-5

# Keys of a checkpoint's cfg that change nothing at inference (dropouts, training schedule).
_TRAINING_ONLY_KEYS = {
    "dropout",
    "attention_dropout",
    "activation_dropout",
    "encoder_layerdrop",
    "dropout_input",
    "layer_wise_gradient_decay_ratio",
    "predictor_dropout",
}


class CheckpointError(ValueError):
    """A file is not a BEATs checkpoint this encoder implements."""


@dataclasses.dataclass(frozen=True)
class BeatsConfig:
    """The architecture part of a BEATs checkpoint's cfg."""

    input_patch_size: int = PATCH_SIZE
    embed_dim: int = 512
    conv_bias: bool = False
    encoder_layers: int = 12
    encoder_embed_dim: int = 768
    encoder_ffn_embed_dim: int = 3072
    encoder_attention_heads: int = 12
    activation_fn: str = "gelu"
    layer_norm_first: bool = False
    deep_norm: bool = True
    conv_pos: int = 128
    conv_pos_groups: int = 16
    relative_position_embedding: bool = True
    num_buckets: int = 320
    max_distance: int = 800
    gru_rel_pos: bool = True
    finetuned_model: bool = False
    predictor_class: int = 527

    @classmethod
    def from_checkpoint_cfg(cls, cfg: dict) -> BeatsConfig:
        """Validate a checkpoint cfg; raise ValueError naming what is not implemented."""
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(cfg) - known - _TRAINING_ONLY_KEYS)
        if unknown:
            raise ValueError(f"unknown cfg keys {unknown}")
        config = cls(**{key: value for key, value in cfg.items() if key in known})
        problems = []
        if config.layer_norm_first:
            problems.append("layer_norm_first=True (pre-LN BEATs) is not implemented")
        if config.deep_norm and config.layer_norm_first:
            problems.append("deep_norm and layer_norm_first cannot both be set")
        if config.input_patch_size != PATCH_SIZE:
            problems.append(f"input_patch_size={config.input_patch_size} (only {PATCH_SIZE} is implemented)")
        if config.activation_fn != "gelu":
            problems.append(f"activation_fn={config.activation_fn!r} (only 'gelu' is implemented)")
        if config.encoder_embed_dim % config.encoder_attention_heads:
            problems.append("encoder_embed_dim is not divisible by encoder_attention_heads")
        if problems:
            raise ValueError("; ".join(problems))
        return config


class WeightNormConv1d(nn.Module):
    """Conv1d with weight normalisation over dim 2, stored as ``weight_g`` / ``weight_v``."""

    def __init__(self, channels: int, kernel_size: int, groups: int) -> None:
        super().__init__()
        self.weight_g = nn.Parameter(torch.ones(1, 1, kernel_size))
        self.weight_v = nn.Parameter(torch.empty(channels, channels // groups, kernel_size))
        self.bias = nn.Parameter(torch.zeros(channels))
        nn.init.normal_(self.weight_v, std=math.sqrt(4 / (kernel_size * channels)))
        self.padding = kernel_size // 2
        self.groups = groups

    def weight(self) -> torch.Tensor:
        norm = self.weight_v.norm(dim=(0, 1), keepdim=True)
        return self.weight_v * (self.weight_g / norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv1d(x, self.weight(), self.bias, padding=self.padding, groups=self.groups)

    def folded(self) -> nn.Conv1d:
        """A plain Conv1d with the normalised weight baked in (for export)."""
        out_channels, in_per_group, kernel_size = self.weight_v.shape
        conv = nn.Conv1d(
            out_channels, out_channels, kernel_size, padding=self.padding, groups=self.groups
        )
        with torch.no_grad():
            conv.weight.copy_(self.weight())
            conv.bias.copy_(self.bias)
        return conv


class DropLastFrame(nn.Module):
    """An even-kernel 'same' convolution yields one frame too many: drop it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :, :-1]


def relative_position_buckets(length: int, num_buckets: int, max_distance: int) -> torch.Tensor:
    """[length, length] bucket index of (key - query), bidirectional, log-spaced beyond max_exact."""
    position = torch.arange(length)
    relative = position[None, :] - position[:, None]
    half = num_buckets // 2
    buckets = (relative > 0).long() * half
    distance = relative.abs()
    max_exact = half // 2
    far = max_exact + (
        torch.log(distance.float().clamp(min=1) / max_exact)
        / math.log(max_distance / max_exact)
        * (half - max_exact)
    ).long()
    far = far.clamp(max=half - 1)
    return buckets + torch.where(distance < max_exact, distance, far)


class SelfAttention(nn.Module):
    """Multi-head self-attention with BEATs' gated relative position bias."""

    def __init__(self, config: BeatsConfig, relative_attention_bias: nn.Embedding | None) -> None:
        super().__init__()
        dim, heads = config.encoder_embed_dim, config.encoder_attention_heads
        self.heads = heads
        self.head_dim = dim // heads
        self.scaling = self.head_dim**-0.5
        if relative_attention_bias is not None:
            self.relative_attention_bias = relative_attention_bias
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.q_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)
        self.gru_rel_pos = config.gru_rel_pos
        if self.gru_rel_pos:
            self.grep_linear = nn.Linear(self.head_dim, 8)
            self.grep_a = nn.Parameter(torch.ones(1, heads, 1, 1))

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, _ = x.shape
        return x.view(batch, length, self.heads, self.head_dim).transpose(1, 2)

    def forward(self, x: torch.Tensor, position_bias: torch.Tensor | None) -> torch.Tensor:
        """x [B, T, D], position_bias [H, T, T] or None -> [B, T, D]."""
        batch, length, dim = x.shape
        query = self._split_heads(self.q_proj(x))
        key = self._split_heads(self.k_proj(x))
        value = self._split_heads(self.v_proj(x))
        scores = (query * self.scaling) @ key.transpose(-1, -2)
        if position_bias is not None:
            if self.gru_rel_pos:
                gates = torch.sigmoid(
                    self.grep_linear(query).view(batch, self.heads, length, 2, 4).sum(-1)
                )
                gate_a, gate_b = gates[..., 0:1], gates[..., 1:2]
                scores = scores + (gate_a * (gate_b * self.grep_a - 1.0) + 2.0) * position_bias
            else:
                scores = scores + position_bias
        attention = torch.softmax(scores, dim=-1) @ value
        return self.out_proj(attention.transpose(1, 2).reshape(batch, length, dim))


class EncoderLayer(nn.Module):
    """Post-LN transformer block; deep norm scales the residual by (2 L)^(1/4)."""

    def __init__(self, config: BeatsConfig, relative_attention_bias: nn.Embedding | None) -> None:
        super().__init__()
        dim = config.encoder_embed_dim
        self.self_attn = SelfAttention(config, relative_attention_bias)
        self.self_attn_layer_norm = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.fc1 = nn.Linear(dim, config.encoder_ffn_embed_dim)
        self.fc2 = nn.Linear(config.encoder_ffn_embed_dim, dim)
        self.final_layer_norm = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.residual_scale = math.pow(2 * config.encoder_layers, 0.25) if config.deep_norm else 1.0

    def forward(self, x: torch.Tensor, position_bias: torch.Tensor | None) -> torch.Tensor:
        x = self.self_attn_layer_norm(x * self.residual_scale + self.self_attn(x, position_bias))
        feed_forward = self.fc2(F.gelu(self.fc1(x)))
        return self.final_layer_norm(x * self.residual_scale + feed_forward)


class TransformerEncoder(nn.Module):
    """Convolutional positional embedding, then the stack of encoder layers."""

    def __init__(self, config: BeatsConfig) -> None:
        super().__init__()
        dim = config.encoder_embed_dim
        self.pos_conv = nn.Sequential(
            WeightNormConv1d(dim, config.conv_pos, config.conv_pos_groups),
            DropLastFrame() if config.conv_pos % 2 == 0 else nn.Identity(),
            nn.GELU(),
        )
        self.layer_norm = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        # One relative-position table, shared by every layer (its key appears under each layer).
        shared_bias = (
            nn.Embedding(config.num_buckets, config.encoder_attention_heads)
            if config.relative_position_embedding
            else None
        )
        self.layers = nn.ModuleList(EncoderLayer(config, shared_bias) for _ in range(config.encoder_layers))
        self.has_relative_bias = shared_bias is not None
        self.num_buckets = config.num_buckets
        self.max_distance = config.max_distance

    def position_bias(self, length: int) -> torch.Tensor | None:
        """[H, T, T] relative position bias, or None without relative position embedding."""
        if not self.has_relative_bias:
            return None
        table = self.layers[0].self_attn.relative_attention_bias
        buckets = relative_position_buckets(length, self.num_buckets, self.max_distance)
        return table(buckets.to(table.weight.device)).permute(2, 0, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer_norm(x + self.pos_conv(x.transpose(1, 2)).transpose(1, 2))
        position_bias = self.position_bias(x.shape[1])
        for layer in self.layers:
            x = layer(x, position_bias)
        return x


class BEATs(nn.Module):
    """The BEATs encoder: fbank -> patches -> transformer -> frame embeddings [B, T, D]."""

    def __init__(self, config: BeatsConfig) -> None:
        super().__init__()
        self.config = config
        self.fbank = BeatsFbank()
        self.patch_embedding = nn.Conv2d(
            1, config.embed_dim, PATCH_SIZE, stride=PATCH_SIZE, bias=config.conv_bias
        )
        self.layer_norm = nn.LayerNorm(config.embed_dim, eps=LAYER_NORM_EPS)
        self.post_extract_proj = (
            nn.Linear(config.embed_dim, config.encoder_embed_dim)
            if config.embed_dim != config.encoder_embed_dim
            else None
        )
        self.encoder = TransformerEncoder(config)
        # A fine-tuned checkpoint's AudioSet classifier: loaded so the keys match, never used.
        self.predictor = (
            nn.Linear(config.encoder_embed_dim, config.predictor_class) if config.finetuned_model else None
        )

    @property
    def embed_dim(self) -> int:
        return self.config.encoder_embed_dim

    def encode_fbank(self, fbank: torch.Tensor) -> torch.Tensor:
        """Normalised fbank [B, F, 128] -> frame embeddings [B, (F // 16) * 8, D]."""
        patches = self.patch_embedding(fbank.unsqueeze(1))
        features = self.layer_norm(patches.flatten(2).transpose(1, 2))
        if self.post_extract_proj is not None:
            features = self.post_extract_proj(features)
        return self.encoder(features)

    def extract_features(self, waveform: torch.Tensor) -> torch.Tensor:
        """Waveform [B, N] float32 in [-1, 1] at 16 kHz -> frame embeddings [B, T, D]."""
        return self.encode_fbank(self.fbank(waveform))

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        return self.extract_features(waveform)

    def fold_weight_norm(self) -> BEATs:
        """Replace the weight-normed positional conv by a plain one (in place; for export)."""
        self.encoder.pos_conv[0] = self.encoder.pos_conv[0].folded()
        return self


def build_beats(cfg: dict) -> BEATs:
    """A float32 BEATs in eval mode from a checkpoint-style cfg dict (weights random)."""
    return BEATs(BeatsConfig.from_checkpoint_cfg(cfg)).float().eval()


def load_beats(path: str | Path) -> BEATs:
    """Load an official-format BEATs checkpoint strictly; errors name the file and the problem."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such BEATs checkpoint file")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types (and cryptic texts) for a file that is not a checkpoint
        raise CheckpointError(f"{path}: not a torch checkpoint (torch cannot read this {path.stat().st_size}-byte file); "
                              "pass the BEATs_iter3_plus_AS2M.pt you downloaded") from error
    if not isinstance(checkpoint, dict) or not {"cfg", "model"} <= set(checkpoint):
        raise CheckpointError(
            f"{path}: not a BEATs checkpoint: expected a dict with 'cfg' and 'model' "
            "(the format of BEATs_iter3_plus_AS2M.pt)"
        )
    try:
        model = build_beats(checkpoint["cfg"])
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"{path}: unsupported BEATs config: {error}") from error
    state = checkpoint["model"]
    missing = sorted(set(model.state_dict()) - set(state))
    unexpected = sorted(set(state) - set(model.state_dict()))
    if missing or unexpected:
        raise CheckpointError(
            f"{path}: state dict does not match its cfg: missing keys {missing[:8]}"
            f"{' ...' if len(missing) > 8 else ''}, unexpected keys {unexpected[:8]}"
            f"{' ...' if len(unexpected) > 8 else ''}"
        )
    expected = model.state_dict()
    wrong = sorted(key for key in expected if tuple(state[key].shape) != tuple(expected[key].shape))
    if wrong:
        key = wrong[0]
        raise CheckpointError(f"{path}: {len(wrong)} weight(s) have another shape than its cfg gives (e.g. {key}: "
                              f"{tuple(state[key].shape)} instead of {tuple(expected[key].shape)}); the file mixes two "
                              "BEATs configs or was altered: download the checkpoint again")
    model.load_state_dict({key: value.float() for key, value in state.items()}, strict=True)
    return model.eval()


def embedding_frames(window_samples: int) -> int:
    """Frame embeddings BEATs yields for one window: (fbank frames // 16) time x 8 frequency patches."""
    return (num_frames(window_samples) // PATCH_SIZE) * (NUM_MEL_BINS // PATCH_SIZE)


def encoder_fingerprint(encoder: torch.nn.Module) -> str:
    """sha256 over the encoder's weights: equal fingerprints export to interchangeable graphs."""
    digest = hashlib.sha256()
    for key, tensor in sorted(encoder.state_dict().items()):
        digest.update(key.encode())
        digest.update(tensor.detach().contiguous().numpy().tobytes())
    return digest.hexdigest()
