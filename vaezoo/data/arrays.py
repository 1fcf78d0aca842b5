"""Data sets held in memory as uint8 arrays (MNIST, CIFAR-10, ImageNet 32 batch files)."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.utils.data import Dataset


class UInt8Images(Dataset):
    """``(images[i] / 255 as float [C, H, W], labels[i])`` from a uint8 ``[N, C, H, W]`` tensor.

    Kept as uint8 (a quarter of the memory of floats) and converted per item, in the worker that asks.
    """

    def __init__(self, images: Tensor, labels: Tensor) -> None:
        if images.dtype != torch.uint8 or images.ndim != 4 or len(labels) != len(images):
            raise ValueError(
                f"expected uint8 [N, C, H, W] images and N labels, got {images.dtype} {list(images.shape)}, {len(labels)}"
            )
        self.images, self.labels = images, labels.long()

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        return self.images[index].float().div_(255.0), int(self.labels[index])
