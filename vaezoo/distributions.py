"""Generic latent distributions (paper-specific ones live in their plugins)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .interfaces import LatentDistribution

_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


class DiagonalNormal(LatentDistribution):
    """N(mu, diag(sigma^2)) with sigma = exp(log_sigma) * temperature."""

    def __init__(self, mu: Tensor, log_sigma: Tensor, temperature: float = 1.0) -> None:
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
