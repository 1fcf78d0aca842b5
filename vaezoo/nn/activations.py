"""Activations shared by the cells of every plugin: Swish, a vectorised ELU, and the soft clamp."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


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


class ELU(nn.Module):
    """:func:`elu` as a module (alpha 1), for ``act_layer`` arguments."""

    def forward(self, x: Tensor) -> Tensor:
        return elu(x)
