"""Generic cells: a pre-activation residual cell, a single weight-normalised conv cell (stems and heads), and the
encoder and decoder combiners of the hierarchical assembler.

Residual cells compute ``skip(x) + residual_scale * SE(ops(x))``; the skip is the identity at stride 1, a factorised
reduction at stride 2 and bilinear up-sampling plus a 1x1 conv at stride -1 (:func:`vaezoo.nn.skip_connection`).
:class:`ResidualCellBase` holds that structure; a cell family subclasses it and builds ``ops``, or, like
:class:`ResidualCell`, names the pre-activation conv block it stacks (``conv_block``).
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn

from ..interfaces import Cell, Combiner, Example
from ..nn import BNSwishConv, SqueezeExcitation, WeightNormConv2d, elu, skip_connection


def cell_example(
    cls: type[Cell], stride: int, in_channels: int = 8, out_channels: int = 8, size: int = 8, **kwargs
) -> Example:
    x = torch.randn(2, in_channels, size, size)
    side = {1: size, 2: size // 2, -1: size * 2}[stride]
    return Example(
        build=lambda: cls(in_channels, out_channels, stride, **kwargs),
        inputs=(x,),
        output_shape=(2, out_channels, side, side),
    )


class ResidualCellBase(Cell):
    """``skip(x) + residual_scale * se(ops(x))``: subclasses set ``self.ops`` and call :meth:`_finish`.

    Registration order (skip, ops, se) is also the order in which the spectral regulariser stacks conv weights
    and in which seeded initialisation draws them, so subclasses keep it.
    """

    supported_strides = (1, 2, -1)

    def __init__(self, in_channels: int, out_channels: int, stride: int, residual_scale: float) -> None:
        super().__init__(in_channels, out_channels, stride)
        self.skip = skip_connection(in_channels, out_channels, stride)
        self.residual_scale = residual_scale

    def _finish(self, use_se: bool) -> None:
        self.se = SqueezeExcitation(self.out_channels) if use_se else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.skip(x) + self.residual_scale * self.se(self.ops(x))


class InvertedResidualCellBase(ResidualCellBase):
    """A residual cell whose branch is an inverted residual: expand to ``round(in_channels * expansion)`` channels,
    a depthwise ``kernel_size`` conv, project back; optional SE. Subclasses build the branch in :meth:`build_ops`
    (with their normalisation and activation), and keep this constructor."""

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
        self.ops = self.build_ops(in_channels, out_channels, stride, expansion, kernel_size)
        self._finish(use_se)

    def build_ops(self, in_channels: int, out_channels: int, stride: int, expansion: float, kernel_size: int):
        raise NotImplementedError

    @classmethod
    def example(cls) -> Example:
        return cell_example(cls, -1, 16, 8, size=4, expansion=3.0)


class ResidualCell(ResidualCellBase):
    """Pre-activation residual cell: ``conv_block`` x ``num_convs`` (BN-Swish-Conv3x3 by default, NVAE's encoder and
    pre-processing cell), optional SE.

    The first conv takes the stride and the channel change; the rest are ``out -> out`` at stride 1. A subclass
    that sets ``conv_block`` (a module class called as ``(in_channels, out_channels, stride, kernel_size)``) is
    the same cell with another normalisation and activation.
    """

    conv_block: ClassVar[type[nn.Module]] = BNSwishConv

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
        ops = [self.conv_block(in_channels, out_channels, stride, kernel_size)]
        ops += [self.conv_block(out_channels, out_channels, 1, kernel_size) for _ in range(num_convs - 1)]
        self.ops = nn.Sequential(*ops)
        self._finish(use_se)

    @classmethod
    def example(cls) -> Example:
        return cell_example(cls, 2, 8, 16)


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
        return cell_example(cls, 1, 3, 5, elu_before=True, elu_after=True)


class EncoderCombiner(Combiner):
    """Merges the decoder state into an encoder feature: ``x + conv1x1(aux)`` (``aux`` has ``aux_channels``)."""

    def __init__(self, in_channels: int, out_channels: int, aux_channels: int) -> None:
        super().__init__(in_channels, out_channels, aux_channels)
        if in_channels != out_channels:
            raise ValueError(f"EncoderCombiner keeps its channels, got {in_channels} -> {out_channels}")
        self.conv = WeightNormConv2d(aux_channels, out_channels, 1, bias=True)

    def forward(self, x: Tensor, aux: Tensor) -> Tensor:
        return x + self.conv(aux)

    @classmethod
    def example(cls) -> Example:
        x, aux = torch.randn(2, 4, 5, 5), torch.randn(2, 6, 5, 5)
        return Example(build=lambda: cls(4, 4, 6), inputs=(x, aux), output_shape=(2, 4, 5, 5))


class DecoderCombiner(Combiner):
    """Merges a latent sample into the decoder state: ``conv1x1(cat[x, aux])``."""

    def __init__(self, in_channels: int, out_channels: int, aux_channels: int) -> None:
        super().__init__(in_channels, out_channels, aux_channels)
        self.conv = WeightNormConv2d(in_channels + aux_channels, out_channels, 1, bias=True)

    def forward(self, x: Tensor, aux: Tensor) -> Tensor:
        return self.conv(torch.cat([x, aux], dim=1))

    @classmethod
    def example(cls) -> Example:
        x, z = torch.randn(2, 4, 5, 5), torch.randn(2, 3, 5, 5)
        return Example(build=lambda: cls(4, 4, 3), inputs=(x, z), output_shape=(2, 4, 5, 5))
