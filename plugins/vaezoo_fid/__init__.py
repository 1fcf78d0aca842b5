"""Sample-quality feature extractors (FID: Heusel et al., NeurIPS 2017) as vaezoo components.

Registered here (kind ``feature_extractor``): ``InceptionV3``, the Inception-v3 port of the 2015-12-05 TensorFlow graph
that FID is defined with (through torch-fidelity, the ``fid`` extra; its weights are a user-supplied file), and
``DigitClassifier``, a small CNN trained on the bundled digits whose weights ship here, for CPU-scale figures that are
not comparable with Inception FID. The statistics, the distances and the reference cache are the core's
(:mod:`vaezoo.evaluation.sample_quality`); ``vaezoo evaluate --metrics fid,kid,fd_digits`` uses them.
"""

from __future__ import annotations

from vaezoo import hookimpl

from .digits import DigitClassifier
from .inception import InceptionV3

__all__ = ["DigitClassifier", "InceptionV3"]


@hookimpl
def register_components(register):
    register("feature_extractor", DigitClassifier)
    register("feature_extractor", InceptionV3)
