"""NVAE's regularisers: the spectral regulariser (sum of the largest singular value of every conv weight, by power
iteration batched over weights of the same shape) and the BatchNorm scale regulariser (sum of max |gamma|)."""

from __future__ import annotations

import re
import weakref
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vaezoo.interfaces import Example, Regularizer

from .layers import weight_normalize

_VECTOR_KEY = re.compile(r"^(u|v)_(\d+)x(\d+)$")


def _conv_layers(model: nn.Module) -> list[nn.Conv2d]:
    return [m for m in model.modules() if isinstance(m, nn.Conv2d)]


class _StackPlan:
    """How to stack the effective weights of same-shaped convs: layers that normalise the same way (masked or not,
    weight-normalised or not) are computed together, then put back in module order."""

    def __init__(self, layers: list[nn.Conv2d]) -> None:
        kinds: dict[tuple[bool, bool], list[int]] = {}
        for index, layer in enumerate(layers):
            masked = getattr(layer, "mask", None) is not None
            normed = getattr(layer, "log_weight_norm", None) is not None
            kinds.setdefault((masked, normed), []).append(index)
        self.layers = layers
        self.kinds = list(kinds.items())
        order = [i for _, indices in self.kinds for i in indices]
        self._inverse = None if order == sorted(order) else torch.argsort(torch.tensor(order))
        self._inverse_on: dict[torch.device, Tensor] = {}

    def stacked(self) -> Tensor:
        """``[n, out, in, kh, kw]`` in module order (one exp/norm/division per kind, not per layer)."""
        parts = []
        for (masked, normed), indices in self.kinds:
            weight = torch.stack([self.layers[i].weight for i in indices])
            if masked:
                weight = weight * torch.stack([self.layers[i].mask for i in indices])
            if normed:
                weight = weight_normalize(torch.stack([self.layers[i].log_weight_norm for i in indices]), weight)
            parts.append(weight)
        stacked = parts[0] if len(parts) == 1 else torch.cat(parts)
        if self._inverse is None:
            return stacked
        if stacked.device not in self._inverse_on:  # moved to the device once, not every step
            self._inverse_on[stacked.device] = self._inverse.to(stacked.device)
        return stacked.index_select(0, self._inverse_on[stacked.device])


class SpectralRegularizer(Regularizer):
    """``sum_W u^T W v``: a differentiable estimate of the sum of spectral norms of all conv weights.

    Every ``nn.Conv2d`` of the model is covered, with the weight it actually applies (masked and weight-normalised
    where that applies), reshaped to ``(out, in * kh * kw)``. Weights of the same matrix shape are stacked in
    module order and share one batched power iteration (``num_power_iterations`` per call under ``no_grad``; the
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
        self._plans: dict[tuple[int, int], _StackPlan] = {}

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
            self._plans = {shape: _StackPlan(layers) for shape, layers in groups.items()}
        return self._groups

    def forward(self, model: nn.Module) -> Tensor:
        loss: Tensor | None = None
        eps = self.normalize_eps
        for (rows, cols), layers in self.conv_groups(model).items():
            weights = self._plans[(rows, cols)].stacked().reshape(len(layers), rows, cols)
            with torch.no_grad():
                u, v = self.vectors(rows, cols)
                iterations = self.num_power_iterations
                if u is None or v is None or u.shape[0] != len(layers):
                    # drawn on the CPU so that the start does not depend on the device
                    u = F.normalize(torch.randn(len(layers), rows), dim=1, eps=eps).to(weights.device, weights.dtype)
                    v = F.normalize(torch.randn(len(layers), cols), dim=1, eps=eps).to(weights.device, weights.dtype)
                    iterations *= self.first_call_multiplier
                for _ in range(iterations):
                    v = F.normalize(torch.matmul(u.unsqueeze(1), weights).squeeze(1), dim=1, eps=eps)
                    u = F.normalize(torch.matmul(weights, v.unsqueeze(2)).squeeze(2), dim=1, eps=eps)
                self.set_vectors(rows, cols, u, v)
            sigma = torch.matmul(u.unsqueeze(1), torch.matmul(weights, v.unsqueeze(2)))
            loss = torch.sum(sigma) if loss is None else loss + torch.sum(sigma)
        if loss is None:
            raise ValueError(f"{type(model).__name__} has no conv layers to regularise")
        return loss

    def extra_repr(self) -> str:
        return f"num_power_iterations={self.num_power_iterations}, first_call_multiplier={self.first_call_multiplier}"

    @classmethod
    def example(cls) -> Example:
        return Example(
            build=lambda: _with_model(cls(), _tiny_conv_model()), output_shape=(), call=lambda m, _: m(m.model)
        )


class BatchNormScaleRegularizer(Regularizer):
    """``sum over affine BatchNorm layers of max |gamma|``: keeps BN from amplifying activations."""

    def forward(self, model: nn.Module) -> Tensor:
        weights = [m.weight for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine]
        if not weights:
            raise ValueError(f"{type(model).__name__} has no affine BatchNorm layers to regularise")
        # one fused max-abs per layer (the infinity norm), then a single sum
        return torch.stack(torch._foreach_norm(weights, float("inf"))).sum()

    @classmethod
    def example(cls) -> Example:
        return Example(
            build=lambda: _with_model(cls(), _tiny_conv_model()), output_shape=(), call=lambda m, _: m(m.model)
        )


def _tiny_conv_model() -> nn.Module:
    from .layers import MaskedWeightNormConv2d, WeightNormConv2d

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


def regularizer_state(objective: nn.Module) -> dict[str, Any]:
    """The regulariser buffers of an objective (for inspection and tests)."""
    return {k: v for k, v in objective.state_dict().items() if _VECTOR_KEY.match(k.rsplit(".", 1)[-1])}
