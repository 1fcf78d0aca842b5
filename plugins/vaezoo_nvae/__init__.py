"""NVAE (Vahdat & Kautz, NeurIPS 2020) as vaezoo components.

Registered here, what the paper adds: the depthwise inverted-residual decoder cell, the fixed top prior
N(0, 1.01^2) and the residual Normal posterior, the paired autoregressive flow, the discretised logistic mixture
and soft-clamped Normal likelihoods, the spectral and BatchNorm regularisers, the NVAE objective (KL warm-up and
balancing), the presets (``nvae-*``, ``test-nvae``), the pretrained table and the ``nvlabs`` converter for official
checkpoints. The models are the core's ``HierarchicalVAE`` assembled with the core's generic cells, Normal
priors/posteriors and Bernoulli likelihood (:mod:`vaezoo.components`).
"""

from __future__ import annotations

from vaezoo import hookimpl

from . import pretrained
from .cells import DepthwiseResidualCell
from .distributions import FixedNormalPrior, ResidualNormalPosterior
from .flows import PairedAutoregressiveFlow
from .likelihoods import DiscretizedLogisticMixture, SoftClampedNormalLikelihood
from .objective import NVAEObjective
from .regularizers import BatchNormScaleRegularizer, SpectralRegularizer

__all__ = [
    "BatchNormScaleRegularizer",
    "DepthwiseResidualCell",
    "DiscretizedLogisticMixture",
    "FixedNormalPrior",
    "NVAEObjective",
    "PairedAutoregressiveFlow",
    "ResidualNormalPosterior",
    "SoftClampedNormalLikelihood",
    "SpectralRegularizer",
]

_COMPONENTS = {
    "cell": [DepthwiseResidualCell],
    "prior": [FixedNormalPrior],
    "posterior": [ResidualNormalPosterior],
    "flow": [PairedAutoregressiveFlow],
    "likelihood": [DiscretizedLogisticMixture, SoftClampedNormalLikelihood],
    "regularizer": [SpectralRegularizer, BatchNormScaleRegularizer],
    "objective": [NVAEObjective],
}


def _convert_nvlabs(checkpoint: str, out_dir: str) -> str:
    """Import an official NVlabs/NVAE ``checkpoint.pt`` into a vaezoo model folder."""
    from .convert import convert_nvlabs_checkpoint

    return str(convert_nvlabs_checkpoint(checkpoint, out_dir))


def _nvlabs_checkpoint_spec(checkpoint: str) -> dict:
    """The vaezoo spec an official checkpoint's training arguments describe (checked before converting)."""
    from .convert import official_checkpoint_spec

    return official_checkpoint_spec(checkpoint)


def _nvlabs_argument_name(path: str) -> str | None:
    """The official ``train.py`` argument behind a spec path (names a mismatch as the checkpoint's user knows it)."""
    from .convert import official_argument_name

    return official_argument_name(path)


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
        checkpoint_spec=_nvlabs_checkpoint_spec,
        argument_name=_nvlabs_argument_name,
    )


#: the published weights (``vaezoo.load("nvae-...")``), see :mod:`vaezoo_nvae.pretrained`
register_pretrained = hookimpl(pretrained.register_pretrained)


@hookimpl
def register_presets(register):
    from .presets import preset_factories

    for name, (factory, description) in preset_factories().items():
        register(name, factory, description=description)
