"""IAF-VAE (Kingma et al., NeurIPS 2016) as vaezoo components.

Registered here: the context-conditioned inverse autoregressive flow (``ContextualIAF``), the weight-normalised ELU
residual cells of the paper's ResNet VAE (also the "WN + ELU" side of NVAE's normalisation ablation), and the
``iaf-vae-mnist`` / ``test-iaf-vae`` presets. The model itself is the core's ``HierarchicalVAE`` with the core's
Normal posterior and priors (:mod:`vaezoo.components`).
"""

from __future__ import annotations

from vaezoo import hookimpl
from vaezoo.models import register_preset_table

from .cells import WeightNormELUDepthwiseCell, WeightNormELUResidualCell
from .flows import ContextualIAF, ContextualIAFStep
from .presets import PRESETS, iaf_vae_spec

__all__ = [
    "ContextualIAF",
    "ContextualIAFStep",
    "WeightNormELUDepthwiseCell",
    "WeightNormELUResidualCell",
    "iaf_vae_spec",
]


@hookimpl
def register_components(register):
    register("flow", ContextualIAF)
    register("cell", WeightNormELUResidualCell)
    register("cell", WeightNormELUDepthwiseCell)


@hookimpl
def register_presets(register):
    register_preset_table(register, PRESETS, iaf_vae_spec)
