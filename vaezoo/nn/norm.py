"""BatchNorm with the settings of the hierarchical cells, and BatchNorm followed by Swish.

:class:`BatchNormSwish` has three modes (``trainer.bn_swish``), equal in value to float rounding:

- ``native`` (the default): torch's BatchNorm, then torch's SiLU; both save their input for the backward pass.
- ``fused``: one compiled kernel for BatchNorm + Swish in training and one for their backward, saving the BN input
  and the normalised activation (the memory of ``native``, fewer passes over it).
- ``recompute``: the same kernels, saving only the BN input; the backward pass recomputes the normalised
  activation from it (NVAE's memory-saving BN-Swish: one activation fewer per BN-Swish, the cost of a multiply-add
  inside a pass the backward makes over the input anyway). Unlike gradient checkpointing, no convolution is re-run.
"""

from __future__ import annotations

import logging
import warnings

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .activations import swish

#: BatchNorm settings of the hierarchical cells (NVAE's: momentum 0.05, eps 1e-5)
BN_EPS = 1e-5
BN_MOMENTUM = 0.05
BN_SWISH_MODES = ("native", "fused", "recompute")


def batch_norm(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


def _per_channel(t: Tensor) -> Tensor:
    return t.view(1, -1, 1, 1)


def _bn_swish_forward(
    x: Tensor, weight: Tensor, bias: Tensor, eps: float, keep_normalized: bool
) -> tuple[Tensor, Tensor | None, Tensor, Tensor]:
    """Training-mode BatchNorm (batch statistics, fp32) then Swish: ``(out, normalised or None, mean, biased var)``;
    the normalised activation is written out only when it is kept for the backward pass."""
    xf = x.float()
    var, mean = torch.var_mean(xf, dim=(0, 2, 3), correction=0)
    scale = weight * torch.rsqrt(var + eps)
    y = xf * _per_channel(scale) + _per_channel(bias - mean * scale)
    return F.silu(y).to(x.dtype), y.to(x.dtype) if keep_normalized else None, mean, var


def _bn_swish_backward(
    grad: Tensor, x: Tensor, y: Tensor | None, mean: Tensor, var: Tensor, weight: Tensor, bias: Tensor, eps: float
) -> tuple[Tensor, Tensor, Tensor]:
    """Gradients of :func:`_bn_swish_forward`'s ``out`` in (x, weight, bias); ``y`` is recomputed when ``None``."""
    xf, g = x.float(), grad.float()
    invstd = torch.rsqrt(var + eps)
    xhat = (xf - _per_channel(mean)) * _per_channel(invstd)
    y = xhat * _per_channel(weight) + _per_channel(bias) if y is None else y.float()
    s = torch.sigmoid(y)
    dy = g * s * (1.0 + y * (1.0 - s))
    count = x.numel() // x.shape[1]
    grad_bias = dy.sum(dim=(0, 2, 3))
    grad_weight = (dy * xhat).sum(dim=(0, 2, 3))
    grad_x = _per_channel(weight * invstd) * (
        dy - _per_channel(grad_bias / count) - xhat * _per_channel(grad_weight / count)
    )
    return grad_x.to(x.dtype), grad_weight, grad_bias


_kernels: dict[str, object] = {}  # compiled on first use; the eager functions where compilation failed


def _kernel(name: str):
    eager = {"forward": _bn_swish_forward, "backward": _bn_swish_backward}[name]
    if name not in _kernels:
        # inductor's CPU build imports cpp_extension, which warns about CUDA_HOME on machines without CUDA
        logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
        _kernels[name] = torch.compile(eager, dynamic=True)
    return _kernels[name]


def _call(name: str, *args):
    try:
        return _kernel(name)(*args)
    except Exception as exc:  # no C++ compiler, unsupported platform, ...
        eager = {"forward": _bn_swish_forward, "backward": _bn_swish_backward}[name]
        if _kernels.get(name) is not eager:
            first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            warnings.warn(f"compiled BatchNorm-Swish unavailable ({first_line}); using eager kernels", stacklevel=3)
            _kernels[name] = eager
        return eager(*args)


class BatchNormSwishFunction(torch.autograd.Function):
    """Training-mode BatchNorm + Swish in one compiled kernel each way; updates the running statistics in place as
    ``nn.BatchNorm2d`` does (unbiased variance, ``momentum``). ``recompute`` saves only the input."""

    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, momentum: float, eps: float, recompute: bool):
        device = x.device.type
        if torch.is_autocast_enabled(device):  # the lower-precision input is kept; statistics are fp32 regardless
            x = x.to(torch.get_autocast_dtype(device))
        with torch.autocast(device, enabled=False):
            out, y, mean, var = _call("forward", x, weight, bias, eps, not recompute)
        with torch.no_grad():
            count = x.numel() // x.shape[1]
            running_mean.mul_(1.0 - momentum).add_(mean, alpha=momentum)
            running_var.mul_(1.0 - momentum).add_(var * (count / max(count - 1, 1)), alpha=momentum)
        ctx.save_for_backward(x, mean, var, weight, bias, *(() if recompute else (y,)))
        ctx.eps = eps
        return out

    @staticmethod
    def backward(ctx, grad_out):
        x, mean, var, weight, bias, *y = ctx.saved_tensors
        with torch.autocast(x.device.type, enabled=False):
            grad_x, grad_w, grad_b = _call(
                "backward", grad_out, x, y[0] if y else None, mean, var, weight, bias, ctx.eps
            )
        return grad_x, grad_w.to(weight.dtype), grad_b.to(bias.dtype), None, None, None, None, None


class BatchNormSwish(nn.Module):
    """BatchNorm followed by Swish (kept as two steps so SyncBatchNorm conversion still applies).

    ``mode`` (``native``, ``fused`` or ``recompute``; see the module's docstring) is set per layer by the models'
    ``set_bn_swish``; the fused kernels run only where they compute what ``native`` would: a plain
    ``nn.BatchNorm2d`` (not SyncBatchNorm) in training with batch statistics and a momentum, under autograd.
    """

    mode = "native"

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.bn = batch_norm(channels)

    def forward(self, x: Tensor) -> Tensor:
        if self.mode != "native" and self._fusable(x):
            bn = self.bn
            if bn.num_batches_tracked is not None:
                bn.num_batches_tracked.add_(1)
            return BatchNormSwishFunction.apply(
                x, bn.weight, bn.bias, bn.running_mean, bn.running_var, bn.momentum, bn.eps, self.mode == "recompute"
            )
        return swish(self.bn(x))

    def _fusable(self, x: Tensor) -> bool:
        bn = self.bn
        return (
            type(bn) is nn.BatchNorm2d
            and bn.training
            and bn.affine
            and bn.track_running_stats
            and bn.momentum is not None
            and torch.is_grad_enabled()
            and not torch.compiler.is_compiling()
            and x.dim() == 4
            and x.numel() > x.shape[1]  # one value per channel has no variance
        )
