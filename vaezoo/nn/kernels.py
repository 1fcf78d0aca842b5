"""Fast kernels for CPUs: the weight gradient of a stride-1 depthwise convolution, compiled; and convolutions with
few input channels as one im2col matrix product.

oneDNN's depthwise weight gradient is several times slower than the forward pass at the channel counts of the
hierarchical decoders; ``k * k`` fused reductions through ``torch.compile`` are not. For convolutions whose
reduction (input channels x kernel taps) is short, oneDNN's fixed cost per call dominates: torch's own im2col + GEMM
kernel is 1.2-5x faster forward plus backward (see :class:`SmallConv2dFunction`).
"""

from __future__ import annotations

import logging
import warnings

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable


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

#: distinct input shapes (and layouts) the compiled kernel specialises for before dynamo runs the taps eagerly; a
#: hierarchical model has one per (channels, resolution, batch) of its depthwise convs, a few to a few dozen
MAX_SPECIALISATIONS = 64

#: how many weight gradients each kernel has computed in this process: the fallback is silent after its one
#: warning, so tests read this to prove that the compiled path really ran
kernel_calls = {"compiled": 0, "native": 0}


def depthwise_weight_grad(grad_output: Tensor, x: Tensor, kernel_size: int, padding: int) -> Tensor:
    """:func:`_depthwise_weight_grad_taps` compiled, one kernel per input shape and memory format; where no
    compiler works, a warning and oneDNN's kernel.

    The kernels are specialised to their shapes (``dynamic=False``): on the decoders' shapes a shape-generic kernel
    was 3-4x slower (11.1 against 3.7 ms for 8 x 1536 x 16 x 16 channels_last, 52 against 12 ms for
    8 x 768 x 32 x 32, 2 threads), slower even than oneDNN's at 32 x 32. Each shape compiles once; the recompile
    limit is raised for these calls only, to :data:`MAX_SPECIALISATIONS`.
    """
    with torch.profiler.record_function("vaezoo::depthwise_weight_grad"):  # a named range for profiles
        return _depthwise_weight_grad(grad_output, x, kernel_size, padding)


def _depthwise_weight_grad(grad_output: Tensor, x: Tensor, kernel_size: int, padding: int) -> Tensor:
    global _compiled_taps
    if _compiled_taps is None:
        # inductor's CPU build imports cpp_extension, which warns about CUDA_HOME on machines without CUDA
        logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
        _compiled_taps = torch.compile(_depthwise_weight_grad_taps, dynamic=False)
    if _compiled_taps is not False:
        try:
            with torch._dynamo.config.patch(
                recompile_limit=MAX_SPECIALISATIONS, accumulated_recompile_limit=4 * MAX_SPECIALISATIONS
            ):
                grad_weight = _compiled_taps(grad_output, x, kernel_size, padding)
            kernel_calls["compiled"] += 1
            return grad_weight
        except Exception as exc:  # no C++ compiler, unsupported platform, ...
            first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            warnings.warn(
                f"compiled depthwise weight gradient unavailable ({first_line}); using the native kernel", stacklevel=2
            )
            _compiled_taps = False
    kernel_calls["native"] += 1
    channels = x.shape[1]
    weight = torch.empty(channels, 1, kernel_size, kernel_size, dtype=x.dtype, device=x.device)
    return torch.ops.aten.convolution_backward(
        grad_output, x, weight, None, [1, 1], [padding, padding], [1, 1], False, [0, 0], channels, [False, True, False]
    )[1]


def compiled_depthwise_available() -> bool:
    """Whether the compiled kernel works on this machine (compiles it on a tiny input when not yet tried)."""
    if _compiled_taps is None:
        x = torch.zeros(1, 1, 3, 3)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            depthwise_weight_grad(x, x, 3, 1)
    return _compiled_taps is not False


class DepthwiseConv2dFunction(torch.autograd.Function):
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


