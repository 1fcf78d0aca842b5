"""Generic priors and posteriors of one latent group: a standard Normal prior, and Normal priors and posteriors
whose (soft-clamped) parameters are a weight-normalised conv of the decoder state or of the encoder features; and
the standard Normal joint prior over several groups' standardised noise."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from ..distributions import DiagonalNormal, SoftClampedNormal
from ..interfaces import ConditionalPrior, Example, GroupPosterior, JointPrior, LatentDistribution, UnconditionalPrior
from ..nn import WeightNormConv2d, elu


def split_parameters(params: Tensor) -> tuple[Tensor, Tensor]:
    """The two channel halves of a conv output: (mu, log sigma), before any clamping."""
    mu, log_sigma = torch.chunk(params, 2, dim=1)
    return mu, log_sigma


class StandardNormalPrior(UnconditionalPrior):
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


class NormalPrior(ConditionalPrior):
    """p(z_i | z_<i): ELU then a weight-normalised 1x1 conv of the decoder state gives (raw mu, raw log sigma)."""

    def __init__(self, in_channels: int, latent_channels: int, kernel_size: int = 1) -> None:
        super().__init__()
        self.conv = WeightNormConv2d(
            in_channels, 2 * latent_channels, kernel_size, padding=(kernel_size - 1) // 2, bias=True
        )

    def forward(self, state: Tensor | None, latent_shape: Sequence[int], temperature: float = 1.0) -> SoftClampedNormal:
        mu, log_sigma = split_parameters(self.conv(elu(state)))
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


class NormalPosterior(GroupPosterior):
    """q(z_i | x, z_<i): a weight-normalised conv of the features gives (raw mu, raw log sigma); the prior is ignored."""

    def __init__(self, in_channels: int, latent_channels: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.conv = WeightNormConv2d(
            in_channels, 2 * latent_channels, kernel_size, padding=(kernel_size - 1) // 2, bias=True
        )

    def forward(self, features: Tensor, prior: LatentDistribution | None) -> SoftClampedNormal:
        return SoftClampedNormal(*split_parameters(self.conv(features)))

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


class StandardNormalJointPrior(JointPrior):
    """p(eps) = N(0, I) over the top scale's standardised noise: exactly the groups' own priors, as a baseline
    and as the simplest joint prior (a model with it scores and samples like the model without)."""

    def __init__(self, channels: int) -> None:
        super().__init__(channels)
        self.register_buffer("_device_hint", torch.zeros(()), persistent=False)

    def log_prob(self, noise: Tensor) -> Tensor:
        return torch.sum(-0.5 * noise * noise - 0.5 * math.log(2 * math.pi), dim=list(range(1, noise.dim())))

    def sample(
        self, shape, temperature: float = 1.0, noise: Tensor | None = None, sampler: str | None = None
    ) -> Tensor:
        if sampler is not None:
            raise ValueError(f"{type(self).__name__} has no samplers, got {sampler!r}")
        noise = torch.randn(tuple(shape), device=self._device_hint.device) if noise is None else noise
        self.last_sample_info = {"sampler": "exact"}
        return noise * temperature

    @classmethod
    def example(cls) -> Example:
        noise = torch.randn(2, 4, 2, 2, requires_grad=True)
        return Example(build=lambda: cls(4), inputs=(noise,), output_shape=(2,), call=lambda m, i: m.log_prob(i[0]))
