"""NVAE's training objective: KL warm-up, KL balancing, and regularisers weighted by an annealed lambda."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from vaezoo.interfaces import Example, GenerativeModel, ModelOutput, Objective, Regularizer

from .regularizers import BatchNormScaleRegularizer, SpectralRegularizer

#: balancing weight of a group at decoder scale s (0 = lowest resolution) in a scale holding n groups
_ALPHA_SCHEMES = {
    "equal": lambda s, n: 1.0,
    "linear": lambda s, n: float(2**s),
    "sqrt": lambda s, n: math.sqrt(2**s),
    "square": lambda s, n: float((2**s) ** 2) / n,
}


def kl_warmup_coefficient(
    step: int, total_steps: int, anneal_portion: float, const_portion: float, min_coeff: float
) -> float:
    """``max(min((step - const_portion T) / (anneal_portion T), 1), min_coeff)``."""
    return max(min((step - const_portion * total_steps) / (anneal_portion * total_steps), 1.0), min_coeff)


def kl_balance_alpha(group_scales: Sequence[int], scheme: str = "square") -> Tensor:
    """Balancing weights per latent group (top first) from each group's decoder scale, normalised to min 1.

    For ``square``: ``4^s / (groups at scale s)`` (larger spatial scales and sparser scales weigh more).
    """
    if scheme not in _ALPHA_SCHEMES:
        raise ValueError(f"unknown KL balancing scheme {scheme!r}; choose from {', '.join(_ALPHA_SCHEMES)}")
    counts: dict[int, int] = {}
    for s in group_scales:
        counts[s] = counts.get(s, 0) + 1
    values = [_ALPHA_SCHEMES[scheme](s, counts[s]) for s in group_scales]
    alpha = torch.tensor(values, dtype=torch.float32)
    return alpha / torch.min(alpha)


def balance_kl(kl: Tensor, kl_coeff: float, alpha: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
    """``kl_coeff * sum_i gamma_i KL_i`` per example, with ``gamma`` from NVAE's KL balancing.

    ``kl`` is ``[G, B]``. While ``kl_coeff < 1`` and ``alpha`` is given, ``gamma_i`` is proportional to the batch mean
    of ``|KL_i|`` (+0.01) over ``alpha_i``, normalised to mean 1 and not differentiated; otherwise ``gamma = 1``.
    Returns ``(balanced [B], gamma [G], batch-mean KL per group [G])``.
    """
    kl_all = kl.t().contiguous()  # [B, G]
    kl_vals = torch.mean(kl_all, dim=0)
    if alpha is not None and kl_coeff < 1.0:
        alpha = alpha.to(kl_all.device, kl_all.dtype).unsqueeze(0)
        gamma = torch.mean(torch.abs(kl_all), dim=0, keepdim=True) + 0.01
        total = torch.sum(gamma)
        gamma = gamma / alpha * total
        gamma = gamma / torch.mean(gamma, dim=1, keepdim=True)
        balanced = torch.sum(kl_all * gamma.detach(), dim=1)
        coeffs = gamma.squeeze(0)
    else:
        balanced = torch.sum(kl_all, dim=1)
        coeffs = kl_all.new_ones(kl_all.size(1))
    return kl_coeff * balanced, coeffs, kl_vals


def nelbo(out: ModelOutput) -> Tensor:
    """Negative ELBO per example (nats): ``recon + sum_i KL_i``."""
    kl_all = out.kl.t().contiguous()
    return out.recon + torch.sum(kl_all, dim=1)


class NVAEObjective(Objective):
    """NVAE's training loss.

    ``loss = mean_B(recon + kl_coeff * balanced KL) + (lambda * reg_1 + lambda * reg_2 + ...)`` where

    - ``kl_coeff(step) = max(min((step - kl_const_portion T) / (kl_anneal_portion T), 1), kl_const_coeff)`` with
      ``T`` the total number of training steps (:meth:`set_total_steps`);
    - KL balancing (``kl_balance``) with weights ``alpha`` from ``kl_balance_scheme`` is used while ``kl_coeff < 1``;
      it needs a model exposing ``group_scales`` (the decoder scale of each latent group, top first);
    - ``lambda = regularization_weight``, or with ``regularization_weight_init`` a geometric interpolation from it
      to ``regularization_weight`` that follows ``kl_coeff``;
    - ``regularizers`` defaults to the spectral and BatchNorm-scale regularisers; ``[]`` disables them.
    """

    def __init__(
        self,
        kl_anneal_portion: float = 0.3,
        kl_const_portion: float = 1e-4,
        kl_const_coeff: float = 1e-4,
        kl_balance: bool = True,
        kl_balance_scheme: str = "square",
        regularization_weight: float = 1e-2,
        regularization_weight_init: float | None = None,
        regularizers: list[Regularizer] | None = None,
        total_steps: int | None = None,
    ) -> None:
        super().__init__()
        if kl_balance_scheme not in _ALPHA_SCHEMES:
            raise ValueError(
                f"unknown kl_balance_scheme {kl_balance_scheme!r}; choose from {', '.join(_ALPHA_SCHEMES)}"
            )
        if regularization_weight_init is not None and (regularization_weight_init <= 0 or regularization_weight <= 0):
            raise ValueError("annealing the regularisation weight needs positive regularization_weight(_init)")
        self.kl_anneal_portion = kl_anneal_portion
        self.kl_const_portion = kl_const_portion
        self.kl_const_coeff = kl_const_coeff
        self.kl_balance = kl_balance
        self.kl_balance_scheme = kl_balance_scheme
        self.regularization_weight = regularization_weight
        self.regularization_weight_init = regularization_weight_init
        if regularizers is None:
            regularizers = [SpectralRegularizer(), BatchNormScaleRegularizer()]
        self.regularizers = nn.ModuleList(regularizers)
        self.total_steps = total_steps
        self._alpha_cache: dict[tuple[tuple[int, ...], torch.device], Tensor] = {}

    def balancing_alpha(self, group_scales: Sequence[int], device: torch.device) -> Tensor:
        """The KL balancing weights for a model's groups, built once per layout and device (no per-step copy)."""
        key = (tuple(group_scales), device)
        if key not in self._alpha_cache:
            self._alpha_cache[key] = kl_balance_alpha(group_scales, self.kl_balance_scheme).to(device)
        return self._alpha_cache[key]

    def kl_coefficient(self, step: int) -> float:
        if not self.total_steps:
            raise ValueError(f"{type(self).__name__} needs the run length: call set_total_steps(T) before training")
        return kl_warmup_coefficient(
            step, self.total_steps, self.kl_anneal_portion, self.kl_const_portion, self.kl_const_coeff
        )

    def regularization_coefficient(self, kl_coeff: float) -> float:
        if self.regularization_weight_init is None:
            return self.regularization_weight
        log_weight = (1.0 - kl_coeff) * math.log(self.regularization_weight_init) + kl_coeff * math.log(
            self.regularization_weight
        )
        return math.exp(log_weight)

    def forward(
        self, model: GenerativeModel, x: Tensor, step: int, noise: list[Tensor] | None = None
    ) -> tuple[Tensor, dict[str, Any]]:
        return self.loss_from_output(model, model(x, noise=noise), step)

    def loss_from_output(self, model: GenerativeModel, out: ModelOutput, step: int) -> tuple[Tensor, dict[str, Any]]:
        """The loss and metrics given the model's output for the batch (the regularisers read ``model``)."""
        kl_coeff = self.kl_coefficient(step)
        alpha = self.balancing_alpha(model.group_scales, out.kl.device) if self.kl_balance else None
        balanced_kl, kl_coeffs, kl_vals = balance_kl(out.kl, kl_coeff, alpha)
        loss = torch.mean(out.recon + balanced_kl)
        metrics: dict[str, Any] = {
            "recon": out.recon.detach().mean(),
            "kl": out.kl.detach().sum(0).mean(),
            "nelbo": nelbo(out).detach().mean(),
            "kl_coeff": kl_coeff,
            "kl_coeffs": kl_coeffs.detach(),
            "kl_vals": kl_vals.detach(),
            "balanced_kl": balanced_kl.detach().mean(),
            "nelbo_balanced": loss.detach(),
        }
        if len(self.regularizers):
            weight = self.regularization_coefficient(kl_coeff)
            penalty = None
            for regularizer in self.regularizers:
                value = regularizer(model)
                metrics[f"reg/{type(regularizer).__name__}"] = value.detach()
                penalty = value * weight if penalty is None else penalty + value * weight
            metrics["regularization_weight"] = weight
            loss = loss + penalty
        metrics["loss"] = loss.detach()
        return loss, metrics

    @classmethod
    def example(cls) -> Example:
        x = torch.bernoulli(torch.full((2, 1, 8, 8), 0.5))

        def build() -> NVAEObjective:
            from .presets import tiny_model

            objective = cls(total_steps=100, regularization_weight_init=1.0)
            objective.model = tiny_model()
            return objective

        return Example(
            build=build,
            inputs=(x,),
            output_shape=(),
            call=lambda m, i: m(m.model, i[0], step=3, noise=None)[0],
            surrogate_gradient="KL balancing weights the groups' KL with coefficients that are not differentiated "
            "(NVAE's)",
        )
