"""MNIST from torchvision's on-disk files, as NVAE uses it.

The files are the four IDX files of the original distribution, in the folder torchvision downloads
them to (``root/MNIST/raw``), uncompressed or ``.gz``. NVAE pads the 28x28 digits by 2 to 32x32 and
binarises them with a fresh Bernoulli draw every time; here the training draw happens per batch in
:meth:`MNIST.train_transform` with the trainer's seeded generator (so resumed runs see the same
binary digits), and the test set is binarised once with a fixed seed, so every evaluation scores the
same binary images.
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from vaezoo.data.arrays import UInt8Images
from vaezoo.data.download import Archive
from vaezoo.data.download import download as download_archives
from vaezoo.data.transforms import dynamic_binarize
from vaezoo.errors import ConfigError
from vaezoo.interfaces import DataModule, Example

from .formats import FILES

_HINT = (
    "Expected the four MNIST IDX files (train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, "
    "t10k-labels-idx1-ubyte, each optionally .gz) in ROOT/MNIST/raw, the layout of "
    "torchvision.datasets.MNIST(ROOT, download=True) or `vaezoo data download MNIST ROOT`; the files are at "
    "https://yann.lecun.com/exdb/mnist/"
)

#: torchvision's addresses of the four files (its MNIST.mirrors), with their md5
_MIRRORS = ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/")
_ARCHIVES = tuple(
    Archive(f"{FILES[key]}.gz", md5, tuple(f"{mirror}{FILES[key]}.gz" for mirror in _MIRRORS), folder="MNIST/raw")
    for key, md5 in (
        ("train_images", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
        ("train_labels", "d53e105ee54ea40749a09fcbcd1e9432"),
        ("test_images", "9fb629c4189551a2d022fa330f9573f3"),
        ("test_labels", "ec29112dd5afa0611ce80d1b7f02629c"),
    )
)


def read_idx(path: Path) -> np.ndarray:
    """A uint8 IDX file (the MNIST format: big-endian header, then the values), optionally gzipped."""
    try:
        data = path.read_bytes()
        if path.suffix == ".gz":
            data = gzip.decompress(data)
    except (OSError, EOFError) as exc:
        raise ConfigError(f"{path}: cannot read ({exc})") from exc
    if len(data) < 4 or data[:2] != b"\x00\x00" or data[2] != 0x08 or not 1 <= data[3] <= 4:
        raise ConfigError(f"{path}: not a uint8 IDX file (bad magic number {data[:4].hex()})")
    ndim = data[3]
    dims = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    values = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if values.size != int(np.prod(dims)):
        raise ConfigError(
            f"{path}: the header promises {list(dims)} values ({int(np.prod(dims))}), the file holds {values.size}"
        )
    return values.reshape(dims)


def find_mnist_files(root: Path) -> dict[str, Path]:
    """The four IDX files under ``root`` (torchvision's ``root/MNIST/raw``, or ``root/raw``, or ``root``)."""
    for folder in (root / "MNIST" / "raw", root / "raw", root):
        found = {}
        for key, name in FILES.items():
            path = next((p for p in (folder / name, folder / f"{name}.gz") if p.is_file()), None)
            if path is not None:
                found[key] = path
        if len(found) == len(FILES):
            return found
    raise ConfigError(f"MNIST not found under {root}. {_HINT}")


class MNIST(DataModule):
    """MNIST from torchvision's IDX files: padded to 32x32, dynamically binarised training, a fixed-seed binarised test set."""

    source_hint = _HINT
    # the four .gz files in torchvision's layout, decompressed beside them as torchvision does
    archives = _ARCHIVES
    archive_folder = "MNIST/raw"

    def __init__(
        self,
        root: str,
        batch_size: int = 32,
        pad: int = 2,
        binarize: bool = True,
        test_binarization_seed: int = 1234,
        download: bool = False,
    ) -> None:
        """
        Args:
            root: the folder holding MNIST/raw (torchvision's layout), raw/ or the four IDX files.
            pad: zeros around the 28x28 digits (NVAE pads by 2 to 32x32).
            binarize: dynamically binarised training batches and a fixed-seed binarised test set; false: grey levels.
            test_binarization_seed: seed of the test set's one binarisation.
            download: fetch the four files into ROOT/MNIST/raw first when they are not there (md5-checked; from
                $VAEZOO_DATA_MIRROR when set), as `vaezoo data download MNIST ROOT` does.
        """
        if batch_size < 1:
            raise ConfigError(f"data.batch_size must be positive, got {batch_size}")
        if pad < 0:
            raise ConfigError(f"data.pad must be 0 or more, got {pad}")
        self.root = Path(root).expanduser()
        if download:
            download_archives(type(self), self.root)
        self.files = find_mnist_files(self.root)
        self.batch_size = batch_size
        self.pad = pad
        self.binarize = binarize
        self.test_binarization_seed = test_binarization_seed
        self.image_shape = (1, 28 + 2 * pad, 28 + 2 * pad)
        self._cache: dict[str, Dataset] = {}

    def _load(self, split: str) -> tuple[Tensor, Tensor]:
        images = read_idx(self.files[f"{split}_images"])
        labels = read_idx(self.files[f"{split}_labels"])
        if images.ndim != 3 or images.shape[1:] != (28, 28) or labels.ndim != 1 or len(labels) != len(images):
            raise ConfigError(
                f"{self.files[f'{split}_images']}: expected [N, 28, 28] images and N labels, "
                f"found {list(images.shape)} and {list(labels.shape)}"
            )
        x = torch.from_numpy(images.copy()).unsqueeze(1)
        if self.pad:  # NVAE's Pad(2): zeros around the digit
            x = torch.nn.functional.pad(x, (self.pad,) * 4)
        return x, torch.from_numpy(labels.astype(np.int64))

    def train_dataset(self) -> Dataset:
        if "train" not in self._cache:
            self._cache["train"] = UInt8Images(*self._load("train"))
        return self._cache["train"]

    def test_dataset(self) -> Dataset:
        if "test" not in self._cache:
            x, y = self._load("test")
            if self.binarize:  # one fixed draw: every evaluation scores the same binary digits
                generator = torch.Generator().manual_seed(self.test_binarization_seed)
                x = dynamic_binarize(x.float().div_(255.0), generator).mul_(255.0).to(torch.uint8)
            self._cache["test"] = UInt8Images(x, y)
        return self._cache["test"]

    def train_transform(self, batch: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Dynamic binarisation: a fresh Bernoulli draw of every pixel, from the trainer's generator."""
        return dynamic_binarize(batch, generator) if self.binarize else batch

    def describe(self) -> str:
        binar = "dynamically binarised train, fixed-seed binarised test" if self.binarize else "grey levels"
        side = self.image_shape[-1]
        return f"MNIST ({len(self.train_dataset())} train / {len(self.test_dataset())} test, {side}x{side}, {binar}; {self.root})"

    @classmethod
    def example(cls) -> Example:
        from .testing import temporary_root, write_mnist

        return Example(build=lambda: cls(root=str(write_mnist(temporary_root("mnist"), 8, 4)), batch_size=4))
