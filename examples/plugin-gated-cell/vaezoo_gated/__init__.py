"""vaezoo-gated: a gated residual cell, a Normal prior whose scale is learned, and two presets that use them.

An example of a third-party vaezoo plugin (see docs/plugin-tutorial.md of vaezoo). vaezoo finds it through the
``vaezoo`` entry point in pyproject.toml and calls the two hooks below.
"""

from vaezoo import hookimpl

from .components import GatedResidualCell, LearnedScalePrior
from .presets import gated_spec

__all__ = ["GatedResidualCell", "LearnedScalePrior", "gated_spec"]


@hookimpl
def register_components(register):
    register("cell", GatedResidualCell)
    register("prior", LearnedScalePrior)


@hookimpl
def register_presets(register):
    register("gated-mnist", lambda **o: gated_spec(channels=16, **o), description="gated cells on padded 32x32 digits")
    register("gated-test", lambda **o: gated_spec(channels=4, **o), description="a tiny gated model for tests")
