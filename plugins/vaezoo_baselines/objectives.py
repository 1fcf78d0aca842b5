"""Generic training objectives: the (beta-)ELBO with linear KL warm-up, and the IWAE bound."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from vaezoo.interfaces import Example, GenerativeModel, Objective


class ELBO(Objective):
    """Negative ELBO per example, ``recon + beta_t * KL``; ``beta_t`` warms up linearly to ``beta``."""

    def __init__(self, beta: float = 1.0, kl_warmup_steps: int = 0) -> None:
        super().__init__()
        self.beta, self.kl_warmup_steps = beta, kl_warmup_steps

    def kl_coefficient(self, step: int) -> float:
        if self.kl_warmup_steps <= 0:
            return self.beta
        return self.beta * min(1.0, step / self.kl_warmup_steps)

    def forward(self, model: GenerativeModel, x: Tensor, step: int, noise: list[Tensor] | None = None) -> tuple[Tensor, dict[str, Any]]:
        out = model(x, noise=noise)
        kl = out.kl.sum(0)
        coeff = self.kl_coefficient(step)
        loss = (out.recon + coeff * kl).mean()
        metrics = {
            "recon": out.recon.detach().mean(),
            "kl": kl.detach().mean(),
            "kl_per_group": out.kl.detach().mean(1),
            "nelbo": out.nelbo.detach().mean(),
            "kl_coeff": coeff,
        }
        return loss, metrics

    @classmethod
    def example(cls) -> Example:
        from .conv_vae import ConvVAE

        x = torch.bernoulli(torch.full((2, 1, 8, 8), 0.5))

        def build():
            objective = cls(kl_warmup_steps=10)
            objective.model = ConvVAE(image_shape=(1, 8, 8), latent_dim=3, hidden_channels=4, hidden_units=8)
            return objective

        return Example(build=build, inputs=(x,), output_shape=(), call=lambda m, i: m(m.model, i[0], step=5)[0])


class IWAE(Objective):
    """The importance-weighted bound with ``k`` samples (Burda et al. 2016), averaged over the batch."""

    def __init__(self, k: int = 5) -> None:
        super().__init__()
        self.k = k

    def forward(self, model: GenerativeModel, x: Tensor, step: int, noise: list[Tensor] | None = None) -> tuple[Tensor, dict[str, Any]]:
        repeated = x.repeat_interleave(self.k, dim=0) if self.k > 1 else x
        out = model(repeated, noise=noise)
        log_w = out.log_iw.view(x.shape[0], self.k)
        bound = torch.logsumexp(log_w.float(), dim=1) - math.log(self.k)
        loss = -bound.mean()
        metrics = {
            "recon": out.recon.detach().mean(),
            "kl": out.kl.detach().sum(0).mean(),
            "kl_per_group": out.kl.detach().mean(1),
            "nelbo": out.nelbo.detach().mean(),
            "iw_bound": bound.detach().mean(),
        }
        return loss, metrics

    @classmethod
    def example(cls) -> Example:
        from .conv_vae import ConvVAE

        x = torch.bernoulli(torch.full((2, 1, 8, 8), 0.5))

        def build():
            objective = cls(k=3)
            objective.model = ConvVAE(image_shape=(1, 8, 8), latent_dim=3, hidden_channels=4, hidden_units=8)
            return objective

        return Example(build=build, inputs=(x,), output_shape=(), call=lambda m, i: m(m.model, i[0], step=0)[0])
