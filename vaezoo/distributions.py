"""Generic latent distributions: a diagonal Normal and a soft-clamped diagonal Normal.

``SoftClampedNormal`` keeps the raw (pre-clamp) parameters so that a residual posterior can add its own raw
parameters to the prior's before clamping, as NVAE does.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .interfaces import LatentDistribution
from .nn import soft_clamp

HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)
_HALF_TYPES = (torch.float16, torch.bfloat16)


def full_precision(x: Tensor) -> Tensor:
    """``x`` in float32 if it is a half type (autocast output), else unchanged: densities, KL terms and the
    likelihood are computed in full precision whatever the precision of the network that produced them."""
    return x.float() if x.dtype in _HALF_TYPES else x


def in_layout_of(noise: Tensor, like: Tensor) -> Tensor:
    """``noise`` with the memory layout of ``like`` (the same values at the same indices): standard-normal draws come
    in NCHW order, and an elementwise op between an NCHW and a channels_last tensor runs 3-6x slower on CPUs than one
    between two tensors of one layout, and hands the mixed layout on to every op downstream of the sample."""
    if (
        noise.dim() == 4
        and like.dim() == 4
        and noise.is_contiguous()
        and not like.is_contiguous()
        and like.is_contiguous(memory_format=torch.channels_last)
    ):
        return noise.contiguous(memory_format=torch.channels_last)
    return noise


class DiagonalNormal(LatentDistribution):
    """N(mu, diag(sigma^2)) with sigma = exp(log_sigma) * temperature."""

    gaussian = True

    def __init__(self, mu: Tensor, log_sigma: Tensor, temperature: float = 1.0) -> None:
        mu, log_sigma = full_precision(mu), full_precision(log_sigma)
        self.mu = mu
        self.log_sigma = log_sigma + math.log(temperature) if temperature != 1.0 else log_sigma
        self.sigma = torch.exp(self.log_sigma)

    def sample(self, noise: Tensor | None = None) -> tuple[Tensor, Tensor]:
        if noise is None:
            noise = torch.randn_like(self.mu)
        return self.mu + self.sigma * in_layout_of(noise, self.mu), noise

    def log_prob(self, z: Tensor) -> Tensor:
        normalized = (z - self.mu) / self.sigma
        return -0.5 * normalized * normalized - HALF_LOG_2PI - self.log_sigma


class SoftClampedNormal(LatentDistribution):
    """N(mu, sigma^2) with ``mu = 5 tanh(raw_mu / 5)`` and ``sigma = (exp(5 tanh(raw_log_sigma / 5)) + 0.01) * t``."""

    gaussian = True

    def __init__(
        self,
        raw_mu: Tensor,
        raw_log_sigma: Tensor,
        temperature: float = 1.0,
        bound: float = 5.0,
        min_sigma: float = 1e-2,
    ) -> None:
        raw_mu, raw_log_sigma = full_precision(raw_mu), full_precision(raw_log_sigma)  # fp32 under autocast
        self.raw_mu, self.raw_log_sigma = raw_mu, raw_log_sigma
        self.mu = soft_clamp(raw_mu, bound)
        self.sigma = torch.exp(soft_clamp(raw_log_sigma, bound)) + min_sigma
        if temperature != 1.0:
            self.sigma = self.sigma * temperature

    def sample(self, noise: Tensor | None = None) -> tuple[Tensor, Tensor]:
        if noise is None:
            noise = torch.randn(self.mu.shape, dtype=self.mu.dtype, device=self.mu.device)
        return in_layout_of(noise, self.mu) * self.sigma + self.mu, noise

    def log_prob(self, z: Tensor) -> Tensor:
        normalized = (z - self.mu) / self.sigma
        return -0.5 * normalized * normalized - HALF_LOG_2PI - torch.log(self.sigma)
