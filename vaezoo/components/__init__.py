"""The generic components, registered by the core's own default plugin (``core``).

Everything here belongs to no single paper: the hierarchical assembler, the pre-activation residual cell, the
weight-normalised conv cell of stems and heads, the encoder and decoder combiners, Normal priors and posteriors,
the standard Normal joint prior, the Bernoulli likelihood, the ELBO and gradient skipping, and the TensorBoard logger
(:mod:`vaezoo.loggers`). Paper plugins assemble their models from these and register only what their paper adds. This
module is loaded as a plugin like any other (see :data:`vaezoo.plugins.DEFAULT_PLUGINS`), so
``VAEZOO_BLOCK_PLUGINS=core`` blocks it too.
"""

from __future__ import annotations

from ..hookspecs import hookimpl
from ..loggers import TensorBoard
from ..models.hierarchical import HierarchicalVAE
from .cells import DecoderCombiner, EncoderCombiner, ResidualCell, ResidualCellBase, WeightNormConvCell
from .latents import NormalPosterior, NormalPrior, StandardNormalJointPrior, StandardNormalPrior
from .likelihoods import BernoulliLikelihood
from .objectives import ELBO, GradientSkipping

__all__ = [
    "ELBO",
    "BernoulliLikelihood",
    "DecoderCombiner",
    "EncoderCombiner",
    "GradientSkipping",
    "HierarchicalVAE",
    "NormalPosterior",
    "NormalPrior",
    "ResidualCell",
    "ResidualCellBase",
    "StandardNormalJointPrior",
    "StandardNormalPrior",
    "TensorBoard",
    "WeightNormConvCell",
]

#: kind -> classes registered by the core
COMPONENTS: dict[str, list[type]] = {
    "model": [HierarchicalVAE],
    "cell": [ResidualCell, WeightNormConvCell],
    "combiner": [EncoderCombiner, DecoderCombiner],
    "prior": [NormalPrior, StandardNormalPrior],
    "joint_prior": [StandardNormalJointPrior],
    "posterior": [NormalPosterior],
    "likelihood": [BernoulliLikelihood],
    "objective": [ELBO, GradientSkipping],
    "logger": [TensorBoard],
}

#: where each of these classes was defined before it moved into the core: saved ``config.json`` files and
#: recipes that spell a full class path keep resolving through these registry aliases
PREVIOUS_CLASS_PATHS: dict[str, list[str]] = {
    "ResidualCell": ["vaezoo_nvae.cells.ResidualCell"],
    "WeightNormConvCell": ["vaezoo_nvae.cells.WeightNormConvCell"],
    "EncoderCombiner": ["vaezoo_nvae.cells.EncoderCombiner"],
    "DecoderCombiner": ["vaezoo_nvae.cells.DecoderCombiner"],
    "NormalPrior": ["vaezoo_nvae.distributions.NormalPrior"],
    "NormalPosterior": ["vaezoo_nvae.distributions.NormalPosterior"],
    "StandardNormalPrior": ["vaezoo_baselines.components.StandardNormalPrior"],
    "BernoulliLikelihood": [
        "vaezoo.likelihoods.BernoulliLikelihood",
        "vaezoo_baselines.components.BernoulliLikelihood",
    ],
    "ELBO": ["vaezoo_baselines.objectives.ELBO"],
    "GradientSkipping": ["vaezoo_baselines.objectives.GradientSkipping"],
}


@hookimpl
def register_components(register):
    for kind, classes in COMPONENTS.items():
        for cls in classes:
            register(kind, cls, aliases=PREVIOUS_CLASS_PATHS.get(cls.__name__, ()))
