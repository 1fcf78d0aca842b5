"""A small time-conditioned network for latents: the swappable ``network`` of a score prior.

It predicts the noise of the perturbed latent (the prior mixes it with the Normal one, see
:mod:`vaezoo_lsgm.prior`). A few pre-activation residual blocks (GroupNorm, SiLU, 3x3 conv) at the latents'
resolution, each told the time through a sinusoidal embedding and a per-channel shift; the paper's CIFAR-10 model is
a large NCSN++, this one is sized for CPU runs on small latents and can be swapped for any registered denoiser.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vaezoo.interfaces import Denoiser, Example


def _groups(channels: int) -> int:
    """GroupNorm groups: 8 when they divide the channels (the small widths used here), fewer otherwise."""
    return math.gcd(channels, 8)


def time_embedding(t: Tensor, dim: int, scale: float = 1000.0) -> Tensor:
    """Sinusoidal features of ``scale * t`` (``[B] -> [B, dim]``): t in [0, 1] spans many periods."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / max(half - 1, 1))
    angles = scale * t.float()[:, None] * freqs[None]
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)


class _TimeResidualBlock(nn.Module):
    def __init__(self, channels: int, embedding: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(channels), channels)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.time = nn.Linear(embedding, channels)
        self.norm2 = nn.GroupNorm(_groups(channels), channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)  # each block starts as the identity
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.time(emb)[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return x + h


class LatentScoreNetwork(Denoiser):
    """Noise prediction ``(z_t, t) -> eps`` for latents ``[B, channels, H, W]``: a 3x3 conv to ``hidden``
    channels, ``num_blocks`` time-conditioned residual blocks, a 3x3 conv back."""

    def __init__(
        self, channels: int, hidden: int = 64, num_blocks: int = 4, embedding: int = 64, dropout: float = 0.0
    ) -> None:
        super().__init__(channels)
        if hidden < 2 or num_blocks < 1 or embedding < 2:
            raise ValueError(
                f"need hidden >= 2, num_blocks >= 1, embedding >= 2; got {hidden}, {num_blocks}, {embedding}"
            )
        self.embedding = embedding
        self.time_mlp = nn.Sequential(nn.Linear(embedding, embedding), nn.SiLU(), nn.Linear(embedding, embedding))
        self.conv_in = nn.Conv2d(channels, hidden, 3, padding=1)
        self.blocks = nn.ModuleList(_TimeResidualBlock(hidden, embedding, dropout) for _ in range(num_blocks))
        self.norm_out = nn.GroupNorm(_groups(hidden), hidden)
        self.conv_out = nn.Conv2d(hidden, channels, 3, padding=1)

    def forward(self, z: Tensor, t: Tensor) -> Tensor:
        emb = self.time_mlp(time_embedding(t.expand(z.size(0)) if t.dim() == 0 else t, self.embedding).to(z.dtype))
        h = self.conv_in(z)
        for block in self.blocks:
            h = block(h, emb)
        return self.conv_out(F.silu(self.norm_out(h)))

    @classmethod
    def example(cls) -> Example:
        z, t = torch.randn(2, 4, 4, 4), torch.rand(2)
        return Example(
            build=lambda: cls(4, hidden=8, num_blocks=1, embedding=8), inputs=(z, t), output_shape=(2, 4, 4, 4)
        )
