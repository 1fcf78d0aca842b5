"""The importance-weighted bound of Burda et al. (2016) as a training objective."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.utils.checkpoint
from torch import Tensor

from vaezoo.interfaces import Example, GenerativeModel, Objective

from .conv_vae import ConvVAE


class IWAE(Objective):
    """The importance-weighted bound with ``k`` samples (Burda et al. 2016), averaged over the batch.

    ``log p(x) >= E[logsumexp_j log w_j - log k]`` with ``log w_j = log p(x, z_j) - log q(z_j | x)``. The k samples are
    evaluated as batched forward passes of the batch repeated sample-major (row ``j * B + i`` is sample ``j`` of
    example ``i``, the order of explicit ``noise`` too, as in :func:`vaezoo.evaluation.metrics.iw_log_likelihood`).

    ``chunk_size`` bounds memory: at most that many samples per forward pass, each chunk under activation
    checkpointing so that only its log-weights are kept for the backward pass (its activations are recomputed
    there, with the same noise). Recomputation runs the model in training mode again, so BatchNorm running
    statistics see a chunk twice. None evaluates all k samples in one pass.
    """

    def __init__(self, k: int = 5, chunk_size: int | None = None) -> None:
        super().__init__()
        if k < 1:
            raise ValueError(f"IWAE needs k >= 1 samples, got {k}")
        if chunk_size is not None and chunk_size < 1:
            raise ValueError(f"IWAE chunk_size must be positive, got {chunk_size}")
        self.k, self.chunk_size = k, chunk_size

    def forward(
        self, model: GenerativeModel, x: Tensor, step: int, noise: list[Tensor] | None = None
    ) -> tuple[Tensor, dict[str, Any]]:
        b = x.shape[0]
        per_pass = min(self.k, self.chunk_size or self.k)
        log_w, recon, kl = [], [], []
        for first in range(0, self.k, per_pass):
            n = min(per_pass, self.k - first)
            rows = x.repeat(n, *([1] * (x.ndim - 1)))
            chunk_noise = [g[first * b : (first + n) * b] for g in noise] if noise is not None else None
            if n < self.k and torch.is_grad_enabled():
                if chunk_noise is None:  # drawn here so that the recomputation sees the same latents
                    chunk_noise = [torch.randn(s, device=x.device) for s in model.latent_shapes(n * b)]
                parts = torch.utils.checkpoint.checkpoint(_iw_terms, model, rows, *chunk_noise, use_reentrant=False)
            else:
                parts = _iw_terms(model, rows, *(chunk_noise or []))
            for store, part in zip((log_w, recon, kl), parts, strict=True):
                store.append(part)
        log_w_all = torch.cat(log_w).view(self.k, b)  # sample-major
        bound = torch.logsumexp(log_w_all.float(), dim=0) - math.log(self.k)
        loss = -bound.mean()
        recon_all, kl_all = torch.cat(recon).detach(), torch.cat(kl, dim=1).detach()
        metrics = {
            "recon": recon_all.mean(),
            "kl": kl_all.sum(0).mean(),
            "kl_per_group": kl_all.mean(1),
            "nelbo": (recon_all + kl_all.sum(0)).mean(),
            "iw_bound": bound.detach().mean(),
        }
        return loss, metrics

    @classmethod
    def example(cls) -> Example:
        x = torch.bernoulli(torch.full((2, 1, 8, 8), 0.5))

        def build():
            objective = cls(k=3, chunk_size=2)
            objective.model = ConvVAE(image_shape=(1, 8, 8), latent_dim=3, hidden_channels=4, hidden_units=8)
            return objective

        return Example(build=build, inputs=(x,), output_shape=(), call=lambda m, i: m(m.model, i[0], step=0)[0])


def _iw_terms(model: GenerativeModel, x: Tensor, *noise: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Log importance weights ``[N]``, reconstruction terms ``[N]`` and KL per group ``[G, N]`` of one pass."""
    out = model(x, noise=list(noise) if noise else None)
    return out.log_iw, out.recon, out.kl
