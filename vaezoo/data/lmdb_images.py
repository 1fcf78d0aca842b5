"""Images in LMDB databases, in the official NVAE layout.

A prepared data set is a folder with ``train.lmdb`` and ``validation.lmdb`` (LMDB environments, each a
folder holding ``data.mdb``). The image of index ``i`` is stored under the key ``str(i).encode()``; the
value is either raw RGB bytes (``side*side*3``, row-major HWC; the side is ``sqrt(len / 3)``) or an
encoded image file (PNG, JPEG, ...), told apart by the file signature. ``vaezoo data prepare``
adds ``manifest.json`` (counts and sha256 of every file) and the split lists.

Reading is lazy and fork-safe: a dataset holds only the path, and each process (the trainer, every
DataLoader worker) opens its own read-only environment on first access (see :func:`environment`).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path

import lmdb
from torch import Tensor
from torch.utils.data import Dataset

from ..errors import ConfigError
from .transforms import ImagePipeline, is_encoded_image, raw_rgb_image

TRAIN_LMDB, TEST_LMDB, MANIFEST = "train.lmdb", "validation.lmdb", "manifest.json"
MANIFEST_FORMAT = "vaezoo-lmdb-images"
#: label of images that have none (face and folder data sets)
NO_LABEL = -1


def has_lmdb_pair(root: Path) -> bool:
    return (root / TRAIN_LMDB).exists() and (root / TEST_LMDB).exists()


# One read-only environment per LMDB file per process, shared by every dataset reading it: py-lmdb refuses
# to open an environment twice in a process (LMDB's locks belong to the process), and an environment must
# not be used across fork(). A forked child (a DataLoader worker) closes the copies it inherited, which
# only unmaps its own view, and opens its own on first use; a spawned worker starts with none.
_ENVIRONMENTS: dict[tuple, lmdb.Environment] = {}


def _close_inherited_environments() -> None:
    for env in _ENVIRONMENTS.values():
        try:
            env.close()
        except lmdb.Error:
            pass
    _ENVIRONMENTS.clear()


os.register_at_fork(after_in_child=_close_inherited_environments)


def environment(path: Path) -> lmdb.Environment:
    """The process's read-only environment of the LMDB at ``path`` (a folder or a single file)."""
    data_file = path / "data.mdb" if path.is_dir() else path
    try:
        stat = data_file.stat()
    except OSError as exc:
        raise ConfigError(f"{path}: not a readable LMDB ({exc.strerror or exc})") from exc
    key = (str(path.resolve()), stat.st_dev, stat.st_ino)  # a re-created database is a new environment
    env = _ENVIRONMENTS.get(key)
    if env is None:
        try:
            # lock=False: readers never write, and a read-only copy of the data (no lock.mdb) stays readable
            env = lmdb.open(str(path), subdir=path.is_dir(), readonly=True, lock=False, readahead=False, meminit=False)
        except lmdb.Error as exc:
            raise ConfigError(f"{path}: not a readable LMDB ({exc})") from exc
        _ENVIRONMENTS[key] = env
    return env


def count_entries(path: Path) -> int:
    return environment(path).stat()["entries"]


class DecodeLMDBValue:
    """An LMDB value (raw RGB bytes or an encoded image) -> the pipeline's tensor. Picklable."""

    def __init__(self, pipeline: ImagePipeline) -> None:
        self.pipeline = pipeline

    def __call__(self, value: bytes, name: str) -> Tensor:
        if is_encoded_image(value):
            return self.pipeline(value, name)
        return self.pipeline.from_image(raw_rgb_image(value, name), name)


class LMDBImages(Dataset):
    """The images of one LMDB environment, as ``(image, NO_LABEL)``. Holds only the path (picklable)."""

    def __init__(self, path: str | Path, decode: Callable[[bytes, str], Tensor]) -> None:
        self.path = Path(path)
        self.decode = decode
        self._length = count_entries(self.path)

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        if not -self._length <= index < self._length:
            raise IndexError(f"index {index} out of range for {self._length} images in {self.path}")
        index %= self._length
        with environment(self.path).begin(write=False) as txn:
            value = txn.get(str(index).encode())
        if value is None:
            raise ConfigError(f"{self.path} has no image under key {str(index)!r} (keys must be 0..{self._length - 1})")
        return self.decode(value, f"{self.path}[{index}]"), NO_LABEL


def write_lmdb(path: Path, values: Iterable[bytes], expected_bytes: int = 0, chunk: int = 512) -> int:
    """Write ``values`` under keys "0", "1", ... into a new LMDB at ``path``; returns the count.

    Writes in transactions of ``chunk`` values; when the map is full it doubles and retries the chunk.
    The lock file is removed afterwards: the finished database is only ever read (with lock=False).
    """
    map_size = max(64 << 20, 2 * expected_bytes)
    env = lmdb.open(str(path), map_size=map_size, subdir=True, meminit=True)
    count = 0
    try:
        pending: list[bytes] = []

        def flush() -> None:
            nonlocal count
            while True:
                try:
                    with env.begin(write=True) as txn:
                        for offset, value in enumerate(pending):
                            txn.put(str(count + offset).encode(), value)
                    break
                except lmdb.MapFullError:
                    env.set_mapsize(env.info()["map_size"] * 2)
            count += len(pending)
            pending.clear()

        for value in values:
            pending.append(value)
            if len(pending) >= chunk:
                flush()
        flush()
        env.sync(True)
    finally:
        env.close()
    (path / "lock.mdb").unlink(missing_ok=True)
    return count


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_manifest(root: Path) -> dict | None:
    path = root / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: not a readable manifest ({exc})") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise ConfigError(f"{path}: not a vaezoo data manifest (format {MANIFEST_FORMAT!r})")
    return manifest


def verify_prepared(root: str | Path) -> dict:
    """Check a prepared folder against its manifest (sha256 of every file, image counts); returns it."""
    root = Path(root)
    manifest = read_manifest(root)
    if manifest is None:
        raise ConfigError(f"{root} has no {MANIFEST}: not a folder written by vaezoo data prepare")
    for relative, expected in manifest["files"].items():
        path = root / relative
        if not path.is_file():
            raise ConfigError(f"{path} is missing (listed in {root / MANIFEST})")
        actual = sha256_file(path)
        if actual != expected["sha256"]:
            raise ConfigError(
                f"{path}: sha256 {actual} does not match the manifest ({expected['sha256']}); the data is corrupt"
            )
    for split in manifest["splits"].values():
        found = count_entries(root / split["lmdb"])
        if found != split["count"]:
            raise ConfigError(f"{root / split['lmdb']} holds {found} images, the manifest says {split['count']}")
    return manifest
