"""VDVAE (Child, ICLR 2021) as vaezoo components.

Registered here: the bottleneck residual block, the bottleneck Gaussian posterior and prior, the z-injection
combiner, and the ``vdvae-mnist`` / ``test-vdvae`` presets. The model is the generic ``HierarchicalVAE`` (registered
by the NVAE plugin); gradient skipping is the baselines' ``GradientSkipping`` objective wrapper.
"""

from __future__ import annotations

from vaezoo import hookimpl

from .blocks import BottleneckBlock, BottleneckNormalPosterior, BottleneckNormalPrior, ZInjectionCombiner
from .presets import PRESETS, preset_factory, residual_depth, vdvae_spec

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
    register("cell", ZInjectionCombiner)
    register("posterior", BottleneckNormalPosterior)
    register("prior", BottleneckNormalPrior)


@hookimpl
def register_presets(register):
    for name, (_, description) in PRESETS.items():
        register(name, preset_factory(name), description=description)
