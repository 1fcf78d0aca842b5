"""Baseline VAEs as vaezoo components (registered through the ``vaezoo`` entry-point group)."""

from __future__ import annotations

from vaezoo import hookimpl

from .components import BernoulliLikelihood, GaussianPosterior, StandardNormalPrior
from .conv_vae import ConvVAE
from .objectives import ELBO, IWAE, GradientSkipping

__all__ = [
    "ELBO",
    "IWAE",
    "BernoulliLikelihood",
    "ConvVAE",
    "GaussianPosterior",
    "GradientSkipping",
    "StandardNormalPrior",
]


@hookimpl
def register_components(register):
    register("model", ConvVAE)
    register("prior", StandardNormalPrior)
    register("posterior", GaussianPosterior)
    register("likelihood", BernoulliLikelihood)
    register("objective", ELBO)
    register("objective", IWAE)
    register("objective", GradientSkipping)


def _conv_vae_spec(**init_args):
    parts = {
        "prior": {"class_path": "StandardNormalPrior"},
        "posterior": {"class_path": "GaussianPosterior"},
        "likelihood": {"class_path": "BernoulliLikelihood"},
    }
    return {"class_path": "ConvVAE", "init_args": {**parts, **init_args}}


@hookimpl
def register_presets(register):
    register(
        "vae-mnist",
        lambda **o: _conv_vae_spec(
            **{"image_shape": [1, 28, 28], "latent_dim": 32, "hidden_channels": 32, "hidden_units": 256, **o}
        ),
        description="convolutional VAE for 28x28 binarised digits (Bernoulli likelihood, 32 latents)",
    )
    register(
        "test-vae",
        lambda **o: _conv_vae_spec(
            **{"image_shape": [1, 8, 8], "latent_dim": 3, "hidden_channels": 4, "hidden_units": 8, **o}
        ),
        description="a tiny ConvVAE for tests",
    )
