"""Ladder VAE (Sonderby et al., NeurIPS 2016) as vaezoo components.

Registered here: the precision-weighted posterior, the pass-through encoder combiner and the latent-only decoder
combiner, and the ``lvae-mnist`` / ``test-lvae`` presets. The model is the core's ``HierarchicalVAE`` trained with the
core's ``ELBO`` and its KL warm-up.
"""

from __future__ import annotations

from vaezoo import hookimpl
from vaezoo.models import register_preset_table

from .components import LatentOnlyCombiner, PassThroughCombiner, PrecisionWeightedPosterior, precision_weighted
from .presets import PRESETS, ladder_vae_spec

__all__ = [
    "LatentOnlyCombiner",
    "PassThroughCombiner",
    "PrecisionWeightedPosterior",
    "ladder_vae_spec",
    "precision_weighted",
]


@hookimpl
def register_components(register):
    register("posterior", PrecisionWeightedPosterior)
    register("combiner", PassThroughCombiner)
    register("combiner", LatentOnlyCombiner)


@hookimpl
def register_presets(register):
    register_preset_table(register, PRESETS, ladder_vae_spec)
