"""Generic training objectives: the (beta-)ELBO with linear KL warm-up, the IWAE bound, and gradient skipping
(a wrapper that drops updates whose gradient norm explodes, as VDVAE does)."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.utils.checkpoint
from torch import Tensor, nn

from vaezoo.interfaces import Example, GenerativeModel, Objective


class ELBO(Objective):
    """Negative ELBO per example, ``recon + beta_t * KL``; ``beta_t`` warms up linearly to ``beta``.

    The warm-up lasts ``kl_warmup_steps`` steps, or with ``kl_warmup_portion`` that fraction of the run (the trainer
    tells the objective the run length), so that runs of any length warm up alike.
    """

    def __init__(self, beta: float = 1.0, kl_warmup_steps: int = 0, kl_warmup_portion: float | None = None) -> None:
        super().__init__()
        if kl_warmup_portion is not None and not 0.0 <= kl_warmup_portion <= 1.0:
            raise ValueError(f"kl_warmup_portion must be in [0, 1], got {kl_warmup_portion}")
        self.beta, self.kl_warmup_steps, self.kl_warmup_portion = beta, kl_warmup_steps, kl_warmup_portion

    def warmup_steps(self) -> float:
        if self.kl_warmup_portion is None:
            return self.kl_warmup_steps
        total = getattr(self, "total_steps", None)
        if not total:
            raise ValueError("kl_warmup_portion needs the run length: call set_total_steps(T) before training")
        return self.kl_warmup_portion * total

    def kl_coefficient(self, step: int) -> float:
        warmup = self.warmup_steps()
        if warmup <= 0:
            return self.beta
        return self.beta * min(1.0, step / warmup)

    def forward(
        self, model: GenerativeModel, x: Tensor, step: int, noise: list[Tensor] | None = None
    ) -> tuple[Tensor, dict[str, Any]]:
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
        from .conv_vae import ConvVAE

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


class GradientSkipping(Objective):
    """Wraps any objective so that an update whose gradient norm exceeds ``max_grad_norm`` (or is not finite) is
    skipped and counted, as VDVAE (Child 2021) does to survive rare exploding-gradient batches.

    Trainer-independent: the wrapper hooks the returned loss, and once the backward pass has accumulated every
    gradient it measures the total norm of the model's gradients (before any clipping by the trainer). To skip, it
    sets the gradients to None: optimisers leave parameters without gradients untouched, so the weights and the
    optimiser state (moments, step counts, weight decay) stay exactly as they were. With gradient accumulation the
    norm is checked after every micro-batch of a step and a step skipped once stays skipped. The check runs after
    every other end-of-backward callback queued so far (DistributedDataParallel's gradient all-reduce included), so
    every process sees the same norm and takes the same decision.

    Metrics: ``grad_skips`` (total skipped updates, saved with the objective in checkpoints) and
    ``grad_norm_unclipped`` (the norm measured at the last check). Not for fp16 training with loss scaling: the
    measured norm would include the loss scale (that needs the trainer-side check).
    """

    def __init__(self, objective: Objective, max_grad_norm: float = 400.0) -> None:
        super().__init__()
        if not max_grad_norm > 0:
            raise ValueError(f"max_grad_norm must be positive, got {max_grad_norm}")
        self.objective = objective
        self.max_grad_norm = max_grad_norm
        self.register_buffer("skipped_updates", torch.zeros((), dtype=torch.long))
        self.register_buffer("last_grad_norm", torch.zeros(()))
        self._skipped_step: int | None = None

    def set_total_steps(self, total_steps: int) -> None:
        super().set_total_steps(total_steps)
        self.objective.set_total_steps(total_steps)

    def forward(
        self, model: GenerativeModel, x: Tensor, step: int, noise: list[Tensor] | None = None
    ) -> tuple[Tensor, dict[str, Any]]:
        loss, metrics = self.objective(model, x, step, noise=noise)
        if loss.requires_grad:
            parameters = [p for p in model.parameters() if p.requires_grad]
            loss.register_hook(self._on_backward(parameters, step))
        return loss, {**metrics, "grad_skips": self.skipped_updates, "grad_norm_unclipped": self.last_grad_norm}

    def _on_backward(self, parameters: list[nn.Parameter], step: int):
        engine = torch.autograd.Variable._execution_engine

        def check() -> None:
            grads = [p.grad for p in parameters if p.grad is not None]
            norm = torch.nn.utils.get_total_norm(grads) if grads else self.last_grad_norm.new_zeros(())
            self.last_grad_norm.copy_(norm.detach())
            exploded = not float(norm) <= self.max_grad_norm  # also true for NaN
            if exploded and self._skipped_step != step:
                self.skipped_updates += 1
                self._skipped_step = step
            if self._skipped_step == step:
                for p in parameters:
                    p.grad = None

        def hook(grad: Tensor) -> None:
            # queued from the start of the backward pass, the outer callback runs before callbacks queued later
            # (DDP's all-reduce); re-queuing from there puts the check after all of them
            engine.queue_callback(lambda: engine.queue_callback(check))

        return hook

    @classmethod
    def example(cls) -> Example:
        from .conv_vae import ConvVAE

        x = torch.bernoulli(torch.full((2, 1, 8, 8), 0.5))

        def build():
            objective = cls(ELBO(), max_grad_norm=1e6)
            objective.model = ConvVAE(image_shape=(1, 8, 8), latent_dim=3, hidden_channels=4, hidden_units=8)
            return objective

        return Example(build=build, inputs=(x,), output_shape=(), call=lambda m, i: m(m.model, i[0], step=0)[0])
