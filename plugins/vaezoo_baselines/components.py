"""Components of the baseline VAE: a diagonal-Gaussian posterior and prior (and the shared Bernoulli likelihood)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from vaezoo.distributions import DiagonalNormal
from vaezoo.interfaces import Example, LatentDistribution, Posterior, Prior
from vaezoo.likelihoods import BernoulliLikelihood


class StandardNormalPrior(Prior):
    """p(z) = N(0, I), scaled by the sampling temperature."""

    def forward(
        self, state: Tensor | None, latent_shape: Sequence[int], temperature: float = 1.0
    ) -> LatentDistribution:
        zeros = torch.zeros(tuple(latent_shape), device=self.device_hint(state))
        return DiagonalNormal(zeros, zeros, temperature)

    @staticmethod
    def device_hint(state: Tensor | None) -> torch.device:
        return state.device if state is not None else torch.device("cpu")

    @classmethod
    def example(cls) -> Example:
        z = torch.randn(3, 4, requires_grad=True)
        return Example(
            build=cls, inputs=(z,), output_shape=(3, 4), call=lambda m, i: m(i[0], i[0].shape).log_prob(i[0])
        )


class GaussianPosterior(Posterior):
    """q(z|x) = N(mu, sigma^2) with (mu, log sigma) the two channel halves of the encoder output."""

    def __init__(self, min_log_sigma: float = -10.0, max_log_sigma: float = 5.0) -> None:
        super().__init__()
        self.min_log_sigma, self.max_log_sigma = min_log_sigma, max_log_sigma

    def forward(self, features: Tensor, prior: LatentDistribution | None) -> LatentDistribution:
        mu, log_sigma = features.chunk(2, dim=1)
        return DiagonalNormal(mu, log_sigma.clamp(self.min_log_sigma, self.max_log_sigma))

    @classmethod
    def example(cls) -> Example:
        features = torch.randn(3, 8, requires_grad=True)
        noise = torch.randn(3, 4)
        return Example(
            build=cls, inputs=(features, noise), output_shape=(3, 4), call=lambda m, i: m(i[0], None).sample(i[1])[0]
        )


__all__ = ["BernoulliLikelihood", "GaussianPosterior", "StandardNormalPrior"]
