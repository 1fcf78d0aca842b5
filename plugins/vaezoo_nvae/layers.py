"""Building blocks of the NVAE cells: Swish, weight-normalised and masked convolutions, squeeze-and-excitation,
and the down/up-sampling skip connections.

These are not registered components themselves; the registered cells (:mod:`vaezoo_nvae.cells`) expose their
choices (squeeze-and-excitation, expansion, residual scale) as constructor arguments.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: BatchNorm settings used everywhere in NVAE
BN_EPS = 1e-5
BN_MOMENTUM = 0.05


def soft_clamp(x: Tensor, bound: float = 5.0) -> Tensor:
    """``bound * tanh(x / bound)``: a differentiable clamp to (-bound, bound)."""
    return torch.tanh(x / bound) * bound


class _SwishFunction(torch.autograd.Function):
    """x * sigmoid(x) with the closed-form derivative (keeps only x for backward)."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        ctx.save_for_backward(x)
        return x * torch.sigmoid(x)

    @staticmethod
    def backward(ctx, grad_output: Tensor) -> Tensor:
        (x,) = ctx.saved_tensors
        sig = torch.sigmoid(x)
        return grad_output * (sig * (1 + x * (1 - sig)))


def swish(x: Tensor) -> Tensor:
    return _SwishFunction.apply(x)


class Swish(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return swish(x)


def batch_norm(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class BatchNormSwish(nn.Module):
    """BatchNorm followed by Swish (kept as two steps so SyncBatchNorm conversion still applies)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.bn = batch_norm(channels)

    def forward(self, x: Tensor) -> Tensor:
        return swish(self.bn(x))


def _filter_norm(weight: Tensor) -> Tensor:
    """L2 norm of each output filter, shaped ``[out, 1, 1, 1]`` (or ``[n, out, 1, 1, 1]`` for stacked weights)."""
    dims = tuple(range(weight.dim() - 3, weight.dim()))
    return torch.sqrt(torch.sum(weight * weight, dim=dims, keepdim=True))


def weight_normalize(log_weight_norm: Tensor, weight: Tensor) -> Tensor:
    """``exp(log_weight_norm) * W / (||W|| + 1e-5)`` per output filter; works on stacked weights too."""
    return torch.exp(log_weight_norm) * weight / (_filter_norm(weight) + 1e-5)


class WeightNormConv2d(nn.Conv2d):
    """Conv2d with a learned log-norm per output filter: ``W_eff = exp(lwn) * W / (||W|| + 1e-5)``.

    ``log_weight_norm`` starts at ``log(||W|| + 1e-2)``, so the initial effective weight is close to ``W``.
    ``weight_norm=False`` gives a plain convolution (same parameter names as ``nn.Conv2d``).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        groups: int = 1,
        bias: bool = True,
        weight_norm: bool = True,
    ) -> None:
        super().__init__(
            in_channels, out_channels, kernel_size, stride=stride, padding=padding, groups=groups, bias=bias
        )
        if weight_norm:
            with torch.no_grad():
                init = torch.log(_filter_norm(self.weight) + 1e-2)
            self.log_weight_norm = nn.Parameter(init)
        else:
            self.register_parameter("log_weight_norm", None)

    def raw_weight(self) -> Tensor:
        """The weight before normalisation (after masking, for masked subclasses)."""
        return self.weight

    def effective_weight(self) -> Tensor:
        weight = self.raw_weight()
        if self.log_weight_norm is None:
            return weight
        return weight_normalize(self.log_weight_norm, weight)

    def forward(self, x: Tensor) -> Tensor:
        return self._conv_forward(x, self.effective_weight(), self.bias)


def channel_mask(in_channels: int, groups: int, out_channels: int, zero_diagonal: bool) -> Tensor:
    """Which input channels each output channel may see at the centre tap of an autoregressive conv.

    Channels are ordered; with ``zero_diagonal`` an output never sees "its own" input channel block.
    """
    if groups == in_channels:  # depthwise: each filter sees only its own channel
        value = 0.0 if zero_diagonal else 1.0
        return torch.full((out_channels, 1), value, device="cpu")
    if groups != 1:
        raise ValueError(f"autoregressive convs support groups 1 or in_channels, got {groups}")
    rows = torch.arange(out_channels, device="cpu").unsqueeze(1)
    cols = torch.arange(in_channels, device="cpu").unsqueeze(0)
    if out_channels >= in_channels:
        if out_channels % in_channels:
            raise ValueError(f"out_channels {out_channels} must be a multiple of in_channels {in_channels}")
        owner = rows // (out_channels // in_channels)  # the input channel each output row belongs to
        allowed = cols < owner if zero_diagonal else cols <= owner
    else:
        if in_channels % out_channels:
            raise ValueError(f"in_channels {in_channels} must be a multiple of out_channels {out_channels}")
        ratio = in_channels // out_channels
        allowed = cols < rows * ratio if zero_diagonal else cols < (rows + 1) * ratio
    return allowed.float()


def autoregressive_mask(
    kernel_size: int, in_channels: int, groups: int, out_channels: int, zero_diagonal: bool, mirror: bool
) -> Tensor:
    """Mask of a masked conv: raster order over pixels (reversed when ``mirror``), then channel order."""
    if kernel_size % 2 != 1:
        raise ValueError(f"autoregressive convs need an odd kernel size, got {kernel_size}")
    m = (kernel_size - 1) // 2
    mask = torch.ones(out_channels, in_channels // groups, kernel_size, kernel_size, device="cpu")
    mask[:, :, m:, :] = 0  # centre row and everything below
    mask[:, :, m, :m] = 1  # left of the centre
    mask[:, :, m, m] = channel_mask(in_channels, groups, out_channels, zero_diagonal)
    if mirror:
        mask = torch.flip(mask, dims=(2, 3))
    return mask


class MaskedWeightNormConv2d(WeightNormConv2d):
    """Weight-normalised conv whose weight is masked to be autoregressive; the norm is that of the masked weight.

    The mask is derived from the constructor arguments and rebuilt on construction (never saved).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        padding: int = 0,
        groups: int = 1,
        bias: bool = False,
        zero_diagonal: bool = True,
        mirror: bool = False,
        log_norm_offset: float = 0.0,
    ) -> None:
        nn.Conv2d.__init__(self, in_channels, out_channels, kernel_size, padding=padding, groups=groups, bias=bias)
        mask = autoregressive_mask(kernel_size, in_channels, groups, out_channels, zero_diagonal, mirror)
        self.register_buffer("mask", mask.to(self.weight.device), persistent=False)
        with torch.no_grad():
            init = torch.log(_filter_norm(self.weight * self.mask) + 1e-2) + log_norm_offset
        self.log_weight_norm = nn.Parameter(init)

    def raw_weight(self) -> Tensor:
        return self.weight * self.mask


class SqueezeExcitation(nn.Module):
    """Channel gating from globally pooled features: ``x * sigmoid(fc2(relu(fc1(mean_hw(x)))))``."""

    def __init__(self, channels: int, reduction: int = 16, min_hidden: int = 4) -> None:
        super().__init__()
        hidden = max(channels // reduction, min_hidden)
        self.fc1 = nn.Linear(channels, hidden)
        self.fc2 = nn.Linear(hidden, channels)

    def forward(self, x: Tensor) -> Tensor:
        gate = torch.mean(x, dim=[2, 3])
        gate = torch.sigmoid(self.fc2(F.relu(self.fc1(gate))))
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


HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)
