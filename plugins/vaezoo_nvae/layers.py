"""Building blocks of the NVAE cells: Swish, weight-normalised and masked convolutions, squeeze-and-excitation,
and the down/up-sampling skip connections.

These are not registered components themselves; the registered cells (:mod:`vaezoo_nvae.cells`) expose their
choices (squeeze-and-excitation, expansion, residual scale) as constructor arguments.
"""

from __future__ import annotations

import logging
import math
import weakref

import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: BatchNorm settings used everywhere in NVAE
BN_EPS = 1e-5
BN_MOMENTUM = 0.05


def soft_clamp(x: Tensor, bound: float = 5.0) -> Tensor:
    """``bound * tanh(x / bound)``: a differentiable clamp to (-bound, bound)."""
    return torch.tanh(x / bound) * bound


def swish(x: Tensor) -> Tensor:
    """``x * sigmoid(x)``: torch's fused SiLU, which keeps only ``x`` for the backward pass and computes the
    derivative ``sigmoid(x) * (1 + x * (1 - sigmoid(x)))`` in one kernel."""
    return F.silu(x)


class _ELUFunction(torch.autograd.Function):
    """ELU as ``relu(x) + exp(min(x, 0)) - 1``, saving only the output (the derivative is ``y + 1`` where ``x < 0``).

    Same values as ``F.elu`` to float rounding (``exp - 1`` instead of ``expm1``: about 6e-8 absolute), but built
    from vectorised kernels: on x86 CPUs torch's ELU evaluates ``expm1`` one element at a time and is ten times
    slower than this, enough to be a quarter of an NVAE forward pass.
    """

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        out = torch.exp(torch.clamp(x, max=0.0)).sub_(1.0).add_(torch.relu(x))
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, grad_output: Tensor) -> Tensor:
        (out,) = ctx.saved_tensors
        return grad_output * torch.clamp(out, max=0.0).add_(1.0)  # exp(x) where x < 0, else 1


def elu(x: Tensor) -> Tensor:
    """ELU (alpha 1); on CPUs the vectorised :class:`_ELUFunction`, elsewhere torch's kernel."""
    return _ELUFunction.apply(x) if x.device.type == "cpu" and not torch.compiler.is_compiling() else F.elu(x)


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


def _depthwise_weight_grad_taps(grad_output: Tensor, x: Tensor, kernel_size: int, padding: int) -> Tensor:
    """The weight gradient of a stride-1 depthwise conv: for each tap ``(i, j)``, the sum over the batch and the
    pixels of the output gradient times the input shifted by that tap. ``torch.compile`` fuses the ``k * k``
    reductions into one pass over the gradient, which on CPUs is 3-6x faster than oneDNN's kernel for this case."""
    height, width = grad_output.shape[2], grad_output.shape[3]
    padded = F.pad(x, (padding, padding, padding, padding))
    taps = [
        (grad_output * padded[:, :, i : i + height, j : j + width]).sum(dim=(0, 2, 3), dtype=torch.float32)
        for i in range(kernel_size)
        for j in range(kernel_size)
    ]
    return torch.stack(taps, dim=1).view(-1, 1, kernel_size, kernel_size)


_compiled_taps = None  # built on first use; False once compilation failed on this machine


def depthwise_weight_grad(grad_output: Tensor, x: Tensor, kernel_size: int, padding: int) -> Tensor:
    """:func:`_depthwise_weight_grad_taps` compiled (one kernel per memory format and kernel size, dynamic in the
    shapes); where no compiler works, a warning and oneDNN's kernel."""
    global _compiled_taps
    if _compiled_taps is None:
        # inductor's CPU build imports cpp_extension, which warns about CUDA_HOME on machines without CUDA
        logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
        _compiled_taps = torch.compile(_depthwise_weight_grad_taps, dynamic=True)
    if _compiled_taps is not False:
        try:
            return _compiled_taps(grad_output, x, kernel_size, padding)
        except Exception as exc:  # no C++ compiler, unsupported platform, ...
            import warnings

            first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            warnings.warn(
                f"compiled depthwise weight gradient unavailable ({first_line}); using the native kernel", stacklevel=2
            )
            _compiled_taps = False
    channels = x.shape[1]
    weight = torch.empty(channels, 1, kernel_size, kernel_size, dtype=x.dtype, device=x.device)
    return torch.ops.aten.convolution_backward(
        grad_output, x, weight, None, [1, 1], [padding, padding], [1, 1], False, [0, 0], channels, [False, True, False]
    )[1]


