"""Generic training objectives: the (beta-)ELBO with linear KL warm-up, and gradient skipping (a wrapper that drops
updates whose gradient norm explodes, as VDVAE does)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ..interfaces import Example, GenerativeModel, Objective
from ..models.hierarchical import HierarchicalVAE


def _example_model() -> GenerativeModel:
    """A tiny hierarchical VAE for the objectives' contract examples (the assembler's own example)."""
    return HierarchicalVAE.example().build()


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
        x = torch.bernoulli(torch.full((2, 1, 8, 8), 0.5))

        def build():
            objective = cls(kl_warmup_steps=10)
            objective.model = _example_model()
            return objective

        return Example(build=build, inputs=(x,), output_shape=(), call=lambda m, i: m(m.model, i[0], step=5)[0])


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
        x = torch.bernoulli(torch.full((2, 1, 8, 8), 0.5))

        def build():
            objective = cls(ELBO(), max_grad_norm=1e6)
            objective.model = _example_model()
            return objective

        return Example(build=build, inputs=(x,), output_shape=(), call=lambda m, i: m(m.model, i[0], step=0)[0])
