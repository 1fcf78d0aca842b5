"""NVAE's latent distributions: the fixed top prior N(0, 1.01^2) and the residual Normal posterior.

Both build on the core's soft-clamped Normal (:class:`vaezoo.distributions.SoftClampedNormal`) and its Normal
prior and posterior (:mod:`vaezoo.components.latents`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from vaezoo.components.latents import NormalPosterior, split_parameters
from vaezoo.distributions import SoftClampedNormal
from vaezoo.interfaces import Example, LatentDistribution, UnconditionalPrior


class FixedNormalPrior(UnconditionalPrior):
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


class ResidualNormalPosterior(NormalPosterior):
    """NVAE's residual posterior: q = SoftClampedNormal(raw_prior + raw_posterior), relative to the prior."""

    def forward(self, features: Tensor, prior: LatentDistribution | None) -> SoftClampedNormal:
        mu, log_sigma = split_parameters(self.conv(features))
        raw_mu, raw_log_sigma = getattr(prior, "raw_mu", None), getattr(prior, "raw_log_sigma", None)
        if raw_mu is None or raw_log_sigma is None:
            raise TypeError(
                f"{type(self).__name__} needs a prior that exposes raw_mu/raw_log_sigma, got {type(prior).__name__}"
            )
        # NVAE sums the raw (pre-clamp) parameters; the clamp is applied to the sum
        return SoftClampedNormal(raw_mu + mu, raw_log_sigma + log_sigma)
