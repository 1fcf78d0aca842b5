"""Downsampled ImageNet 32x32 (Chrabaszcz et al., 2017), as NVAE uses it (flips for training).

Native files: the batch pickles of ``Imagenet32_train`` (``train_data_batch_1`` .. ``_10``) and
``Imagenet32_val`` (``val_data``), each a dict with ``data`` (uint8 ``[N, 3072]``, the R, G and B planes
row-major, like CIFAR) and ``labels`` (1..1000, returned as 0..999); the ``.npz`` variant of the same
files is read too. The batch files are held in memory (about 4 GB for the training set); the prepared
LMDB (raw RGB values, the official layout) is read lazily instead.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from vaezoo.data.arrays import UInt8Images
from vaezoo.data.image_data import ImageDataModule
from vaezoo.data.pickles import load_rows
from vaezoo.data.prepare import PrepareOptions, PreparePlan
from vaezoo.data.transforms import ImagePipeline
from vaezoo.errors import ConfigError
from vaezoo.interfaces import Example

ROW_BYTES = 3 * 32 * 32
_BATCH = re.compile(r"^train_data_batch_(\d+)(\.npz)?$")
_VAL = re.compile(r"^val_data(\.npz)?$")


def find_batch_files(root: Path) -> tuple[list[Path], Path] | None:
    """(train batch files in numeric order, validation file) under ``root``, or None when absent."""
    folders = [
        root,
        root / "Imagenet32_train",
        root / "Imagenet32_train_npz",
        root / "Imagenet32_val",
        root / "Imagenet32_val_npz",
    ]
    train, val = {}, None
    for folder in folders:
        if not folder.is_dir():
            continue
        for path in sorted(folder.iterdir()):
            match = _BATCH.match(path.name)
            if match and path.is_file():
                train.setdefault(int(match.group(1)), path)
            elif _VAL.match(path.name) and path.is_file() and val is None:
                val = path
    if not train or val is None:
        return None
    return [train[k] for k in sorted(train)], val


def _images(rows: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(rows.reshape(-1, 3, 32, 32))


class ImageNet32(ImageDataModule):
    """Downsampled ImageNet 32x32 (Imagenet32_train batch pickles or the prepared LMDB); flips for training."""

    title = "ImageNet 32"
    prepare_name = "imagenet32"
    prepare_options = ()
    source_hint = (
        "Expected the downsampled-ImageNet batch files Imagenet32_train/train_data_batch_1..10 and "
        "Imagenet32_val/val_data (pickles or .npz, from https://image-net.org/download-images.php, 'Downsampled "
        "ImageNet 32x32') under ROOT, or the official LMDB layout (ROOT/train.lmdb and ROOT/validation.lmdb, raw RGB "
        "values under keys '0', '1', ...) as written by `vaezoo data prepare imagenet32 SOURCE DEST`"
    )

    def __init__(self, root: str, batch_size: int = 32, flip: bool = True) -> None:
        """
        Args:
            root: the folder holding the batch files (or Imagenet32_train/ and Imagenet32_val/), or a prepared LMDB folder.
            flip: random horizontal flips of training batches.
        """
        super().__init__(root, batch_size, ImagePipeline(32), flip)
        self.batch_files = None if self.from_lmdb else self.find(self.root)

    @classmethod
    def find(cls, root: Path) -> tuple[list[Path], Path]:
        found = find_batch_files(root) if root.is_dir() else None
        if found is None:
            raise ConfigError(cls.missing(f"no train_data_batch_N and val_data files under {root}"))
        return found

    def _native_datasets(self) -> tuple[Dataset, Dataset]:
        train_files, val_file = self.batch_files
        train_rows = [load_rows(path, ROW_BYTES) for path in train_files]
        data, labels = np.concatenate([r[0] for r in train_rows]), np.concatenate([r[1] for r in train_rows])
        val_data, val_labels = load_rows(val_file, ROW_BYTES)
        # the files number the classes 1..1000
        train = UInt8Images(_images(data), torch.from_numpy(labels - 1))
        return train, UInt8Images(_images(val_data), torch.from_numpy(val_labels - 1))

    @classmethod
    def prepare_plan(cls, source: Path, options: PrepareOptions) -> PreparePlan:
        train_files, val_file = cls.find(source)
        files = {"train": train_files, "test": [val_file]}
        # counting reads every file once more, but keeps one batch file in memory at a time (not ~4 GB)
        names = {
            split: [f"{p.name}#{row}" for p in paths for row in range(len(load_rows(p, ROW_BYTES)[0]))]
            for split, paths in files.items()
        }

        def values(split: str) -> Iterator[bytes]:
            for path in files[split]:  # one batch file in memory at a time
                rows, _ = load_rows(path, ROW_BYTES)
                for row in rows:
                    yield row.reshape(3, 32, 32).transpose(1, 2, 0).tobytes()  # planes -> raw RGB (HWC)

        return PreparePlan(
            names=names,
            values=values,
            encoding="raw-rgb",
            image_size=32,
            expected_bytes={split: len(n) * ROW_BYTES for split, n in names.items()},
            details={"train_files": [p.name for p in train_files], "validation_file": val_file.name},
        )

    @classmethod
    def example(cls) -> Example:
        from .testing import temporary_root, write_imagenet32

        return Example(
            build=lambda: cls(
                root=str(write_imagenet32(temporary_root("imagenet32"), batches=2, per_batch=2, num_val=2)),
                batch_size=2,
            )
        )
