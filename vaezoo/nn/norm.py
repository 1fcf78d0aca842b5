"""BatchNorm with the settings of the hierarchical cells, and BatchNorm followed by Swish.

:class:`BatchNormSwish` has three modes (``trainer.speed.bn_swish``), equal in value to float rounding:

- ``native`` (the default): torch's BatchNorm, then torch's SiLU; both save their input for the backward pass.
- ``fused``: BatchNorm + Swish as one autograd node on the same torch kernels, saving the BN input and the
  normalised activation (the memory of ``native``; the base of ``recompute``).
- ``recompute``: the same node saving only the BN input; the backward pass rebuilds the normalised activation from
  it with one multiply-add (one activation fewer per BN-Swish). Unlike gradient checkpointing, no convolution is
  re-run.
- ``input_only``: ``recompute``, and the layer that consumes the output (the convolution a BN-Swish feeds) does not
  keep it either: inside :func:`recompute_bn_swish_outputs` (which the models enter around their forward pass) a
  saved-tensor hook replaces every tensor saved for the backward pass that is a BN-Swish output, or a view of one,
  by the recipe to recompute it (one multiply-add and a SiLU over the saved input). A BN-Swish-conv pair then keeps
  only the BN input, as in NVAE's memory mode; still no convolution is re-run.

An earlier version compiled BatchNorm + Swish into one ``torch.compile`` kernel each way. Measured side by side on
the decoder's shapes (channels_last, 2 threads, AVX-512 Xeon) it was 20-40% slower than torch's own kernels, forward
plus backward, and recompiled for every new shape; these torch kernels are what remains.
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .activations import swish

#: BatchNorm settings of the hierarchical cells (NVAE's: momentum 0.05, eps 1e-5)
BN_EPS = 1e-5
BN_MOMENTUM = 0.05
BN_SWISH_MODES = ("native", "fused", "recompute", "input_only")


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
            # kept from the forward pass (fused), rebuilt moments ago for the conv this node fed (input_only), or
            # rebuilt here (recompute)
            y = saved[0] if saved else getattr(ctx, "rebuilt_normalized", None)
            ctx.rebuilt_normalized = None
            if y is None:
                scale, shift = _scale_shift(weight, bias, mean, invstd)
                y = torch.addcmul(shift, x, scale).to(x.dtype)
            dy = torch.ops.aten.silu_backward(grad_out.to(y.dtype), y)
            del y
            needs = [ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.needs_input_grad[2]]
            grad_x, grad_w, grad_b = torch.ops.aten.native_batch_norm_backward(
                dy, x, weight, None, None, mean, invstd, True, ctx.eps, needs
            )
        return grad_x, grad_w, grad_b, None, None, None, None, None


def _recompute_output(node) -> Tensor:
    """The output of a :class:`BatchNormSwishFunction` node that saved only its input, rebuilt from what it saved."""
    x, weight, bias, mean, invstd = node.saved_tensors[:5]
    with torch.autocast(x.device.type, enabled=False):
        scale, shift = _scale_shift(weight, bias, mean, invstd)
        normalized = torch.addcmul(shift, x, scale).to(x.dtype)
    # the node's own backward, which runs next, needs the normalised activation as well: it takes this one instead of
    # rebuilding it a second time
    node.rebuilt_normalized = normalized
    return F.silu(normalized)


class _Recipe:
    """What a saved-tensor hook keeps instead of a BN-Swish output (or a view of one): how to rebuild it."""

    __slots__ = ("recompute", "size", "stride", "offset", "source_size", "source_stride")

    def __init__(self, recompute: Callable[[], Tensor], t: Tensor, source: Tensor) -> None:
        self.recompute = recompute
        self.size, self.stride, self.offset = t.size(), t.stride(), t.storage_offset() - source.storage_offset()
        self.source_size, self.source_stride = source.size(), source.stride()

    def rebuild(self) -> Tensor:
        full = self.recompute()
        if full.stride() != self.source_stride:  # the saved view's strides refer to the original layout
            full = torch.empty_strided(
                self.source_size, self.source_stride, dtype=full.dtype, device=full.device
            ).copy_(full)
        return full.as_strided(self.size, self.stride, full.storage_offset() + self.offset)


_open = threading.local()  # the registries of the recompute_bn_swish_outputs contexts open in this thread


def _storage_key(t: Tensor) -> int | None:
    try:
        return t.untyped_storage().data_ptr()
    except (RuntimeError, NotImplementedError):  # tensors without storage (sparse, functional wrappers)
        return None


@contextlib.contextmanager
def recompute_bn_swish_outputs() -> Iterator[None]:
    """Within the block, tensors that autograd saves for the backward pass and that are (views of) outputs of
    ``input_only`` BatchNorm-Swish layers are not kept: each is recomputed from the BN input when the backward pass
    needs it. Everything else is saved as usual."""
    registry: dict[int, tuple[weakref.ref, Callable[[], Tensor]]] = {}

    def pack(t: Tensor):
        key = _storage_key(t) if registry else None
        entry = registry.get(key) if key is not None else None
        if entry is not None:
            source = entry[0]()
            # alive and the same storage: a freed output's address may since have been reused by another tensor
            if source is not None and _storage_key(source) == key and t.dtype == source.dtype:
                return _Recipe(entry[1], t, source)
        return t

    def unpack(packed):
        return packed.rebuild() if isinstance(packed, _Recipe) else packed

    stack = _open.__dict__.setdefault("registries", [])
    stack.append(registry)
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, unpack):
            yield
    finally:
        stack.pop()


def _register_recomputable(out: Tensor, recompute: Callable[[], Tensor]) -> None:
    stack = getattr(_open, "registries", None)
    key = _storage_key(out) if stack else None
    if key is not None:
        stack[-1][key] = (weakref.ref(out), recompute)


def recomputable_from(derived: Tensor, source: Tensor, fn: Callable[[Tensor], Tensor]) -> Tensor:
    """Declare ``derived = fn(source)`` (an op that saves nothing, such as nearest up-sampling) recomputable where
    ``source`` is: a layer that saves ``derived`` then keeps the recipe instead. Returns ``derived``."""
    stack = getattr(_open, "registries", None)
    key = _storage_key(source) if stack else None
    entry = stack[-1].get(key) if key is not None else None
    if entry is not None and entry[0]() is source:
        rebuild_source = entry[1]
        _register_recomputable(derived, lambda: fn(rebuild_source()))
    return derived


class BatchNormSwish(nn.Module):
    """BatchNorm followed by Swish (kept as two steps so SyncBatchNorm conversion still applies).

    ``mode`` (``native``, ``fused``, ``recompute`` or ``input_only``; see the module's docstring) is set per layer by the models'
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
            out = BatchNormSwishFunction.apply(
                x, bn.weight, bn.bias, bn.running_mean, bn.running_var, bn.momentum, bn.eps, self.mode != "fused"
            )
            if self.mode == "input_only":
                node = out.grad_fn
                _register_recomputable(out, lambda: _recompute_output(node))
            return out
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
