"""A prior of another family than the diagonal Gaussian works in the hierarchical model with or without flows: the
KL of such a group is estimated from the sample, log q(z) - log p(z); two Gaussians keep the closed form."""

from __future__ import annotations

import math
from collections.abc import Sequence

import pytest
import torch
from torch import Tensor, nn

from vaezoo.interfaces import ConditionalPrior, Example, LatentDistribution, UnconditionalPrior
from vaezoo.models.hierarchical import HierarchicalVAE
from vaezoo.testing.doubles import hierarchical_arguments


class Laplace(LatentDistribution):
    """Laplace(loc, scale), reparameterised from standard-normal noise through the normal and Laplace CDFs."""

    def __init__(self, loc: Tensor, scale: Tensor) -> None:
        self.loc, self.scale = loc, scale

    def sample(self, noise: Tensor | None = None) -> tuple[Tensor, Tensor]:
        noise = torch.randn_like(self.loc) if noise is None else noise
        u = 0.5 * (1 + torch.erf(noise / math.sqrt(2))) - 0.5
        return self.loc - self.scale * torch.sign(u) * torch.log1p(-2 * u.abs()), noise

    def log_prob(self, z: Tensor) -> Tensor:
        return -(z - self.loc).abs() / self.scale - torch.log(2 * self.scale)


class LaplaceTop(UnconditionalPrior):
    def forward(self, state: Tensor | None, latent_shape: Sequence[int], temperature: float = 1.0) -> Laplace:
        zeros = state.new_zeros(tuple(latent_shape))
        return Laplace(zeros, torch.full_like(zeros, temperature))

    @classmethod
    def example(cls) -> Example:
        return Example(build=cls)


class LaplaceConditional(ConditionalPrior):
    def __init__(self, in_channels: int, latent_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 2 * latent_channels, 1)

    def forward(self, state: Tensor, latent_shape: Sequence[int], temperature: float = 1.0) -> Laplace:
        loc, log_scale = self.conv(state).chunk(2, dim=1)
        return Laplace(loc, torch.exp(log_scale) * temperature)

    @classmethod
    def example(cls) -> Example:
        return Example(build=lambda: cls(2, 2))


def _output(**slots):
    torch.manual_seed(0)
    model = HierarchicalVAE(**{**hierarchical_arguments(), **slots}).eval()
    x = torch.rand(3, 1, 8, 8).round()
    torch.manual_seed(1)
    return model(x, noise=[torch.randn(s) for s in model.latent_shapes(3)])


def test_a_laplace_prior_without_flows_has_the_kl_of_the_sample():
    out = _output(top_prior=LaplaceTop(), prior=LaplaceConditional)
    kl = torch.stack(list(out.kl)).sum(0) if isinstance(out.kl, (list, tuple)) else out.kl.sum(0)
    assert torch.isfinite(kl).all()
    # every group's KL is log q(z) - log p(z) at its sample, so their sum is the model's log q - log p per example
    torch.testing.assert_close(kl, out.log_q - out.log_p, rtol=1e-6, atol=1e-5)


def test_two_gaussians_keep_the_closed_form():
    out = _output()
    kl = torch.stack(list(out.kl)).sum(0) if isinstance(out.kl, (list, tuple)) else out.kl.sum(0)
    gap = (kl - (out.log_q - out.log_p)).abs().max()
    assert gap > 1e-3  # the analytic KL is not the one-sample estimate


def test_the_closed_form_is_refused_for_another_family():
    laplace = Laplace(torch.zeros(2), torch.ones(2))
    with pytest.raises(TypeError, match="no closed-form KL of Laplace from Laplace"):
        laplace.kl(laplace)
