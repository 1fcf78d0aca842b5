"""BatchNorm with the settings of the hierarchical cells, and BatchNorm followed by Swish.

:class:`BatchNormSwish` has three modes (``trainer.speed.bn_swish``), equal in value to float rounding:

- ``native`` (the default): torch's BatchNorm, then torch's SiLU; both save their input for the backward pass.
- ``fused``: BatchNorm + Swish as one autograd node on the same torch kernels, saving the BN input and the
  normalised activation (the memory of ``native``; the base of ``recompute``).
- ``recompute``: the same node saving only the BN input; the backward pass rebuilds the normalised activation from
  it with one multiply-add (NVAE's memory-saving BN-Swish: one activation fewer per BN-Swish). Unlike gradient
  checkpointing, no convolution is re-run.

An earlier version compiled BatchNorm + Swish into one ``torch.compile`` kernel each way. Measured side by side on
the decoder's shapes (channels_last, 2 threads, AVX-512 Xeon) it was 20-40% slower than torch's own kernels, forward
plus backward, and recompiled for every new shape; these torch kernels are what remains.
"""

from __future__ import annotations

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


def _scale_shift(weight: Tensor, bias: Tensor, mean: Tensor, invstd: Tensor) -> tuple[Tensor, Tensor]:
    """Per-channel ``scale``, ``shift`` with ``BN(x) = x * scale + shift`` for the batch statistics ``mean, invstd``."""
    scale = weight * invstd
    return _per_channel(scale), _per_channel(bias - mean * scale)


class BatchNormSwishFunction(torch.autograd.Function):
    """Training-mode BatchNorm + Swish as one autograd node on torch's own kernels (``native_batch_norm``, SiLU and
    their backward kernels, which are layout-aware and vectorised on CPUs and GPUs); updates the running statistics in
    place as ``nn.BatchNorm2d`` does. ``recompute`` saves only the input: the backward pass rebuilds the normalised
    activation with one multiply-add over it instead of keeping it from the forward pass."""

    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, momentum: float, eps: float, recompute: bool):
        device = x.device.type
        if torch.is_autocast_enabled(device):  # the lower-precision input is kept; statistics are fp32 regardless
            x = x.to(torch.get_autocast_dtype(device))
        with torch.autocast(device, enabled=False):
            y, mean, invstd = torch.ops.aten.native_batch_norm(
                x, weight, bias, running_mean, running_var, True, momentum, eps
            )
            out = F.silu(y)
        ctx.save_for_backward(x, weight, bias, mean, invstd, *(() if recompute else (y,)))
        ctx.eps = eps
        return out

    @staticmethod
    def backward(ctx, grad_out):
        x, weight, bias, mean, invstd, *saved = ctx.saved_tensors
        with torch.autocast(x.device.type, enabled=False):
            if saved:
                y = saved[0]
            else:
                scale, shift = _scale_shift(weight, bias, mean, invstd)
                y = torch.addcmul(shift, x, scale).to(x.dtype)
            dy = torch.ops.aten.silu_backward(grad_out.to(y.dtype), y)
            del y
            needs = [ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.needs_input_grad[2]]
            grad_x, grad_w, grad_b = torch.ops.aten.native_batch_norm_backward(
                dy, x, weight, None, None, mean, invstd, True, ctx.eps, needs
            )
        return grad_x, grad_w, grad_b, None, None, None, None, None


class BatchNormSwish(nn.Module):
    """BatchNorm followed by Swish (kept as two steps so SyncBatchNorm conversion still applies).

    ``mode`` (``native``, ``fused`` or ``recompute``; see the module's docstring) is set per layer by the models'
    ``set_bn_swish``; the single node runs only where it computes what ``native`` would: a plain
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