#: the longest reduction (input channels per group x kernel taps) a CPU convolution may have to run as
#: :class:`SmallConv2dFunction`; 0 turns the path off. Measured forward plus backward at batch 8, 2 threads (AVX-512
#: Xeon): 3 -> 3 channels 3x3 at 32x32 226 against oneDNN's 580 us, 6 -> 36 1x1 89 against 408 us, 12 -> 100 3x3
#: 2.9 against 4.4 ms, 24 -> 24 3x3 295 against 350 us; at 48 -> 48 3x3 (a reduction of 432) oneDNN is ahead.
SMALL_CONV_MAX_REDUCTION = 256

#: how many convolutions each path has run in this process (tests read it to prove the path was taken)
small_conv_calls = {"gemm": 0}


def _is_row_major(t: Tensor) -> bool:
    """Whether ``t`` has exactly the strides of a row-major tensor of its shape (``is_contiguous`` ignores the strides
    of dimensions of size 1)."""
    expected, step = [], 1
    for size in reversed(t.shape):
        expected.append(step)
        step *= size
    return t.stride() == tuple(reversed(expected))


def _row_major(t: Tensor) -> Tensor:
    """``t`` with exactly the strides of a row-major tensor of its shape (a copy only where they differ)."""
    return t if _is_row_major(t) else t.clone(memory_format=torch.contiguous_format)


class SmallConv2dFunction(torch.autograd.Function):
    """A dense (groups = 1) convolution of an NCHW tensor through torch's im2col + GEMM kernels
    (``_slow_conv2d_forward`` / ``_slow_conv2d_backward``) instead of oneDNN, for convolutions with a short reduction
    (:data:`SMALL_CONV_MAX_REDUCTION`), where oneDNN's fixed cost per call exceeds the arithmetic. Same values to float
    rounding; first-order gradients only."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None, stride: tuple, padding: tuple) -> Tensor:
        kernel = list(weight.shape[2:])
        small_conv_calls["gemm"] += 1
        # the im2col kernels assume row-major strides, even on dimensions of size 1 (where ``is_contiguous`` does not
        # look): a channels_last weight, or a one-channel channels_last input, gives a correct forward but a wrong
        # weight gradient
        x, weight = _row_major(x), _row_major(weight)
        out = torch.ops.aten._slow_conv2d_forward(x, weight, kernel, bias, list(stride), list(padding))
        ctx.save_for_backward(x, weight)
        ctx.geometry = (kernel, list(stride), list(padding))
        ctx.has_bias = bias is not None
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output: Tensor):
        x, weight = ctx.saved_tensors
        kernel, stride, padding = ctx.geometry
        needs = [ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.has_bias and ctx.needs_input_grad[2]]
        grad_x, grad_w, grad_b = torch.ops.aten._slow_conv2d_backward(
            grad_output.contiguous(), x, weight, kernel, stride, padding, needs
        )
        return grad_x, grad_w, grad_b if ctx.has_bias else None, None, None


def small_conv_applies(x: Tensor, weight: Tensor, groups: int, dilation: tuple, padding_mode: str) -> bool:
    """Whether :class:`SmallConv2dFunction` should run this convolution: a CPU, a float32/64 NCHW input, a dense
    kernel, no dilation, zero padding, no autocast or compilation, and a reduction of at most
    :data:`SMALL_CONV_MAX_REDUCTION`."""
    return (
        x.device.type == "cpu"
        and x.dim() == 4
        and x.dtype in (torch.float32, torch.float64)
        and weight.dtype == x.dtype
        and groups == 1
        and tuple(dilation) == (1, 1)
        and padding_mode == "zeros"
        and weight.shape[1] * weight.shape[2] * weight.shape[3] <= SMALL_CONV_MAX_REDUCTION
        # exact row-major strides, even on dimensions of size 1: a channels_last model (its weights, and its one-channel
        # inputs, have channels_last strides) keeps its layout; this path's NCHW output would mix the two layouts
        # downstream, and an elementwise op between them is 3-6x slower on CPUs than one within a layout
        and _is_row_major(x)
        and _is_row_major(weight)
        and not torch.is_autocast_enabled("cpu")
        and not torch.compiler.is_compiling()
    )
