"""Weight-normalised residual cells with ELU activations.

Kingma et al. (2016) build their ResNet VAE from residual blocks of weight-normalised convolutions with ELUs and no
BatchNorm. The NVAE paper compares that choice ("WN + ELU") with its BatchNorm + Swish cells, so both cells here
mirror an NVAE cell with only the normalisation and activation changed: :class:`WeightNormELUResidualCell` is
``ResidualCell`` and :class:`WeightNormELUDepthwiseCell` is ``DepthwiseResidualCell`` (same constructor arguments,
same skip connections, same optional squeeze-and-excitation, same residual scale), which keeps that ablation
one-dimensional.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from vaezoo_nvae.layers import SqueezeExcitation, WeightNormConv2d, elu, skip_connection

from vaezoo.interfaces import Cell, Example


class _ELUConv(nn.Module):
    """ELU, nearest x2 up-sampling when ``stride == -1``, then a weight-normalised conv with bias."""

    def __init__(
        self, in_channels: int, out_channels: int, stride: int, kernel_size: int, groups: int = 1, activate: bool = True
    ) -> None:
        super().__init__()
        self.activate, self.upsample = activate, stride == -1
        self.conv = WeightNormConv2d(
            in_channels, out_channels, kernel_size, stride=abs(stride), padding=(kernel_size - 1) // 2, groups=groups
        )

    def forward(self, x: Tensor) -> Tensor:
        if self.activate:
            x = elu(x)
        if self.upsample:
            x = F.interpolate(x, scale_factor=2, mode="nearest")
        return self.conv(x)


class _WeightNormELUCell(Cell):
    supported_strides = (1, 2, -1)

    def __init__(self, in_channels: int, out_channels: int, stride: int, residual_scale: float) -> None:
        super().__init__(in_channels, out_channels, stride)
        self.skip = skip_connection(in_channels, out_channels, stride)
        self.residual_scale = residual_scale

    def forward(self, x: Tensor) -> Tensor:
        return self.skip(x) + self.residual_scale * self.se(self.ops(x))


class WeightNormELUResidualCell(_WeightNormELUCell):
    """``skip(x) + residual_scale * SE((ELU -> WN-Conv) x num_convs)``: Kingma et al.'s ResNet block, and NVAE's
    ``ResidualCell`` with weight normalisation + ELU in place of BatchNorm + Swish.

    The first conv takes the stride and the channel change; stride -1 up-samples (nearest) before it.
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
        convs = [_ELUConv(in_channels, out_channels, stride, kernel_size)]
        convs += [_ELUConv(out_channels, out_channels, 1, kernel_size) for _ in range(num_convs - 1)]
        self.ops = nn.Sequential(*convs)
        self.se = SqueezeExcitation(out_channels) if use_se else nn.Identity()

    @classmethod
    def example(cls) -> Example:
        x = torch.randn(2, 4, 8, 8)
        return Example(build=lambda: cls(4, 8, 2), inputs=(x,), output_shape=(2, 8, 4, 4))


class WeightNormELUDepthwiseCell(_WeightNormELUCell):
    """NVAE's ``DepthwiseResidualCell`` with weight normalisation + ELU in place of BatchNorm + Swish:
    ``skip(x) + residual_scale * SE(WN 1x1 expand -> ELU -> WN depthwise kxk -> ELU -> WN 1x1 project)``.
    """

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
        hidden = int(round(in_channels * expansion))
        self.upsample = stride == -1
        self.ops = nn.Sequential(
            _ELUConv(in_channels, hidden, stride=-1 if self.upsample else 1, kernel_size=1, activate=False),
            _ELUConv(hidden, hidden, stride=2 if stride == 2 else 1, kernel_size=kernel_size, groups=hidden),
            _ELUConv(hidden, out_channels, stride=1, kernel_size=1),
        )
        self.se = SqueezeExcitation(out_channels) if use_se else nn.Identity()

    @classmethod
    def example(cls) -> Example:
        x = torch.randn(2, 8, 4, 4)
        return Example(build=lambda: cls(8, 4, -1, expansion=2.0), inputs=(x,), output_shape=(2, 4, 8, 8))
