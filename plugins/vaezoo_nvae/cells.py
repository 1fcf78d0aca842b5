"""NVAE's depthwise inverted-residual cell (decoder and post-processing).

The generic cells it is assembled with (the BN-Swish residual cell of the encoder, the weight-normalised conv
cell of the stem and heads, the combiners) are the core's (:mod:`vaezoo.components.cells`).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from vaezoo.components.cells import InvertedResidualCellBase
from vaezoo.nn import BatchNormSwish, WeightNormConv2d, batch_norm


class ConvBNSwish(nn.Module):
    """A conv without bias or weight normalisation, followed by BatchNorm-Swish."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, groups: int = 1) -> None:
        super().__init__()
        self.conv = WeightNormConv2d(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=(kernel_size - 1) // 2,
            groups=groups,
            bias=False,
            weight_norm=False,
        )
        self.bn_act = BatchNormSwish(out_channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.bn_act(self.conv(x))


class InvertedResidual(nn.Module):
    """[nearest x2] -> BN -> 1x1 expand, BN-Swish -> depthwise kxk, BN-Swish -> 1x1 project -> BN.

    ``hidden = round(in_channels * expansion)``; there is no activation after the last BN.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, expansion: float, kernel_size: int) -> None:
        super().__init__()
        hidden = int(round(in_channels * expansion))
        self.upsample = stride == -1
        self.bn_in = batch_norm(in_channels)
        self.expand = ConvBNSwish(in_channels, hidden, 1)
        self.depthwise = ConvBNSwish(hidden, hidden, kernel_size, stride=abs(stride), groups=hidden)
        self.project = WeightNormConv2d(hidden, out_channels, 1, bias=False, weight_norm=False)
        self.bn_out = batch_norm(out_channels)

    def forward(self, x: Tensor) -> Tensor:
        if self.upsample:
            x = F.interpolate(x, scale_factor=2, mode="nearest")
        x = self.depthwise(self.expand(self.bn_in(x)))
        return self.bn_out(self.project(x))


class DepthwiseResidualCell(InvertedResidualCellBase):
    """Residual cell of the decoder (``expansion`` 6) and post-processing (``expansion`` 3): an inverted residual
    with a depthwise ``kernel_size`` conv and BatchNorm-Swish (:class:`InvertedResidual`), optional SE."""

    def build_ops(self, in_channels: int, out_channels: int, stride: int, expansion: float, kernel_size: int):
        return InvertedResidual(in_channels, out_channels, stride, expansion, kernel_size)
