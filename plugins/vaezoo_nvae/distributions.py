"""NVAE's latent distributions: a soft-clamped diagonal Normal, its priors and posteriors.

``SoftClampedNormal`` keeps the raw (pre-clamp) parameters so that a residual posterior can add its own raw
parameters to the prior's before clamping, as NVAE does.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from vaezoo.distributions import full_precision
from vaezoo.interfaces import Example, LatentDistribution, Posterior, Prior

from .layers import HALF_LOG_2PI, WeightNormConv2d, elu, soft_clamp


class SoftClampedNormal(LatentDistribution):
    """N(mu, sigma^2) with ``mu = 5 tanh(raw_mu / 5)`` and ``sigma = (exp(5 tanh(raw_log_sigma / 5)) + 0.01) * t``."""

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
        return noise * self.sigma + self.mu, noise

    def log_prob(self, z: Tensor) -> Tensor:
        normalized = (z - self.mu) / self.sigma
        return -0.5 * normalized * normalized - HALF_LOG_2PI - torch.log(self.sigma)


def _split(params: Tensor) -> tuple[Tensor, Tensor]:
    mu, log_sigma = torch.chunk(params, 2, dim=1)
    return mu, log_sigma


class FixedNormalPrior(Prior):
    """The unconditional top prior: a ``SoftClampedNormal`` with zero raw parameters, i.e. N(0, 1.01^2 t^2).

    ``state`` only supplies the device and dtype.
    """

    def forward(self, state: Tensor | None, latent_shape: Sequence[int], temperature: float = 1.0) -> SoftClampedNormal:
        like = state if state is not None else torch.empty(0)
        zeros = like.new_zeros(tuple(latent_shape))
        return SoftClampedNormal(zeros, zeros, temperature)

    @classmethod
    def example(cls) -> Example:
        z = torch.randn(2, 3, 4, 4, requires_grad=True)
        return Example(
            build=cls, inputs=(z,), output_shape=(2, 3, 4, 4), call=lambda m, i: m(i[0], i[0].shape).log_prob(i[0])
        )


class NormalPrior(Prior):
    """p(z_i | z_<i): ELU then a weight-normalised 1x1 conv of the decoder state gives (raw mu, raw log sigma)."""

    def __init__(self, in_channels: int, latent_channels: int, kernel_size: int = 1) -> None:
        super().__init__()
        self.conv = WeightNormConv2d(
            in_channels, 2 * latent_channels, kernel_size, padding=(kernel_size - 1) // 2, bias=True
        )

    def forward(self, state: Tensor | None, latent_shape: Sequence[int], temperature: float = 1.0) -> SoftClampedNormal:
        mu, log_sigma = _split(self.conv(elu(state)))
        return SoftClampedNormal(mu, log_sigma, temperature)

    @classmethod
    def example(cls) -> Example:
        state, noise = torch.randn(2, 6, 4, 4), torch.randn(2, 3, 4, 4)
        return Example(
            build=lambda: cls(6, 3),
            inputs=(state, noise),
            output_shape=(2, 3, 4, 4),
            call=lambda m, i: m(i[0], i[1].shape).sample(i[1])[0],
        )


class NormalPosterior(Posterior):
    """q(z_i | x, z_<i): a weight-normalised conv of the features gives (raw mu, raw log sigma); the prior is ignored."""

    residual = False

    def __init__(self, in_channels: int, latent_channels: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.conv = WeightNormConv2d(
            in_channels, 2 * latent_channels, kernel_size, padding=(kernel_size - 1) // 2, bias=True
        )

    def forward(self, features: Tensor, prior: LatentDistribution | None) -> SoftClampedNormal:
        mu, log_sigma = _split(self.conv(features))
        if self.residual:
            raw_mu, raw_log_sigma = getattr(prior, "raw_mu", None), getattr(prior, "raw_log_sigma", None)
            if raw_mu is None or raw_log_sigma is None:
                raise TypeError(
                    f"{type(self).__name__} needs a prior that exposes raw_mu/raw_log_sigma, got {type(prior).__name__}"
                )
            # NVAE sums the raw (pre-clamp) parameters; the clamp is applied to the sum
            mu, log_sigma = raw_mu + mu, raw_log_sigma + log_sigma
        return SoftClampedNormal(mu, log_sigma)

    @classmethod
    def example(cls) -> Example:
        features, noise = torch.randn(2, 6, 4, 4), torch.randn(2, 3, 4, 4)
        prior = SoftClampedNormal(torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4))
        return Example(
            build=lambda: cls(6, 3),
            inputs=(features, noise),
            output_shape=(2, 3, 4, 4),
            call=lambda m, i: m(i[0], prior).sample(i[1])[0],
        )


class ResidualNormalPosterior(NormalPosterior):
    """NVAE's residual posterior: q = SoftClampedNormal(raw_prior + raw_posterior), relative to the prior."""

    residual = True
