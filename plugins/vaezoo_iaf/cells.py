"""Weight-normalised residual cells with ELU activations.

Kingma et al. (2016) build their ResNet VAE from residual blocks of weight-normalised convolutions with ELUs and no
BatchNorm. The NVAE paper compares that choice ("WN + ELU") with its BatchNorm + Swish cells, so both cells here
mirror a BatchNorm-Swish cell with only the normalisation and activation changed: :class:`WeightNormELUResidualCell`
is the core's ``ResidualCell`` and :class:`WeightNormELUDepthwiseCell` is ``DepthwiseResidualCell`` (same constructor arguments,
same skip connections, same optional squeeze-and-excitation, same residual scale), which keeps that ablation
one-dimensional.
"""

from __future__ import annotations

import torch
from torch import nn

from vaezoo.components.cells import InvertedResidualCellBase, ResidualCell
from vaezoo.interfaces import Example
from vaezoo.nn import ELUConv


class WeightNormELUResidualCell(ResidualCell):
    """``skip(x) + residual_scale * SE((ELU -> WN-Conv) x num_convs)``: Kingma et al.'s ResNet block, and the core's
    ``ResidualCell`` with weight normalisation + ELU in place of BatchNorm + Swish (same constructor arguments).

    The first conv takes the stride and the channel change; stride -1 up-samples (nearest) before it.
    """

    conv_block = ELUConv

    @classmethod
    def example(cls) -> Example:
        x = torch.randn(2, 4, 8, 8)
        return Example(build=lambda: cls(4, 8, 2), inputs=(x,), output_shape=(2, 8, 4, 4))


class WeightNormELUDepthwiseCell(InvertedResidualCellBase):
    """NVAE's ``DepthwiseResidualCell`` with weight normalisation + ELU in place of BatchNorm + Swish:
    ``skip(x) + residual_scale * SE(WN 1x1 expand -> ELU -> WN depthwise kxk -> ELU -> WN 1x1 project)``.
    """

    def build_ops(self, in_channels: int, out_channels: int, stride: int, expansion: float, kernel_size: int):
        hidden = int(round(in_channels * expansion))
        return nn.Sequential(
            ELUConv(in_channels, hidden, stride=-1 if stride == -1 else 1, kernel_size=1, activate=False),
            ELUConv(hidden, hidden, stride=2 if stride == 2 else 1, kernel_size=kernel_size, groups=hidden),
            ELUConv(hidden, out_channels, stride=1, kernel_size=1),
        )

    @classmethod
    def example(cls) -> Example:
        x = torch.randn(2, 8, 4, 4)
        return Example(build=lambda: cls(8, 4, -1, expansion=2.0), inputs=(x,), output_shape=(2, 4, 8, 8))
