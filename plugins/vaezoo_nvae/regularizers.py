"""NVAE's regularisers: the spectral regulariser (sum of the largest singular value of every conv weight, by power
iteration batched over weights of the same shape) and the BatchNorm scale regulariser (sum of max |gamma|)."""

from __future__ import annotations

import re
import weakref

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vaezoo.interfaces import Example, Regularizer
from vaezoo.nn import MaskedWeightNormConv2d, WeightNormConv2d

_VECTOR_KEY = re.compile(r"^(u|v)_(\d+)x(\d+)$")


def _conv_layers(model: nn.Module) -> list[nn.Conv2d]:
    return [m for m in Regularizer.modules_of(model) if isinstance(m, nn.Conv2d)]


def _applied_weight(layer: nn.Conv2d) -> Tensor:
    """The weight a conv applies: the forward pass's weight-normalised (and masked) one where that applies."""
    applied = getattr(layer, "applied_weight", None)
    return layer.weight if applied is None else applied(release=True)


class _SpectralSum(torch.autograd.Function):
    """``sum_i u_i^T W_i v_i`` from the stacked weights, differentiable in each ``W_i``.

    The gradient of a term is the rank-one ``u_i v_i^T``; it is formed per weight in the backward pass, so no
    stacked copy of the weights is kept for autograd and no stacked gradient is materialised.
    """

    @staticmethod
    def forward(ctx, u: Tensor, v: Tensor, stacked: Tensor, *weights: Tensor) -> Tensor:
        ctx.save_for_backward(u, v)
        ctx.shapes = [w.shape for w in weights]
        return torch.matmul(u.unsqueeze(1), torch.matmul(stacked, v.unsqueeze(2))).sum()

    @staticmethod
    def backward(ctx, grad: Tensor):
        u, v = ctx.saved_tensors
        u = u * grad
        grads = [torch.outer(u[i], v[i]).view(shape) for i, shape in enumerate(ctx.shapes)]
        return (None, None, None, *grads)


