"""VDVAE's building blocks (Child, ICLR 2021): the bottleneck residual block, the bottleneck Gaussian posterior and
prior, and the z-injection combiner.

A bottleneck block is ``GELU -> 1x1 -> GELU -> 3x3 -> GELU -> 3x3 -> GELU -> 1x1`` with ``bottleneck_ratio`` times
the input width in the middle. Residual blocks add the input; the initial weights of their last conv (and of the
z-injection conv) are scaled by ``1/sqrt(depth)``, ``depth`` being the number of residual blocks of the network, so
that the residual stream's variance does not grow with depth. Down-sampling blocks average-pool their output by 2,
up-sampling blocks repeat pixels (nearest) before the block.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vaezoo.distributions import DiagonalNormal
from vaezoo.interfaces import Cell, Combiner, ConditionalPrior, Example, GroupPosterior, LatentDistribution


class Bottleneck(nn.Module):
    """The four-conv GELU bottleneck (no residual): ``in -> mid -> mid -> mid -> out``."""

    def __init__(
        self,
        in_channels: int,
        middle_channels: int,
        out_channels: int,
        last_scale: float = 1.0,
        zero_last: bool = False,
    ) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(in_channels, middle_channels, 1)
        self.c2 = nn.Conv2d(middle_channels, middle_channels, 3, padding=1)
        self.c3 = nn.Conv2d(middle_channels, middle_channels, 3, padding=1)
        self.c4 = nn.Conv2d(middle_channels, out_channels, 1)
        with torch.no_grad():
            if zero_last:
                self.c4.weight.zero_()
                self.c4.bias.zero_()
            else:
                self.c4.weight.mul_(last_scale)

    def forward(self, x: Tensor) -> Tensor:
        x = self.c2(F.gelu(self.c1(F.gelu(x))))
        return self.c4(F.gelu(self.c3(F.gelu(x))))


def _middle(channels: int, ratio: float) -> int:
    return max(1, int(channels * ratio))


class BottleneckBlock(Cell):
    """VDVAE's residual bottleneck block: ``skip(x) + bottleneck(x)``, average-pooled by 2 at stride 2, after a
    nearest up-sampling at stride -1. The skip is the identity, or a 1x1 conv when the width changes."""

    supported_strides = (1, 2, -1)

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int = 1,
        bottleneck_ratio: float = 0.25,
        depth: int = 1,
    ) -> None:
        super().__init__(in_channels, out_channels, stride)
        if depth < 1:
            raise ValueError(f"depth (the number of residual blocks) must be positive, got {depth}")
        self.block = Bottleneck(
            in_channels, _middle(in_channels, bottleneck_ratio), out_channels, last_scale=1.0 / math.sqrt(depth)
        )
        self.skip = nn.Identity() if in_channels == out_channels else nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        if self.stride == -1:
            x = F.interpolate(x, scale_factor=2, mode="nearest")
        out = self.skip(x) + self.block(x)
        return F.avg_pool2d(out, 2) if self.stride == 2 else out

    @classmethod
    def example(cls) -> Example:
        x = torch.randn(2, 8, 8, 8)
        return Example(build=lambda: cls(8, 8, 2, depth=4), inputs=(x,), output_shape=(2, 8, 4, 4))


class BottleneckNormalPosterior(GroupPosterior):
    """q(z_i | x, z_<i): a bottleneck (no residual) of the features gives ``(mu, log sigma)``; the prior is not used
    (in VDVAE the posterior block reads the concatenated decoder state and encoder activations, here merged by the
    encoder combiner)."""

    def __init__(self, in_channels: int, latent_channels: int, bottleneck_ratio: float = 0.25) -> None:
        super().__init__()
        self.net = Bottleneck(in_channels, _middle(in_channels, bottleneck_ratio), 2 * latent_channels)

    def forward(self, features: Tensor, prior: LatentDistribution | None) -> DiagonalNormal:
        mu, log_sigma = self.net(features).chunk(2, dim=1)
        return DiagonalNormal(mu, log_sigma)

    @classmethod
    def example(cls) -> Example:
        features, noise = torch.randn(2, 8, 4, 4), torch.randn(2, 3, 4, 4)
        return Example(
            build=lambda: cls(8, 3),
            inputs=(features, noise),
            output_shape=(2, 3, 4, 4),
            call=lambda m, i: m(i[0], None).sample(i[1])[0],
        )


class BottleneckNormalPrior(ConditionalPrior):
    """p(z_i | z_<i): a bottleneck of the decoder state gives ``(mu, log sigma)``; its last conv starts at zero, so
    every prior starts as N(0, I)."""

    def __init__(self, in_channels: int, latent_channels: int, bottleneck_ratio: float = 0.25) -> None:
        super().__init__()
        self.net = Bottleneck(in_channels, _middle(in_channels, bottleneck_ratio), 2 * latent_channels, zero_last=True)

    def forward(self, state: Tensor | None, latent_shape: Sequence[int], temperature: float = 1.0) -> DiagonalNormal:
        if state is None:
            raise ValueError("BottleneckNormalPrior is conditional: it needs the decoder state")
        mu, log_sigma = self.net(state).chunk(2, dim=1)
        return DiagonalNormal(mu, log_sigma, temperature)

    @classmethod
    def example(cls) -> Example:
        state, noise = torch.randn(2, 8, 4, 4), torch.randn(2, 3, 4, 4)

        def build():
            prior = cls(8, 3)
            with torch.no_grad():  # a non-zero last layer, so that gradients reach every parameter
                prior.net.c4.weight.normal_()
            return prior

        return Example(
            build=build,
            inputs=(state, noise),
            output_shape=(2, 3, 4, 4),
            call=lambda m, i: m(i[0], i[1].shape).sample(i[1])[0],
        )


class ZInjectionCombiner(Combiner):
    """Merges a latent sample into the decoder state: ``state + conv1x1(z)``, the conv's initial weights scaled by
    ``1/sqrt(depth)`` (VDVAE's ``z_fn``)."""

    def __init__(self, in_channels: int, out_channels: int, aux_channels: int, depth: int = 1) -> None:
        super().__init__(in_channels, out_channels, aux_channels)
        if in_channels != out_channels:
            raise ValueError(f"ZInjectionCombiner keeps its channels, got {in_channels} -> {out_channels}")
        self.project = nn.Conv2d(aux_channels, out_channels, 1)
        with torch.no_grad():
            self.project.weight.mul_(1.0 / math.sqrt(depth))

    def forward(self, x: Tensor, aux: Tensor) -> Tensor:
        return x + self.project(aux)

    @classmethod
    def example(cls) -> Example:
        x, z = torch.randn(2, 4, 5, 5), torch.randn(2, 3, 5, 5)
        return Example(build=lambda: cls(4, 4, 3, depth=4), inputs=(x, z), output_shape=(2, 4, 5, 5))
