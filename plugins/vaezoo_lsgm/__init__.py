"""LSGM (Vahdat, Kreis & Kautz, NeurIPS 2021): a score-based prior over a hierarchical VAE's top-scale latents.

Registered here, what the paper adds: the score prior (a :class:`~vaezoo.interfaces.JointPrior` over the top
scale's standardised noise, with the linear and geometric VP SDEs, the mixed score, denoising score matching with
likelihood weighting and importance sampling of t, the probability-flow ODE for log-likelihoods and samples, and an
Euler-Maruyama sampler), a small time-conditioned score network for latents, and the objective of the two training
stages after a trained VAE (the prior on the frozen VAE, then joint training). It is written from the paper; the
official NVlabs/LSGM code is under a non-commercial licence and none of it is used here.

The models are the core's ``HierarchicalVAE`` with ``joint_prior: {class_path: ScorePrior, ...}``; the plugin
depends on the core only.
"""

from __future__ import annotations

from vaezoo import hookimpl

from .networks import LatentScoreNetwork
from .objective import ScorePriorObjective
from .prior import ScorePrior
from .sdes import GeometricVPSDE, LinearVPSDE

__all__ = ["GeometricVPSDE", "LatentScoreNetwork", "LinearVPSDE", "ScorePrior", "ScorePriorObjective"]

_COMPONENTS = {
    "joint_prior": [ScorePrior],
    "denoiser": [LatentScoreNetwork],
    "objective": [ScorePriorObjective],
}


@hookimpl
def register_components(register):
    for kind, classes in _COMPONENTS.items():
        for cls in classes:
            register(kind, cls)
