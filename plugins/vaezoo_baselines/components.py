"""The posterior of the baseline ConvVAE: a diagonal Gaussian read directly from the encoder output."""

from __future__ import annotations

import torch
from torch import Tensor

from vaezoo.distributions import DiagonalNormal
from vaezoo.interfaces import Example, LatentDistribution, VectorPosterior


class GaussianPosterior(VectorPosterior):
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


__all__ = ["GaussianPosterior"]
