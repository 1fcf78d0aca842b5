"""Baseline VAEs (Kingma & Welling 2014; beta-VAE, Higgins et al. 2017; IWAE, Burda et al. 2016) as vaezoo components.

Registered here: the convolutional VAE with its Gaussian posterior, the IWAE objective and the ``vae-mnist`` /
``test-vae`` presets. The prior, the likelihood and the ELBO are the core's (:mod:`vaezoo.components`).
"""

from __future__ import annotations

from vaezoo import hookimpl

from .components import GaussianPosterior
from .conv_vae import ConvVAE
from .objectives import IWAE

__all__ = ["IWAE", "ConvVAE", "GaussianPosterior"]


@hookimpl
def register_components(register):
    register("model", ConvVAE)
    register("posterior", GaussianPosterior)
    register("objective", IWAE)


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
