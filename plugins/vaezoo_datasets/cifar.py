"""CIFAR-10 from the "python version" batch files (torchvision's ``root/cifar-10-batches-py``).

The batches are read directly rather than through ``torchvision.datasets.CIFAR10``: that class
verifies the md5 of every file, and it unpickles them with the unrestricted ``pickle.load``; here a
numpy-only unpickler reads them (:mod:`vaezoo.data.pickles`). NVAE trains with random horizontal
flips, done per batch in :meth:`CIFAR10.train_transform` with the trainer's seeded generator.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from vaezoo.data.arrays import UInt8Images
from vaezoo.data.download import Archive
from vaezoo.data.download import download as download_archives
from vaezoo.data.pickles import load_rows
from vaezoo.data.transforms import random_horizontal_flip
from vaezoo.errors import ConfigError
from vaezoo.interfaces import DataModule, Example

from .formats import TEST_BATCH, TRAIN_BATCHES

_HINT = (
    "Expected the CIFAR-10 python version (data_batch_1..5 and test_batch) in ROOT/cifar-10-batches-py, the layout of "
    "torchvision.datasets.CIFAR10(ROOT, download=True) or `vaezoo data download CIFAR10 ROOT`; the archive is "
    "cifar-10-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html"
)


def find_cifar_folder(root: Path) -> Path:
    for folder in (root / "cifar-10-batches-py", root):
        if all((folder / name).is_file() for name in (*TRAIN_BATCHES, TEST_BATCH)):
            return folder
    raise ConfigError(f"CIFAR-10 not found under {root}. {_HINT}")


def load_cifar_batches(paths: list[Path]) -> tuple[Tensor, Tensor]:
    """uint8 ``[N, 3, 32, 32]`` images and labels; each row of 'data' is the R, G and B planes, row-major."""
    rows = [load_rows(path, 3 * 32 * 32) for path in paths]
    data = np.concatenate([r[0] for r in rows]).reshape(-1, 3, 32, 32)
    labels = np.concatenate([r[1] for r in rows])
    return torch.from_numpy(data), torch.from_numpy(labels)


class CIFAR10(DataModule):
    """CIFAR-10 (50,000 train / 10,000 test, 32x32 RGB) from the python batch files; flips for training."""

    source_hint = _HINT
    # the tarball (its md5 as torchvision checks it) unpacks to cifar-10-batches-py; it is deleted afterwards
    archives = (
        Archive(
            "cifar-10-python.tar.gz",
            "c58f30108f718f92721af3b95e74349a",
            ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",),
        ),
    )
    archive_folder = "cifar-10-batches-py"

    def __init__(self, root: str, batch_size: int = 32, flip: bool = True, download: bool = False) -> None:
        """
        Args:
            root: the folder holding cifar-10-batches-py (torchvision's layout) or the batch files themselves.
            flip: random horizontal flips of training batches.
            download: fetch cifar-10-python.tar.gz and unpack it into ROOT/cifar-10-batches-py first when the batches
                are not there (md5-checked; from $VAEZOO_DATA_MIRROR when set), as `vaezoo data download CIFAR10 ROOT`
                does.
        """
        if batch_size < 1:
            raise ConfigError(f"data.batch_size must be positive, got {batch_size}")
        self.root = Path(root).expanduser()
        if download:
            download_archives(type(self), self.root)
        self.folder = find_cifar_folder(self.root)
        self.batch_size = batch_size
        self.flip = flip
        self.image_shape = (3, 32, 32)
        self._cache: dict[str, Dataset] = {}

    def train_dataset(self) -> Dataset:
        if "train" not in self._cache:
            self._cache["train"] = UInt8Images(*load_cifar_batches([self.folder / n for n in TRAIN_BATCHES]))
        return self._cache["train"]

    def test_dataset(self) -> Dataset:
        if "test" not in self._cache:
            self._cache["test"] = UInt8Images(*load_cifar_batches([self.folder / TEST_BATCH]))
        return self._cache["test"]

    def train_transform(self, batch: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Random horizontal flips, drawn from the trainer's generator."""
        return random_horizontal_flip(batch, generator) if self.flip else batch

    def describe(self) -> str:
        flips = ", random horizontal flips for training" if self.flip else ""
        return f"CIFAR-10 ({len(self.train_dataset())} train / {len(self.test_dataset())} test{flips}; {self.folder})"

    @classmethod
    def example(cls) -> Example:
        from .testing import temporary_root, write_cifar10

        return Example(
            build=lambda: cls(root=str(write_cifar10(temporary_root("cifar10"), per_batch=2, num_test=3)), batch_size=4)
        )
