"""``vaezoo data prepare``: build the LMDB pair, split lists and checksummed manifest of a data set.

A data module class is *preparable* when it sets ``prepare_name`` and implements
``prepare_plan(source, options) -> PreparePlan``; the command finds them in the registry, so a
third-party data set becomes preparable by registering such a class.

The output folder is built in a temporary folder next to ``DEST`` and renamed into place only once
complete (same file system, so the rename is atomic): an interrupted or failed run (a bad image, a
missing file, Ctrl-C) leaves nothing behind, and an existing ``DEST`` is never touched.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from .._version import __version__
from ..errors import ConfigError
from ..registry import unknown_name_message
from .lmdb_images import MANIFEST, MANIFEST_FORMAT, TEST_LMDB, TRAIN_LMDB, has_lmdb_pair, sha256_file, write_lmdb
from .splits import TEST_LIST, TRAIN_LIST

#: split -> (LMDB folder, list file) in the output
OUTPUTS = {"train": (TRAIN_LMDB, TRAIN_LIST), "test": (TEST_LMDB, TEST_LIST)}


@dataclass(frozen=True)
class PrepareOptions:
    """The options of ``vaezoo data prepare``; None means the data set's default."""

    image_size: int | None = None
    test_size: int | float | None = None
    seed: int | None = None
    workers: int = 1

    def given(self) -> list[str]:
        return [f.name for f in fields(self) if f.name != "workers" and getattr(self, f.name) is not None]


@dataclass
class PreparePlan:
    """What a data set stores: item names per split (in key order) and a way to produce the values."""

    names: dict[str, list[str]]
    values: Callable[[str], Iterable[bytes]]  # split -> LMDB values, in the order of names[split]
    encoding: str  # "raw-rgb" (side*side*3 bytes) or "encoded" (image files)
    image_size: int | None = None
    expected_bytes: dict[str, int] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)


def preparable_datasets() -> dict[str, type]:
    """prepare name -> data module class, from the registry."""
    from ..plugins import get_registry

    found = {}
    for entry in get_registry().entries("dataset"):
        name = getattr(entry.target, "prepare_name", None)
        if name:
            found[name] = entry.target
    return dict(sorted(found.items()))


def prepare(
    name: str,
    source: str | Path,
    dest: str | Path,
    options: PrepareOptions = PrepareOptions(),
    progress: Callable | None = None,
) -> dict:
    """Prepare data set ``name`` from ``source`` into the new folder ``dest``; returns the manifest."""
    datasets = preparable_datasets()
    if name not in datasets:
        raise ConfigError(unknown_name_message("preparable data set", name, datasets))
    cls = datasets[name]
    source, dest = Path(source).expanduser(), Path(dest).expanduser()
    if dest.exists() or dest.is_symlink():
        raise ConfigError(
            f"{dest} already exists; vaezoo data prepare never overwrites: remove it or choose another DEST"
        )
    if not source.exists():
        raise ConfigError(f"{source} does not exist. {cls.source_hint}")
    if has_lmdb_pair(source):
        raise ConfigError(
            f"{source} already holds {TRAIN_LMDB} and {TEST_LMDB}: it is prepared, point the data module's root at it"
        )
    unused = [option for option in options.given() if option not in cls.prepare_options]
    if unused:
        accepted = ", ".join(f"--{o}" for o in cls.prepare_options) or "none"
        raise ConfigError(f"{name} does not take --{unused[0]} (its options: {accepted})")
    if options.workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {options.workers}")
    plan = cls.prepare_plan(source, options)

    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.partial-", dir=dest.parent))
    try:
        staging.chmod(0o777 & ~_umask())  # mkdtemp's 0700 would make DEST private
        splits, files = {}, {}
        for split, (lmdb_name, list_name) in OUTPUTS.items():
            names = plan.names[split]
            values = _counted(plan.values(split), progress, f"{name} {split}", len(names))
            count = write_lmdb(staging / lmdb_name, values, plan.expected_bytes.get(split, 0))
            if count != len(names):
                raise ConfigError(f"{source}: {split} produced {count} images but lists {len(names)}")
            (staging / list_name).write_text("\n".join(names) + "\n")
            splits[split] = {"lmdb": lmdb_name, "list": list_name, "count": count}
            for relative in (f"{lmdb_name}/data.mdb", list_name):
                files[relative] = {
                    "sha256": sha256_file(staging / relative),
                    "bytes": (staging / relative).stat().st_size,
                }
        manifest = {
            "format": MANIFEST_FORMAT,
            "format_version": 1,
            "dataset": name,
            "data_module": cls.__name__,
            "encoding": plan.encoding,
            "image_size": plan.image_size,
            "splits": splits,
            "files": files,
            "source": str(source.resolve()),
            "details": plan.details,
            "written_by": f"vaezoo {__version__}",
        }
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        if dest.exists():  # created by someone else while we worked
            raise ConfigError(f"{dest} appeared while preparing; vaezoo data prepare never overwrites")
        staging.rename(dest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return manifest


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _counted(values: Iterable[bytes], progress: Callable | None, label: str, total: int) -> Iterator[bytes]:
    for index, value in enumerate(values, 1):
        yield value
        if progress is not None:
            progress(label, index, total)


# -- helpers for data sets stored as image files ---------------------------------------------------
class KeepEncoded:
    """Store an image file's bytes unchanged, after ``check`` decoded it (so a bad file fails the prepare)."""

    def __init__(self, check: Callable[[bytes, str], Any]) -> None:
        self.check = check

    def __call__(self, data: bytes, name: str) -> bytes:
        self.check(data, name)
        return data


class ToRawRGB:
    """Decode, process (``pipeline``: resize, crop) and store raw 8-bit RGB bytes (the official layout)."""

    def __init__(self, pipeline) -> None:
        self.pipeline = pipeline

    def __call__(self, data: bytes, name: str) -> bytes:
        return self.pipeline.uint8_rgb(data, name).tobytes()


class ReadAndConvert:
    """``relative name -> convert(file bytes)`` for one folder. Picklable, for worker processes."""

    def __init__(self, folder: Path, convert: Callable[[bytes, str], bytes]) -> None:
        self.folder, self.convert = folder, convert

    def __call__(self, name: str) -> bytes:
        path = self.folder / name
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read ({exc.strerror or exc})") from exc
        return self.convert(data, str(path))


def map_in_order(function: Callable[[Any], bytes], items: list, workers: int) -> Iterator[bytes]:
    """``function`` over ``items`` in order, in ``workers`` processes (spawned: no state is forked)."""
    if workers <= 1:
        yield from map(function, items)
        return
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        yield from pool.imap(function, items, chunksize=16)
