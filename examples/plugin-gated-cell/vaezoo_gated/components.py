"""The plugin's two components: each subclasses the interface of its slot and gives a tiny example of itself."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from vaezoo.distributions import DiagonalNormal
from vaezoo.interfaces import Cell, ConditionalPrior, Example


class GatedResidualCell(Cell):
    """``x + conv(x) * sigmoid(gate(x))`` at stride 1; a strided conv (stride 2) or up-sampling then a conv
    (stride -1) when the resolution changes."""

    supported_strides = (1, 2, -1)

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, kernel_size: int = 3) -> None:
        super().__init__(in_channels, out_channels, stride)
        padding = kernel_size // 2
        self.resample = None
        if stride != 1 or in_channels != out_channels:
            layers = [nn.Upsample(scale_factor=2)] if stride == -1 else []
            layers.append(nn.Conv2d(in_channels, out_channels, 1, stride=max(stride, 1)))
            self.resample = nn.Sequential(*layers)
        self.conv = nn.Conv2d(out_channels, out_channels, kernel_size, padding=padding)
        self.gate = nn.Conv2d(out_channels, out_channels, kernel_size, padding=padding)

    def forward(self, x: Tensor) -> Tensor:
        if self.resample is not None:
            x = self.resample(x)
        return x + self.conv(x) * torch.sigmoid(self.gate(x))

    @classmethod
    def example(cls) -> Example:
        return Example(build=lambda: cls(3, 6, 2), inputs=(torch.randn(2, 3, 8, 8),), output_shape=(2, 6, 4, 4))


class LearnedScalePrior(ConditionalPrior):
    """p(z_i | z_<i) = N(conv(state), exp(log_scale)^2): the mean from the decoder state, one learned scale per
    latent channel."""

    def __init__(self, in_channels: int, latent_channels: int, kernel_size: int = 1) -> None:
        super().__init__()
        self.mean = nn.Conv2d(in_channels, latent_channels, kernel_size, padding=kernel_size // 2)
        self.log_scale = nn.Parameter(torch.zeros(1, latent_channels, 1, 1))

    def forward(self, state: Tensor | None, latent_shape, temperature: float = 1.0) -> DiagonalNormal:
        mu = self.mean(state)
        return DiagonalNormal(mu, self.log_scale.expand_as(mu), temperature)

    @classmethod
    def example(cls) -> Example:
        state, z = torch.randn(2, 4, 3, 3), torch.randn(2, 2, 3, 3)
        return Example(
            build=lambda: cls(4, 2),
            inputs=(state, z),
            output_shape=(2, 2, 3, 3),
            call=lambda m, i: m(i[0], i[1].shape).log_prob(i[1]),
        )
