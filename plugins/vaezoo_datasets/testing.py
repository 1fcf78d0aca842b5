"""Tiny data sets in the real on-disk formats, written offline.

Used by the data modules' ``example()`` (the registry contract test builds every data module) and
handy for testing code that reads data: each writer produces the exact layout that the real download
has (IDX files, CIFAR batch pickles, downsampled-ImageNet batches, CelebA's folder and partition file,
plain image folders), filled with seeded random pixels.
"""

from __future__ import annotations

import atexit
import gzip
import pickle
import shutil
import struct
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from vaezoo.data.transforms import CELEBA_ALIGNED_SIZE

from .formats import FILES as MNIST_FILES
from .formats import TEST_BATCH, TRAIN_BATCHES


def temporary_root(prefix: str) -> Path:
    """A new temporary folder, removed when the interpreter exits."""
    root = Path(tempfile.mkdtemp(prefix=f"vaezoo-{prefix}-"))
    atexit.register(shutil.rmtree, root, True)
    return root


def idx_bytes(array: np.ndarray) -> bytes:
    """The uint8 IDX encoding of ``array``: magic 0x0000 08 NDIM, big-endian dimensions, the values."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    return bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def write_mnist(root: Path, num_train: int, num_test: int, gz: bool = False, seed: int = 0) -> Path:
    """MNIST IDX files in ``root/MNIST/raw`` (torchvision's layout); returns ``root``."""
    rng = np.random.default_rng(seed)
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train_images": rng.integers(0, 256, (num_train, 28, 28), dtype=np.uint8),
        "train_labels": rng.integers(0, 10, num_train, dtype=np.uint8),
        "test_images": rng.integers(0, 256, (num_test, 28, 28), dtype=np.uint8),
        "test_labels": rng.integers(0, 10, num_test, dtype=np.uint8),
    }
    for key, array in arrays.items():
        data = idx_bytes(array)
        if gz:
            (raw / f"{MNIST_FILES[key]}.gz").write_bytes(gzip.compress(data))
        else:
            (raw / MNIST_FILES[key]).write_bytes(data)
    return root


def _pickle_batch(path: Path, data: np.ndarray, labels: list[int], **extra) -> None:
    # bytes keys and protocol 2, as the original Python 2 files read back
    content = {b"data": data, b"labels": labels, **{k.encode(): v for k, v in extra.items()}}
    path.write_bytes(pickle.dumps(content, protocol=2))


def write_cifar10(root: Path, per_batch: int, num_test: int, seed: int = 0) -> Path:
    """CIFAR-10 python batches in ``root/cifar-10-batches-py``; returns ``root``."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    for name, count in [(n, per_batch) for n in TRAIN_BATCHES] + [(TEST_BATCH, num_test)]:
        data = rng.integers(0, 256, (count, 3 * 32 * 32), dtype=np.uint8)
        _pickle_batch(folder / name, data, rng.integers(0, 10, count).tolist(), batch_label=name)
    label_names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    (folder / "batches.meta").write_bytes(
        pickle.dumps({b"label_names": label_names, b"num_cases_per_batch": per_batch}, protocol=2)
    )
    return root


def write_imagenet32(root: Path, batches: int, per_batch: int, num_val: int, seed: int = 0) -> Path:
    """Downsampled-ImageNet batch files in ``root/Imagenet32_train`` and ``root/Imagenet32_val``; returns ``root``."""
    rng = np.random.default_rng(seed)
    (root / "Imagenet32_train").mkdir(parents=True, exist_ok=True)
    (root / "Imagenet32_val").mkdir(parents=True, exist_ok=True)
    for index in range(1, batches + 1):
        data = rng.integers(0, 256, (per_batch, 3 * 32 * 32), dtype=np.uint8)
        _pickle_batch(
            root / "Imagenet32_train" / f"train_data_batch_{index}",
            data,
            rng.integers(1, 1001, per_batch).tolist(),
            mean=data.mean(0),
        )
    data = rng.integers(0, 256, (num_val, 3 * 32 * 32), dtype=np.uint8)
    _pickle_batch(root / "Imagenet32_val" / "val_data", data, rng.integers(1, 1001, num_val).tolist())
    return root


def write_image_files(
    folder: Path,
    count: int,
    size: tuple[int, int],
    mode: str = "RGB",
    suffix: str = ".png",
    seed: int = 0,
    start: int = 0,
) -> list[str]:
    """``count`` random 8-bit images of ``size`` (width, height) and ``mode``; returns their file names."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    channels = len(mode)
    names = []
    for index in range(start, start + count):
        shape = (size[1], size[0]) if channels == 1 else (size[1], size[0], channels)
        image = Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8))
        name = f"{index:06d}{suffix}"
        image.save(folder / name)
        names.append(name)
    return names


def write_celeba(root: Path, count: int, partition: tuple[int, int] | None = None, seed: int = 0) -> Path:
    """CelebA's layout: ``root/celeba/img_align_celeba/000001.jpg ...`` (178x218 JPEGs) and, when
    ``partition=(train, valid)`` is given, ``root/celeba/list_eval_partition.txt`` (the rest is partition 2)."""
    folder = root / "celeba" / "img_align_celeba"
    names = write_image_files(folder, count, CELEBA_ALIGNED_SIZE, suffix=".jpg", seed=seed, start=1)
    if partition is not None:
        train, valid = partition
        lines = [f"{name} {0 if i < train else 1 if i < train + valid else 2}" for i, name in enumerate(names)]
        (root / "celeba" / "list_eval_partition.txt").write_text("\n".join(lines) + "\n")
    return root
