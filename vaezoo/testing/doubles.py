"""Minimal stand-ins for each slot of the hierarchical assembler: tiny, unregistered, with no paper behind them.

They let a plugin test one part of its own inside a whole model (e.g. a joint prior or a combiner:
``HierarchicalVAE(**{**hierarchical_arguments(), "decoder_combiner": MyCombiner})``), and they are what
``HierarchicalVAE.example()`` is built from.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..distributions import DiagonalNormal
from ..interfaces import (
    Cell,
    Combiner,
    ConditionalPrior,
    Example,
    GroupPosterior,
    LatentDistribution,
    Likelihood,
    UnconditionalPrior,
)


class ConvCell(Cell):
    """A 3x3 convolution (nearest up-sampling first for stride -1)."""

    supported_strides = (1, 2, -1)

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__(in_channels, out_channels, stride)
        self.conv = nn.Conv2d(in_channels, out_channels, 3, stride=max(stride, 1), padding=1)

    def forward(self, x: Tensor) -> Tensor:
        if self.stride == -1:
            x = F.interpolate(x, scale_factor=2, mode="nearest")
        return self.conv(x)

    @classmethod
    def example(cls) -> Example:
        return Example(build=lambda: cls(2, 3, 2), inputs=(torch.randn(2, 2, 4, 4),), output_shape=(2, 3, 2, 2))


class ConcatCombiner(Combiner):
    """A 1x1 convolution of ``cat[x, aux]``."""

    def __init__(self, in_channels: int, out_channels: int, aux_channels: int) -> None:
        super().__init__(in_channels, out_channels, aux_channels)
        self.conv = nn.Conv2d(in_channels + aux_channels, out_channels, 1)

    def forward(self, x: Tensor, aux: Tensor) -> Tensor:
        return self.conv(torch.cat([x, aux], dim=1))

    @classmethod
    def example(cls) -> Example:
        x, aux = torch.randn(2, 2, 3, 3), torch.randn(2, 4, 3, 3)
        return Example(build=lambda: cls(2, 3, 4), inputs=(x, aux), output_shape=(2, 3, 3, 3))


class ZeroNormalPrior(UnconditionalPrior):
    """N(0, t^2), on the state's device and dtype."""

    def forward(self, state: Tensor | None, latent_shape: Sequence[int], temperature: float = 1.0) -> DiagonalNormal:
        zeros = torch.zeros(tuple(latent_shape)) if state is None else state.new_zeros(tuple(latent_shape))
        return DiagonalNormal(zeros, zeros, temperature)

    @classmethod
    def example(cls) -> Example:
        z = torch.randn(2, 3, requires_grad=True)
        return Example(
            build=cls, inputs=(z,), output_shape=(2, 3), call=lambda m, i: m(i[0], i[0].shape).log_prob(i[0])
        )


class ConvNormalPrior(ConditionalPrior):
    """N(mu, sigma^2) from a 1x1 convolution of the decoder state."""

    def __init__(self, in_channels: int, latent_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 2 * latent_channels, 1)

    def forward(self, state: Tensor | None, latent_shape: Sequence[int], temperature: float = 1.0) -> DiagonalNormal:
        mu, log_sigma = self.conv(state).chunk(2, dim=1)
        return DiagonalNormal(mu, log_sigma, temperature)

    @classmethod
    def example(cls) -> Example:
        state, noise = torch.randn(2, 4, 3, 3), torch.randn(2, 2, 3, 3)
        return Example(
            build=lambda: cls(4, 2), inputs=(state, noise), output_shape=(2, 2, 3, 3),
            call=lambda m, i: m(i[0], i[1].shape).sample(i[1])[0],
        )  # fmt: skip


class ConvNormalPosterior(GroupPosterior):
    """N(mu, sigma^2) from a 1x1 convolution of the features (the prior is not used)."""

    def __init__(self, in_channels: int, latent_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 2 * latent_channels, 1)

    def forward(self, features: Tensor, prior: LatentDistribution | None) -> DiagonalNormal:
        mu, log_sigma = self.conv(features).chunk(2, dim=1)
        return DiagonalNormal(mu, log_sigma)

    @classmethod
    def example(cls) -> Example:
        features, noise = torch.randn(2, 4, 3, 3), torch.randn(2, 2, 3, 3)
        return Example(
            build=lambda: cls(4, 2), inputs=(features, noise), output_shape=(2, 2, 3, 3),
            call=lambda m, i: m(i[0], None).sample(i[1])[0],
        )  # fmt: skip


class BernoulliLogits(Likelihood):
    """Independent Bernoulli pixels with logits as parameters (one channel per data channel)."""

    report_unit = "nats"

    def param_channels(self, data_channels: int) -> int:
        return data_channels

    def log_prob(self, params: Tensor, x: Tensor) -> Tensor:
        return -F.binary_cross_entropy_with_logits(params, x, reduction="none").flatten(1).sum(1)

    def sample(self, params: Tensor, temperature: float = 1.0) -> Tensor:
        return torch.bernoulli(torch.sigmoid(params))

    def mean(self, params: Tensor) -> Tensor:
        return torch.sigmoid(params)

    @classmethod
    def example(cls) -> Example:
        params, x = torch.randn(2, 1, 3, 3, requires_grad=True), torch.rand(2, 1, 3, 3).round()
        return Example(build=cls, inputs=(params, x), output_shape=(2,), call=lambda m, i: m.log_prob(i[0], i[1]))


def hierarchical_arguments() -> dict[str, Any]:
    """Constructor arguments of ``HierarchicalVAE`` for a 2-scale model on 1x8x8 images made of the doubles above
    (3 latent groups: 2 at 2x2, 1 at 4x4)."""
    return dict(
        image_shape=[1, 8, 8],
        likelihood=BernoulliLogits(),
        stem=ConvCell,
        preprocess_cell=ConvCell,
        encoder_cell=ConvCell,
        encoder_combiner=ConcatCombiner,
        encoder_head=ConvCell,
        posterior=ConvNormalPosterior,
        top_prior=ZeroNormalPrior(),
        prior=ConvNormalPrior,
        decoder_cell=ConvCell,
        decoder_combiner=ConcatCombiner,
        postprocess_cell=ConvCell,
        decoder_head=ConvCell,
        encoder_channels=2,
        decoder_channels=2,
        latent_channels=2,
        num_latent_scales=2,
        groups_per_scale=2,
        adaptive_groups=True,
        encoder_cells_per_group=1,
        decoder_cells_per_group=1,
        preprocess_blocks=1,
        preprocess_cells=1,
        postprocess_blocks=1,
        postprocess_cells=1,
    )
