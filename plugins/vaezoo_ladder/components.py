"""Ladder VAE components: the precision-weighted posterior and the two combiners that make the hierarchical
assembler's paths those of a Ladder VAE.

In a Ladder VAE (Sonderby et al. 2016) a deterministic bottom-up pass computes, for every latent group, a
likelihood-derived estimate ``N(mu_hat, sigma_hat^2)`` from ``x`` alone; the top-down pass then merges it with the
group's prior ``N(mu_p, sigma_p^2)`` as a product of Gaussians:

    sigma_q^2 = 1 / (sigma_hat^-2 + sigma_p^-2),    mu_q = (mu_hat sigma_hat^-2 + mu_p sigma_p^-2) sigma_q^2.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from vaezoo.distributions import DiagonalNormal
from vaezoo.interfaces import Combiner, Example, GroupPosterior, LatentDistribution


def precision_weighted(
    mu_hat: Tensor, log_sigma_hat: Tensor, mu_prior: Tensor, log_sigma_prior: Tensor
) -> tuple[Tensor, Tensor]:
    """``(mu_q, log sigma_q)`` of the normalised product ``N(mu_hat, sigma_hat^2) N(mu_p, sigma_p^2)``.

    Computed in log space: ``log sigma_q = -1/2 log(sigma_hat^-2 + sigma_p^-2)`` and ``mu_q`` as the convex
    combination with weight ``sigma_hat^-2 / (sigma_hat^-2 + sigma_p^-2) = sigmoid(2 (log sigma_p - log sigma_hat))``,
    which stays finite for very small or very large variances.
    """
    log_sigma_q = -0.5 * torch.logaddexp(-2.0 * log_sigma_hat, -2.0 * log_sigma_prior)
    weight = torch.sigmoid(2.0 * (log_sigma_prior - log_sigma_hat))
    return weight * mu_hat + (1.0 - weight) * mu_prior, log_sigma_q


class PrecisionWeightedPosterior(GroupPosterior):
    """q(z_i | .) of a Ladder VAE: a conv of the bottom-up features gives ``(mu_hat, sigma_hat)``
    (``sigma_hat = softplus(.) + min_sigma``), merged with the prior by precision weighting (see the module
    docstring). Without a prior the bottom-up estimate is the posterior."""

    def __init__(self, in_channels: int, latent_channels: int, kernel_size: int = 3, min_sigma: float = 1e-3) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(in_channels, 2 * latent_channels, kernel_size, padding=(kernel_size - 1) // 2)
        self.min_sigma = min_sigma

    def estimate(self, features: Tensor) -> tuple[Tensor, Tensor]:
        """The likelihood-derived ``(mu_hat, log sigma_hat)`` from the bottom-up features."""
        mu_hat, raw = self.conv(features).chunk(2, dim=1)
        return mu_hat, torch.log(F.softplus(raw) + self.min_sigma)

    def forward(self, features: Tensor, prior: LatentDistribution | None) -> DiagonalNormal:
        mu_hat, log_sigma_hat = self.estimate(features)
        if prior is None:
            return DiagonalNormal(mu_hat, log_sigma_hat)
        mu_q, log_sigma_q = precision_weighted(mu_hat, log_sigma_hat, prior.mu, torch.log(prior.sigma))
        return DiagonalNormal(mu_q, log_sigma_q)

    @classmethod
    def example(cls) -> Example:
        features, noise = torch.randn(2, 6, 4, 4), torch.randn(2, 3, 4, 4)
        prior = DiagonalNormal(torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4))
        return Example(
            build=lambda: cls(6, 3),
            inputs=(features, noise),
            output_shape=(2, 3, 4, 4),
            call=lambda m, i: m(i[0], prior).sample(i[1])[0],
        )


class PassThroughCombiner(Combiner):
    """An encoder combiner that returns the bottom-up feature unchanged and ignores the decoder state: a Ladder VAE's
    likelihood-derived estimate depends on ``x`` alone, and the top-down information enters only through the prior
    in the precision weighting."""

    def __init__(self, in_channels: int, out_channels: int, aux_channels: int) -> None:
        super().__init__(in_channels, out_channels, aux_channels)
        if in_channels != out_channels:
            raise ValueError(f"PassThroughCombiner keeps its channels, got {in_channels} -> {out_channels}")

    def forward(self, x: Tensor, aux: Tensor) -> Tensor:
        return x

    @classmethod
    def example(cls) -> Example:
        x = torch.randn(2, 4, 5, 5, requires_grad=True)
        return Example(build=lambda: cls(4, 4, 3), inputs=(x, torch.randn(2, 3, 5, 5)), output_shape=(2, 4, 5, 5))


class LatentOnlyCombiner(Combiner):
    """A decoder combiner whose new state is a convolution of the latent sample alone: the top-down path of a
    Ladder VAE is the Markov chain ``z_L -> z_{L-1} -> ... -> x`` and carries no deterministic state past a
    latent group."""

    def __init__(self, in_channels: int, out_channels: int, aux_channels: int, kernel_size: int = 1) -> None:
        super().__init__(in_channels, out_channels, aux_channels)
        self.conv = torch.nn.Conv2d(aux_channels, out_channels, kernel_size, padding=(kernel_size - 1) // 2)

    def forward(self, x: Tensor, aux: Tensor) -> Tensor:
        return self.conv(aux)

    @classmethod
    def example(cls) -> Example:
        x, z = torch.randn(2, 4, 5, 5), torch.randn(2, 3, 5, 5)
        return Example(build=lambda: cls(4, 6, 3), inputs=(x, z), output_shape=(2, 6, 5, 5))
