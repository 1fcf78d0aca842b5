"""LSGM's two training stages after a trained VAE, as one objective.

- ``stage="prior"``: the VAE is frozen (run in eval mode under no_grad, so its BatchNorm statistics stay as they
  are) and only the score prior learns, from its own loss on the top scale's standardised posterior latents.
- ``stage="joint"``: the VAE's objective (``vae_objective``, e.g. the NVAE objective) on the model whose top-scale
  cross-entropy is the denoising estimate (gradients reach the encoder and decoder, not the score network), plus
  the score prior's own loss on the same latents, detached. The paper trains the two parts with separate
  optimisers; give the trainer ``param_groups`` for ``joint_prior.*`` (Adam, its own learning rate, an EMA).

The VAE objective's regularisers see the VAE's modules only (the model's ``regularized_modules`` leaves the joint
prior out); the score network has its own, ``prior_regularizers`` weighted by ``prior_regularization_weight``
(default off, as the paper's MNIST setting), added in both stages.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor

from vaezoo.errors import ConfigError
from vaezoo.interfaces import Example, GenerativeModel, Objective, Regularizer
from vaezoo.nn import evaluation_mode


class ScorePriorObjective(Objective):
    """Train a joint (score) prior on a frozen VAE (``stage="prior"``) or jointly with it (``stage="joint"``)."""

    def __init__(
        self,
        stage: Literal["prior", "joint"] = "prior",
        vae_objective: Objective | None = None,
        prior_loss_weight: float = 1.0,
        prior_regularizers: list[Regularizer] | None = None,
        prior_regularization_weight: float = 0.0,
    ) -> None:
        super().__init__()
        if stage == "joint" and vae_objective is None:
            raise ConfigError("ScorePriorObjective: stage 'joint' needs a vae_objective (e.g. NVAEObjective)")
        if prior_loss_weight <= 0:
            raise ConfigError(f"ScorePriorObjective: prior_loss_weight must be positive, got {prior_loss_weight}")
        if prior_regularization_weight < 0:
            raise ConfigError(
                f"ScorePriorObjective: prior_regularization_weight must be 0 or more, got {prior_regularization_weight}"
            )
        if prior_regularization_weight > 0 and not prior_regularizers:
            raise ConfigError("ScorePriorObjective: prior_regularization_weight > 0 needs prior_regularizers")
        self.stage, self.vae_objective, self.prior_loss_weight = stage, vae_objective, prior_loss_weight
        self.prior_regularizers = torch.nn.ModuleList(prior_regularizers or [])
        self.prior_regularization_weight = prior_regularization_weight

    def prior_regularization(self, prior: torch.nn.Module, metrics: dict[str, Any]) -> Tensor | None:
        """``prior_regularization_weight`` times the sum of ``prior_regularizers`` on the score prior alone."""
        if self.prior_regularization_weight == 0 or not len(self.prior_regularizers):
            return None
        total = None
        for regularizer in self.prior_regularizers:
            value = regularizer(prior)
            metrics[f"prior_reg/{type(regularizer).__name__}"] = value.detach()
            total = value if total is None else total + value
        return self.prior_regularization_weight * total

    def set_total_steps(self, total_steps: int) -> None:
        super().set_total_steps(total_steps)
        if self.vae_objective is not None:
            self.vae_objective.set_total_steps(total_steps)

    def forward(
        self, model: GenerativeModel, x: Tensor, step: int, noise: list[Tensor] | None = None
    ) -> tuple[Tensor, dict[str, Any]]:
        prior = getattr(model, "joint_prior", None)
        if prior is None:
            raise ConfigError("ScorePriorObjective needs a model with a joint_prior (HierarchicalVAE joint_prior=...)")
        if self.stage == "prior":
            # the VAE frozen (eval mode: BatchNorm uses and keeps its running statistics), the prior training; the
            # modes are restored afterwards
            with evaluation_mode(model, prior):
                with torch.no_grad(), model.own_priors():
                    out = model(x, noise=noise)
                prior_loss, metrics = prior.loss(torch.cat(out.extras["prior_noise"], dim=1))
            metrics["nelbo_own_prior"] = out.nelbo.mean()
            regularization = self.prior_regularization(prior, metrics)
            return prior_loss if regularization is None else prior_loss + regularization, metrics
        captured: list = []
        hook = model.register_forward_hook(lambda module, args, output: captured.append(output))
        try:
            vae_loss, metrics = self.vae_objective(model, x, step, noise)
        finally:
            hook.remove()
        prior_loss, prior_metrics = prior.loss(torch.cat(captured[-1].extras["prior_noise"], dim=1).detach())
        metrics.update(prior_metrics, vae_loss=vae_loss.detach())
        loss = vae_loss + self.prior_loss_weight * prior_loss
        regularization = self.prior_regularization(prior, metrics)
        return loss if regularization is None else loss + regularization, metrics

    @classmethod
    def example(cls) -> Example:
        from vaezoo.models.hierarchical import HierarchicalVAE

        x = torch.bernoulli(torch.full((2, 1, 8, 8), 0.5))

        def build() -> ScorePriorObjective:
            from vaezoo.components.objectives import ELBO

            from .networks import LatentScoreNetwork
            from .prior import ScorePrior

            objective = cls(stage="joint", vae_objective=ELBO())
            # the assembler's own example, with a score prior over its top scale
            objective.model = HierarchicalVAE(
                **HierarchicalVAE.example_arguments(),
                joint_prior=lambda c: ScorePrior(c, network=lambda k: LatentScoreNetwork(k, 8, 1, 8)),
            )
            return objective

        return Example(
            build=build,
            inputs=(x,),
            output_shape=(),
            call=lambda m, i: m(m.model, i[0], step=1)[0],
            surrogate_gradient="the score prior's surrogate (see ScorePrior) inside the objective",
        )
