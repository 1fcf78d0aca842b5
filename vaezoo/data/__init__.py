"""Data modules and helpers shared by data-set plugins.

The paper's data sets (MNIST, CIFAR-10, CelebA 64, ImageNet 32, CelebA-HQ 256, FFHQ 256) and a generic
image folder read their usual on-disk files or an LMDB prepared by ``vaezoo data prepare``; nothing
downloads. See docs/datasets.md.
"""

from .bundled_mnist import BundledMNIST, dynamic_binarize
from .celeba import CelebA64, CelebAHQ256
from .cifar import CIFAR10
from .ffhq import FFHQ256
from .image_folder import ImageFolder
from .imagenet32 import ImageNet32
from .mnist import MNIST
from .transforms import random_horizontal_flip

__all__ = [
    "BundledMNIST",
    "CIFAR10",
    "CelebA64",
    "CelebAHQ256",
    "FFHQ256",
    "ImageFolder",
    "ImageNet32",
    "MNIST",
    "dynamic_binarize",
    "random_horizontal_flip",
]
