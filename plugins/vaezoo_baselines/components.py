"""Components of the baseline VAE: a diagonal-Gaussian posterior and prior, a Bernoulli likelihood."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from vaezoo.distributions import DiagonalNormal
from vaezoo.interfaces import Example, LatentDistribution, Likelihood, Posterior, Prior


class StandardNormalPrior(Prior):
    """p(z) = N(0, I), scaled by the sampling temperature."""

    def forward(self, state: Tensor | None, latent_shape: Sequence[int], temperature: float = 1.0) -> LatentDistribution:
        zeros = torch.zeros(tuple(latent_shape), device=self.device_hint(state))
        return DiagonalNormal(zeros, zeros, temperature)

    @staticmethod
    def device_hint(state: Tensor | None) -> torch.device:
        return state.device if state is not None else torch.device("cpu")

    @classmethod
    def example(cls) -> Example:
        z = torch.randn(3, 4, requires_grad=True)
        return Example(build=cls, inputs=(z,), output_shape=(3, 4), call=lambda m, i: m(i[0], i[0].shape).log_prob(i[0]))


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
        return Example(build=cls, inputs=(features, noise), output_shape=(3, 4), call=lambda m, i: m(i[0], None).sample(i[1])[0])


class BernoulliLikelihood(Likelihood):
    """Independent Bernoulli pixels with logits from the decoder; scored in nats.

    ``crop`` pixels on each side are ignored when scoring (e.g. 2 for MNIST padded to 32x32).
    """

    report_unit = "nats"

    def __init__(self, crop: int = 0) -> None:
        super().__init__()
        self.crop = crop

    def param_channels(self, data_channels: int) -> int:
        return data_channels

    def _cropped(self, t: Tensor) -> Tensor:
        c = self.crop
        return t[..., c:-c, c:-c] if c else t

    def log_prob(self, params: Tensor, x: Tensor) -> Tensor:
        log_p = -F.binary_cross_entropy_with_logits(self._cropped(params), self._cropped(x), reduction="none")
        return log_p.flatten(1).sum(1)

    def sample(self, params: Tensor, temperature: float = 1.0) -> Tensor:
        return torch.bernoulli(torch.sigmoid(params))

    def mean(self, params: Tensor) -> Tensor:
        return torch.sigmoid(params)

    def num_scored_dims(self, data_shape: Sequence[int]) -> int:
        c, h, w = data_shape
        return c * (h - 2 * self.crop) * (w - 2 * self.crop)

    @classmethod
    def example(cls) -> Example:
        logits = torch.randn(2, 1, 8, 8, requires_grad=True)
        x = torch.bernoulli(torch.full((2, 1, 8, 8), 0.5))
        return Example(build=lambda: cls(crop=1), inputs=(logits, x), output_shape=(2,), call=lambda m, i: m.log_prob(*i))
