"""VDVAE (Child, ICLR 2021) as vaezoo components.

Registered here: the bottleneck residual block, the bottleneck Gaussian posterior and prior, the z-injection
combiner, and the ``vdvae-mnist`` / ``test-vdvae`` presets. The model is the core's ``HierarchicalVAE``; gradient
skipping is the core's ``GradientSkipping`` objective wrapper.
"""

from __future__ import annotations

from vaezoo import hookimpl
from vaezoo.models import register_preset_table

from .blocks import BottleneckBlock, BottleneckNormalPosterior, BottleneckNormalPrior, ZInjectionCombiner
from .presets import PRESETS, residual_depth, vdvae_spec

__all__ = [
    "BottleneckBlock",
    "BottleneckNormalPosterior",
    "BottleneckNormalPrior",
    "ZInjectionCombiner",
    "residual_depth",
    "vdvae_spec",
]


@hookimpl
def register_components(register):
    register("cell", BottleneckBlock)
    register("combiner", ZInjectionCombiner)
    register("posterior", BottleneckNormalPosterior)
    register("prior", BottleneckNormalPrior)


@hookimpl
def register_presets(register):
    register_preset_table(register, PRESETS, vdvae_spec)
