"""Blocks shared by the cells of every plugin: squeeze-and-excitation, the down/up-sampling skip connections,
and the pre-activation conv blocks that residual cells stack (BatchNorm-Swish-Conv, ELU-Conv).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .activations import elu, swish
from .conv import WeightNormConv2d
from .norm import BatchNormSwish, recomputable_from


class SqueezeExcitation(nn.Module):
    """Channel gating from globally pooled features: ``x * gate(fc2(act(fc1(mean_hw(x)))))``.

    ``act_layer`` and ``gate_layer`` are module classes (ReLU and Sigmoid by default, as in NVAE and SENet);
    the hidden width is ``max(channels // reduction, min_hidden)``.
    """

    def __init__(
        self,
        channels: int,
        reduction: int = 16,
        min_hidden: int = 4,
        act_layer: type[nn.Module] = nn.ReLU,
        gate_layer: type[nn.Module] = nn.Sigmoid,
    ) -> None:
        super().__init__()
        hidden = max(channels // reduction, min_hidden)
        self.fc1 = nn.Linear(channels, hidden)
        self.act = act_layer()
        self.fc2 = nn.Linear(hidden, channels)
        self.gate = gate_layer()

    def forward(self, x: Tensor) -> Tensor:
        gate = self.gate(self.fc2(self.act(self.fc1(torch.mean(x, dim=[2, 3])))))
        return x * gate.view(gate.size(0), -1, 1, 1)


class FactorizedReduce(nn.Module):
    """Stride-2 skip path: Swish, then four 1x1 stride-2 convs on the four pixel phases, concatenated.

    The first three convs get ``out_channels // 4`` channels each; the fourth takes the remainder.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        quarter = out_channels // 4
        sizes = [quarter, quarter, quarter, out_channels - 3 * quarter]
        if min(sizes) < 1:
            raise ValueError(f"FactorizedReduce needs at least 4 output channels, got {out_channels}")
        self.convs = nn.ModuleList(WeightNormConv2d(in_channels, c, 1, stride=2, bias=True) for c in sizes)

    def forward(self, x: Tensor) -> Tensor:
        x = swish(x)
        phases = (x, x[:, :, 1:, 1:], x[:, :, :, 1:], x[:, :, 1:, :])
        return torch.cat([conv(phase) for conv, phase in zip(self.convs, phases, strict=True)], dim=1)


class UpsampleSkip(nn.Module):
    """Stride -1 skip path: bilinear x2 up-sampling (align_corners) and a weight-normalised 1x1 conv."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = WeightNormConv2d(in_channels, out_channels, 1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
        return self.conv(x)


def skip_connection(in_channels: int, out_channels: int, stride: int) -> nn.Module:
    """The residual skip of a cell for each stride (identity, factorised reduction or up-sampling)."""
    if stride == 1:
        if in_channels != out_channels:
            raise ValueError(f"a stride-1 cell keeps its channels, got {in_channels} -> {out_channels}")
        return nn.Identity()
    if stride == 2:
        return FactorizedReduce(in_channels, out_channels)
    if stride == -1:
        return UpsampleSkip(in_channels, out_channels)
    raise ValueError(f"stride must be 1, 2 or -1, got {stride}")


def _upsample_nearest(x: Tensor) -> Tensor:
    return F.interpolate(x, scale_factor=2, mode="nearest")


class BNSwishConv(nn.Module):
    """BatchNorm-Swish, nearest x2 up-sampling when ``stride == -1``, then a weight-normalised conv with bias
    (the pre-activation conv block of NVAE's residual cells)."""

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
            x = recomputable_from(_upsample_nearest(x), x, _upsample_nearest)
        return self.conv(x)


class ELUConv(nn.Module):
    """ELU (unless ``activate`` is False), nearest x2 up-sampling when ``stride == -1``, then a weight-normalised
    conv with bias (the pre-activation conv block of weight-normalised ELU ResNets, Kingma et al. 2016)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int = 1,
        kernel_size: int = 3,
        groups: int = 1,
        activate: bool = True,
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
