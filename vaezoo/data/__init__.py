"""The data machinery that data-set plugins share: image pipelines and transforms, LMDB reading and preparation,
folder splits, array-backed datasets and the download of public archives. The data modules themselves are defined and registered by the
``datasets`` plugin (:mod:`vaezoo_datasets`); see docs/datasets.md.
"""

from .transforms import dynamic_binarize, random_horizontal_flip

__all__ = ["dynamic_binarize", "random_horizontal_flip"]
