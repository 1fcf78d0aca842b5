"""Generic latent distributions (paper-specific ones live in their plugins)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .interfaces import LatentDistribution

_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)
_HALF_TYPES = (torch.float16, torch.bfloat16)


def full_precision(x: Tensor) -> Tensor:
    """``x`` in float32 if it is a half type (autocast output), else unchanged: densities, KL terms and the
    likelihood are computed in full precision whatever the precision of the network that produced them."""
    return x.float() if x.dtype in _HALF_TYPES else x


class DiagonalNormal(LatentDistribution):
    """N(mu, diag(sigma^2)) with sigma = exp(log_sigma) * temperature."""

    def __init__(self, mu: Tensor, log_sigma: Tensor, temperature: float = 1.0) -> None:
        mu, log_sigma = full_precision(mu), full_precision(log_sigma)
        self.mu = mu
        self.log_sigma = log_sigma + math.log(temperature) if temperature != 1.0 else log_sigma
        self.sigma = torch.exp(self.log_sigma)

    def sample(self, noise: Tensor | None = None) -> tuple[Tensor, Tensor]:
        if noise is None:
            noise = torch.randn_like(self.mu)
        return self.mu + self.sigma * noise, noise

    def log_prob(self, z: Tensor) -> Tensor:
        normalized = (z - self.mu) / self.sigma
        return -0.5 * normalized * normalized - _HALF_LOG_2PI - self.log_sigma