class SpectralRegularizer(Regularizer):
    """``sum_W u^T W v``: a differentiable estimate of the sum of spectral norms of all conv weights.

    Every ``nn.Conv2d`` of the model is covered (of the modules :meth:`Regularizer.modules_of` gives: a joint
    prior's network is left out, it has its own regulariser), with the weight it actually applies (masked and weight-normalised
    where that applies; the very tensor of the last forward pass when its graph is still alive, so the
    normalisation is not computed and differentiated twice), reshaped to ``(out, in * kh * kw)``. Weights of the
    same matrix shape are stacked in module order and share one batched power iteration (``num_power_iterations`` per call under ``no_grad``; the
    first time a shape is seen, its vectors start from normalised standard-normal draws of the CPU generator and
    run ``first_call_multiplier`` times as many iterations).

    The singular-vector estimates are buffers ``u_<rows>x<cols>`` / ``v_<rows>x<cols>`` (created lazily, restored by
    ``load_state_dict``), so a resumed run continues the same power iteration.
    """

    def __init__(
        self, num_power_iterations: int = 4, first_call_multiplier: int = 10, normalize_eps: float = 1e-3
    ) -> None:
        super().__init__()
        self.num_power_iterations = num_power_iterations
        self.first_call_multiplier = first_call_multiplier
        self.normalize_eps = normalize_eps
        self._groups_model: weakref.ref | None = None
        self._groups: dict[tuple[int, int], list[nn.Conv2d]] = {}

    # -- state ---------------------------------------------------------------------------------
    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ):
        # the vectors exist only once a shape has been seen: create placeholders for those being loaded
        for key, value in state_dict.items():
            if key.startswith(prefix) and _VECTOR_KEY.match(key[len(prefix) :]) and isinstance(value, Tensor):
                name = key[len(prefix) :]
                if name not in self._buffers:
                    self.register_buffer(name, torch.empty_like(value, device=self._device_hint()))
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    def _device_hint(self) -> torch.device:
        for buffer in self._buffers.values():
            if buffer is not None:
                return buffer.device
        return torch.device("cpu")

    def vectors(self, rows: int, cols: int) -> tuple[Tensor | None, Tensor | None]:
        return self._buffers.get(f"u_{rows}x{cols}"), self._buffers.get(f"v_{rows}x{cols}")

    def set_vectors(self, rows: int, cols: int, u: Tensor, v: Tensor) -> None:
        self.register_buffer(f"u_{rows}x{cols}", u)
        self.register_buffer(f"v_{rows}x{cols}", v)

    # -- computation ---------------------------------------------------------------------------
    def conv_groups(self, model: nn.Module) -> dict[tuple[int, int], list[nn.Conv2d]]:
        """Conv layers by matrix shape ``(rows, cols)``, in module order (cached for the last model seen)."""
        if self._groups_model is None or self._groups_model() is not model:
            groups: dict[tuple[int, int], list[nn.Conv2d]] = {}
            for layer in _conv_layers(model):
                groups.setdefault((layer.weight.shape[0], layer.weight[0].numel()), []).append(layer)
            self._groups, self._groups_model = groups, weakref.ref(model)
        return self._groups

    def forward(self, model: nn.Module) -> Tensor:
        loss: Tensor | None = None
        eps = self.normalize_eps
        for (rows, cols), layers in self.conv_groups(model).items():
            weights = [_applied_weight(layer) for layer in layers]
            # fp32 whatever the autocast: the singular vectors are state, and casting the stack every iteration
            # would cost more than the matrix-vector products themselves
            with torch.no_grad(), torch.autocast(weights[0].device.type, enabled=False):
                stacked = self._stack(rows, cols, weights)
                u, v = self.vectors(rows, cols)
                iterations = self.num_power_iterations
                if u is None or v is None or u.shape[0] != len(layers):
                    # drawn on the CPU so that the start does not depend on the device
                    u = F.normalize(torch.randn(len(layers), rows), dim=1, eps=eps).to(stacked.device, stacked.dtype)
                    v = F.normalize(torch.randn(len(layers), cols), dim=1, eps=eps).to(stacked.device, stacked.dtype)
                    iterations *= self.first_call_multiplier
                for _ in range(iterations):
                    v = F.normalize(torch.matmul(u.unsqueeze(1), stacked).squeeze(1), dim=1, eps=eps)
                    u = F.normalize(torch.matmul(stacked, v.unsqueeze(2)).squeeze(2), dim=1, eps=eps)
                self.set_vectors(rows, cols, u, v)
            sigma = _SpectralSum.apply(u, v, stacked, *weights)
            loss = sigma if loss is None else loss + sigma
        if loss is None:
            raise ValueError(f"{type(model).__name__} has no conv layers to regularise")
        return loss

    def _stack(self, rows: int, cols: int, weights: list[Tensor]) -> Tensor:
        """The weights as one ``[n, rows, cols]`` tensor, for this call only: a copy of every conv weight (0.5 GB for
        the paper's CIFAR-10 model) kept between calls would stay alive through the backward pass, where the peak
        memory of a step is; with ``keep_freed_memory`` the allocation reuses freed memory instead of faulting it in."""
        first = weights[0]
        stacked = torch.empty(len(weights), rows, cols, dtype=first.dtype, device=first.device)
        # row-major whatever the layout of the weights (channels_last ones are copied into it)
        torch.stack([w.detach() for w in weights], out=stacked.view(len(weights), *first.shape))
        return stacked

    def extra_repr(self) -> str:
        return f"num_power_iterations={self.num_power_iterations}, first_call_multiplier={self.first_call_multiplier}"

    @classmethod
    def example(cls) -> Example:
        # the conv weights (and weight norms) are regularised; biases and BatchNorm parameters are not
        return Example(
            build=lambda: _with_model(cls(), _tiny_conv_model()),
            output_shape=(),
            call=lambda m, _: m(m.model),
            gradient_free=("model.*.bias", "model.1.weight", "model.5.weight"),
        )


class BatchNormScaleRegularizer(Regularizer):
    """``sum over affine BatchNorm layers of max |gamma|``: keeps BN from amplifying activations."""

    def forward(self, model: nn.Module) -> Tensor:
        weights = [
            m.weight
            for m in Regularizer.modules_of(model)
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine
        ]
        if not weights:
            raise ValueError(f"{type(model).__name__} has no affine BatchNorm layers to regularise")
        # one fused max-abs per layer (the infinity norm), then a single sum
        return torch.stack(torch._foreach_norm(weights, float("inf"))).sum()

    @classmethod
    def example(cls) -> Example:
        # the BatchNorm scales (layers 1 and 5) are regularised, nothing else
        return Example(
            build=lambda: _with_model(cls(), _tiny_conv_model()),
            output_shape=(),
            call=lambda m, _: m(m.model),
            gradient_free=("model.[0234].*", "model.*.bias"),
        )


def _tiny_conv_model() -> nn.Module:

    model = nn.Sequential(
        WeightNormConv2d(2, 3, 3),
        nn.BatchNorm2d(3),
        nn.Conv2d(3, 3, 1),
        MaskedWeightNormConv2d(3, 3, 1, zero_diagonal=False),
        WeightNormConv2d(3, 3, 1, weight_norm=False),
        nn.BatchNorm2d(3),
    )
    with torch.no_grad():
        for bn in (model[1], model[5]):
            bn.weight.uniform_(-2, 2)
    return model


def _with_model(regularizer: Regularizer, model: nn.Module) -> Regularizer:
    """Attach a model to a regulariser so that its parameters take part in the contract test."""
    regularizer.model = model
    return regularizer
