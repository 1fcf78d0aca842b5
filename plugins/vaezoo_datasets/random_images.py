"""Random images of a given shape and bit depth: a data module for speed and memory benchmarks
(and for trying a recipe without its data set). Not for measuring likelihoods."""

from __future__ import annotations

import torch
from torch.utils.data import Dataset, TensorDataset

from vaezoo.errors import ConfigError
from vaezoo.interfaces import DataModule, Example


class RandomImages(DataModule):
    """``num_examples`` uniformly random images (fixed seed), quantised to ``num_bits`` levels."""

    source_hint = "It draws its images from a seeded generator: there is nothing to download"

    def __init__(
        self, image_shape: tuple[int, int, int] = (3, 32, 32), num_examples: int = 512, batch_size: int = 32,
        num_bits: int = 8, binary: bool = False, seed: int = 0,
    ) -> None:  # fmt: skip
        if batch_size < 1 or num_examples < 1:
            raise ConfigError("data: batch_size and num_examples must be positive")
        self.image_shape = tuple(int(v) for v in image_shape)
        self.num_examples, self.batch_size, self.num_bits, self.binary, self.seed = (
            num_examples,
            batch_size,
            num_bits,
            binary,
            seed,
        )

    def _images(self, offset: int) -> Dataset:
        generator = torch.Generator().manual_seed(self.seed + offset)
        if self.binary:
            x = torch.randint(0, 2, (self.num_examples, *self.image_shape), generator=generator).float()
        else:
            levels = 2**self.num_bits - 1
            x = (
                torch.randint(0, levels + 1, (self.num_examples, *self.image_shape), generator=generator).float()
                / levels
            )
        return TensorDataset(x, torch.full((self.num_examples,), -1))

    def train_dataset(self) -> Dataset:
        return self._images(0)

    def test_dataset(self) -> Dataset:
        return self._images(1)

    def describe(self) -> str:
        return f"random {'binary' if self.binary else f'{self.num_bits}-bit'} images {list(self.image_shape)} (benchmark data)"

    @classmethod
    def example(cls) -> Example:
        return Example(build=lambda: cls(image_shape=(3, 8, 8), num_examples=16, batch_size=4))
