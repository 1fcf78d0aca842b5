"""Data modules and helpers shared by data-set plugins."""

from .bundled_mnist import BundledMNIST, dynamic_binarize

__all__ = ["BundledMNIST", "dynamic_binarize"]
