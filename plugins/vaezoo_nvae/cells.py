"""NVAE cells: residual BN-Swish-Conv cells (encoder and pre-processing), depthwise inverted-residual cells
(decoder and post-processing), the encoder and decoder combiners, and a plain weight-normalised conv cell
(stem, encoder head, decoder head).

Every residual cell computes ``skip(x) + residual_scale * SE(ops(x))``; the skip is the identity at stride 1,
a factorised reduction at stride 2 and bilinear up-sampling plus a 1x1 conv at stride -1.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vaezoo.interfaces import Cell, Example

from .layers import BatchNormSwish, SqueezeExcitation, WeightNormConv2d, batch_norm, elu, skip_connection


def _cell_example(
    cls: type[Cell], stride: int, in_channels: int = 8, out_channels: int = 8, size: int = 8, **kwargs
) -> Example:
    x = torch.randn(2, in_channels, size, size)
    side = {1: size, 2: size // 2, -1: size * 2}[stride]
    return Example(
        build=lambda: cls(in_channels, out_channels, stride, **kwargs),
        inputs=(x,),
        output_shape=(2, out_channels, side, side),
    )


class _ResidualCell(Cell):
    supported_strides = (1, 2, -1)

    def __init__(self, in_channels: int, out_channels: int, stride: int, residual_scale: float) -> None:
        super().__init__(in_channels, out_channels, stride)
        # registration order (skip, ops, se) is also the order the spectral regulariser stacks conv weights in
        self.skip = skip_connection(in_channels, out_channels, stride)
        self.residual_scale = residual_scale

    def _finish(self, use_se: bool) -> None:
        self.se = SqueezeExcitation(self.out_channels) if use_se else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.skip(x) + self.residual_scale * self.se(self.ops(x))


class BNSwishConv(nn.Module):
    """BatchNorm-Swish, nearest x2 up-sampling when ``stride == -1``, then a weight-normalised conv with bias."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, kernel_size: int = 3) -> None:
        super().__init__()
        self.upsample = stride == -1
        self.bn_act = BatchNormSwish(in_channels)
        self.conv = WeightNormConv2d(
            in_channels, out_channels, kernel_size, stride=abs(stride), padding=(kernel_size - 1) // 2, bias=True
        )

    def forward(self, x: Tensor) -> Tensor:
        x = self.bn_act(x)
        if self.upsample:
            x = F.interpolate(x, scale_factor=2, mode="nearest")
        return self.conv(x)


class ResidualCell(_ResidualCell):
    """Residual cell of the encoder and pre-processing: (BN-Swish-Conv3x3) x ``num_convs``, optional SE.

    The first conv takes the stride and the channel change; the rest are ``out -> out`` at stride 1.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int = 1,
        num_convs: int = 2,
        kernel_size: int = 3,
        use_se: bool = True,
        residual_scale: float = 0.1,
    ) -> None:
        super().__init__(in_channels, out_channels, stride, residual_scale)
        ops = [BNSwishConv(in_channels, out_channels, stride, kernel_size)]
        ops += [BNSwishConv(out_channels, out_channels, 1, kernel_size) for _ in range(num_convs - 1)]
        self.ops = nn.Sequential(*ops)
        self._finish(use_se)

    @classmethod
    def example(cls) -> Example:
        return _cell_example(cls, 2, 8, 16)


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


class DepthwiseResidualCell(_ResidualCell):
    """Residual cell of the decoder (``expansion`` 6) and post-processing (``expansion`` 3): an inverted residual
    with a depthwise ``kernel_size`` conv, optional SE."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int = 1,
        expansion: float = 6.0,
        kernel_size: int = 5,
        use_se: bool = True,
        residual_scale: float = 0.1,
    ) -> None:
        super().__init__(in_channels, out_channels, stride, residual_scale)
        self.ops = InvertedResidual(in_channels, out_channels, stride, expansion, kernel_size)
        self._finish(use_se)

    @classmethod
    def example(cls) -> Example:
        return _cell_example(cls, -1, 16, 8, size=4, expansion=3.0)


class WeightNormConvCell(Cell):
    """A single weight-normalised conv with bias, optionally wrapped in ELUs (NVAE's stem, encoder head and
    image-conditional head)."""

    supported_strides = (1,)

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int = 1,
        kernel_size: int = 3,
        elu_before: bool = False,
        elu_after: bool = False,
    ) -> None:
        super().__init__(in_channels, out_channels, stride)
        self.elu_before, self.elu_after = elu_before, elu_after
        self.conv = WeightNormConv2d(in_channels, out_channels, kernel_size, padding=(kernel_size - 1) // 2, bias=True)

    def forward(self, x: Tensor) -> Tensor:
        if self.elu_before:
            x = elu(x)
        x = self.conv(x)
        return elu(x) if self.elu_after else x

    @classmethod
    def example(cls) -> Example:
        return _cell_example(cls, 1, 3, 5, elu_before=True, elu_after=True)


class EncoderCombiner(Cell):
    """Merges the decoder state into an encoder feature: ``x + conv1x1(aux)`` (``aux`` has ``aux_channels``)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, aux_channels: int = 1) -> None:
        super().__init__(in_channels, out_channels, stride)
        if in_channels != out_channels:
            raise ValueError(f"EncoderCombiner keeps its channels, got {in_channels} -> {out_channels}")
        self.conv = WeightNormConv2d(aux_channels, out_channels, 1, bias=True)

    def forward(self, x: Tensor, aux: Tensor) -> Tensor:
        return x + self.conv(aux)

    @classmethod
    def example(cls) -> Example:
        x, aux = torch.randn(2, 4, 5, 5), torch.randn(2, 6, 5, 5)
        return Example(build=lambda: cls(4, 4, 1, 6), inputs=(x, aux), output_shape=(2, 4, 5, 5))


class DecoderCombiner(Cell):
    """Merges a latent sample into the decoder state: ``conv1x1(cat[x, aux])``."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, aux_channels: int = 1) -> None:
        super().__init__(in_channels, out_channels, stride)
        self.conv = WeightNormConv2d(in_channels + aux_channels, out_channels, 1, bias=True)

    def forward(self, x: Tensor, aux: Tensor) -> Tensor:
        return self.conv(torch.cat([x, aux], dim=1))

    @classmethod
    def example(cls) -> Example:
        x, z = torch.randn(2, 4, 5, 5), torch.randn(2, 3, 5, 5)
        return Example(build=lambda: cls(4, 4, 1, 3), inputs=(x, z), output_shape=(2, 4, 5, 5))
