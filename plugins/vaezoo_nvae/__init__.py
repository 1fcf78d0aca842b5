"""NVAE (Vahdat & Kautz, NeurIPS 2020) as vaezoo components.

Registered here: the cells, the soft-clamped Normal priors and posteriors, the paired autoregressive flow, the
likelihoods, the spectral and BatchNorm regularisers, the NVAE objective, the generic hierarchical assembler
(``HierarchicalVAE``, from :mod:`vaezoo.models`), the presets (``nvae-*``, ``test-nvae``) and the ``nvlabs``
converter for official checkpoints.
"""

from __future__ import annotations

from vaezoo import hookimpl
from vaezoo.models import HierarchicalVAE

from . import pretrained
from .cells import DecoderCombiner, DepthwiseResidualCell, EncoderCombiner, ResidualCell, WeightNormConvCell
from .distributions import FixedNormalPrior, NormalPosterior, NormalPrior, ResidualNormalPosterior, SoftClampedNormal
from .flows import PairedAutoregressiveFlow
from .likelihoods import DiscretizedLogisticMixture, SoftClampedNormalLikelihood
from .objective import NVAEObjective
from .regularizers import BatchNormScaleRegularizer, SpectralRegularizer

__all__ = [
    "BatchNormScaleRegularizer",
    "DecoderCombiner",
    "DepthwiseResidualCell",
    "DiscretizedLogisticMixture",
    "EncoderCombiner",
    "FixedNormalPrior",
    "HierarchicalVAE",
    "NVAEObjective",
    "NormalPosterior",
    "NormalPrior",
    "PairedAutoregressiveFlow",
    "ResidualCell",
    "ResidualNormalPosterior",
    "SoftClampedNormal",
    "SoftClampedNormalLikelihood",
    "SpectralRegularizer",
    "WeightNormConvCell",
]

_COMPONENTS = {
    "cell": [ResidualCell, DepthwiseResidualCell, WeightNormConvCell, EncoderCombiner, DecoderCombiner],
    "prior": [FixedNormalPrior, NormalPrior],
    "posterior": [ResidualNormalPosterior, NormalPosterior],
    "flow": [PairedAutoregressiveFlow],
    "likelihood": [DiscretizedLogisticMixture, SoftClampedNormalLikelihood],
    "regularizer": [SpectralRegularizer, BatchNormScaleRegularizer],
    "objective": [NVAEObjective],
    "model": [HierarchicalVAE],
}


def _convert_nvlabs(checkpoint: str, out_dir: str) -> str:
    """Import an official NVlabs/NVAE ``checkpoint.pt`` into a vaezoo model folder."""
    from .convert import convert_nvlabs_checkpoint

    return str(convert_nvlabs_checkpoint(checkpoint, out_dir))


@hookimpl
def register_components(register):
    for kind, classes in _COMPONENTS.items():
        for cls in classes:
            register(kind, cls)
    register(
        "converter",
        _convert_nvlabs,
        name="nvlabs",
        description="official NVlabs/NVAE train.py checkpoints (checkpoint.pt) -> vaezoo model folder",
    )


#: the published weights (``vaezoo.load("nvae-...")``), see :mod:`vaezoo_nvae.pretrained`
register_pretrained = hookimpl(pretrained.register_pretrained)


@hookimpl
def register_presets(register):
    from .presets import preset_factories

    for name, (factory, description) in preset_factories().items():
        register(name, factory, description=description)