class _DepthwiseConv2d(torch.autograd.Function):
    """A stride-1 "same" depthwise conv whose weight gradient comes from :func:`depthwise_weight_grad`; the
    forward pass and the input gradient are torch's own. Under autocast it runs in the autocast dtype."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None, padding: int) -> Tensor:
        ctx.dtypes = (weight.dtype, None if bias is None else bias.dtype)
        device = x.device.type
        if torch.is_autocast_enabled(device):
            dtype = torch.get_autocast_dtype(device)
            x, weight = x.to(dtype), weight.to(dtype)
            bias = None if bias is None else bias.to(dtype)
        with torch.autocast(device, enabled=False):
            out = F.conv2d(x, weight, bias, padding=padding, groups=x.shape[1])
        ctx.save_for_backward(x, weight)
        ctx.padding = padding
        return out

    @staticmethod
    def backward(ctx, grad_output: Tensor):
        x, weight = ctx.saved_tensors
        grad_output = grad_output.to(x.dtype)
        p, channels, kernel_size = ctx.padding, x.shape[1], weight.shape[-1]
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.ops.aten.convolution_backward(
                grad_output, x, weight, None, [1, 1], [p, p], [1, 1], False, [0, 0], channels, [True, False, False]
            )[0]
        if ctx.needs_input_grad[1]:
            grad_w = depthwise_weight_grad(grad_output, x, kernel_size, p).to(ctx.dtypes[0])
        if ctx.needs_input_grad[2]:
            grad_b = grad_output.sum(dim=(0, 2, 3), dtype=torch.float32).to(ctx.dtypes[1])
        return grad_x, grad_w, grad_b, None


class WeightNormConv2d(nn.Conv2d):
    """Conv2d with a learned log-norm per output filter: ``W_eff = exp(lwn) * W / (||W|| + 1e-5)``.

    ``log_weight_norm`` starts at ``log(||W|| + 1e-2)``, so the initial effective weight is close to ``W``.
    ``weight_norm=False`` gives a plain convolution (same parameter names as ``nn.Conv2d``).

    ``depthwise_weight_grad`` (``"native"`` or ``"compiled"``, set by ``trainer.depthwise_weight_grad``) chooses how
    a depthwise conv's weight gradient is computed on CPUs; see :func:`depthwise_weight_grad`.
    """

    depthwise_weight_grad = "native"

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
        self._applied: tuple | None = None  # see applied_weight()
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

    def applied_weight(self, release: bool = False) -> Tensor:
        """The effective weight of the last forward pass while its autograd graph is alive, else a fresh one.

        The spectral regulariser reads the weights the forward pass applied (as the official code does), so the
        normalisation is computed, and differentiated, once per step rather than twice. In full precision the
        forward keeps only a weak reference: the tensor lives exactly as long as the graph that saved it for the
        backward pass, so nothing is held between steps. Under autocast the conv saves only its low-precision
        copy, so the forward holds the tensor until ``release=True`` hands it over. A weight updated since, or
        computed without a graph, is recomputed.
        """
        cached = self._applied
        if release:
            self._applied = None
        if cached is not None:
            holder, key = cached
            weight = holder() if isinstance(holder, weakref.ref) else holder
            if weight is not None and key == self._cache_key():
                return weight
        return self.effective_weight()

    def _cache_key(self) -> tuple:
        # the parameters' identity (a deep copy has its own) and versions (an optimiser step bumps them)
        lwn = self.log_weight_norm
        return id(self.weight), self.weight._version, lwn._version, torch.is_grad_enabled()

    def forward(self, x: Tensor) -> Tensor:
        weight = self.effective_weight()
        if self.log_weight_norm is not None and torch.is_grad_enabled() and not torch.compiler.is_compiling():
            autocast = torch.is_autocast_enabled(x.device.type)
            self._applied = (weight if autocast else weakref.ref(weight), self._cache_key())
        if self.depthwise_weight_grad == "compiled" and self._fast_depthwise(x):
            return _DepthwiseConv2d.apply(x, weight, self.bias, self.padding[0])
        return self._conv_forward(x, weight, self.bias)

    def _fast_depthwise(self, x: Tensor) -> bool:
        k = self.kernel_size[0]
        return (
            x.device.type == "cpu"  # cuDNN's kernel is fast; oneDNN's weight gradient is the slow one
            and torch.is_grad_enabled()
            and not torch.compiler.is_compiling()
            and self.groups == self.in_channels == self.out_channels > 1
            and self.kernel_size == (k, k)
            and self.stride == (1, 1)
            and self.dilation == (1, 1)
            and self.padding == (k // 2, k // 2)
            and self.padding_mode == "zeros"
        )

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_applied"] = None  # a weak reference neither pickles nor means anything in a copy
        return state


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
        self._applied: tuple | None = None
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
