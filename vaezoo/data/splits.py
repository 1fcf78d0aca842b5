"""Train/test splits of image folders, written next to the data and reused.

A folder without a published split is split once, with a seed, into ``train.txt`` and ``test.txt``
(one path per line, relative to the folder, sorted) plus ``split.json`` (how they were made). The
files are written atomically on first use and read afterwards, so every run, worker and machine that
shares the folder trains and tests on the same images. Lists written by someone else (no
``split.json``), such as a published split, are used as given.

Split sizes follow the official NVAE counts for the full data sets and adapt to other sizes: a test
size is ``None`` (the official count for the full data set, else the official fraction), an int (a
count) or a float in (0, 1) (a fraction).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import torch

from .._version import __version__
from ..errors import ConfigError
from .transforms import IMAGE_EXTENSIONS

TRAIN_LIST, TEST_LIST, SPLIT_INFO = "train.txt", "test.txt", "split.json"


def resolve_test_count(
    total: int,
    test_size: int | float | None,
    official: tuple[int, int] | None = None,
    default_fraction: float = 0.1,
    key: str = "data.test_size",
) -> int:
    """How many of ``total`` images go to the test split (see the module docstring)."""
    if total < 2:
        raise ConfigError(f"a train/test split needs at least 2 images, found {total}")
    if test_size is None:
        if official is not None and total == sum(official):
            return official[1]
        fraction = official[1] / sum(official) if official is not None else default_fraction
        return min(max(round(total * fraction), 1), total - 1)
    if isinstance(test_size, bool) or not isinstance(test_size, (int, float)):
        raise ConfigError(f"{key} must be a count, a fraction in (0, 1) or null, got {test_size!r}")
    if isinstance(test_size, float):
        if not 0.0 < test_size < 1.0:
            raise ConfigError(f"{key} as a fraction must be in (0, 1), got {test_size}")
        return min(max(round(total * test_size), 1), total - 1)
    if not 0 < test_size < total:
        raise ConfigError(f"{key} must be between 1 and {total - 1} for {total} images, got {test_size}")
    return test_size


def seeded_split(names: Sequence[str], test_count: int, seed: int) -> tuple[list[str], list[str]]:
    """A seeded random choice of ``test_count`` test names; both lists sorted."""
    ordered = sorted(names)
    order = torch.randperm(len(ordered), generator=torch.Generator().manual_seed(seed)).tolist()
    test = sorted(ordered[i] for i in order[:test_count])
    train = sorted(ordered[i] for i in order[test_count:])
    return train, test


def list_images(folder: Path) -> list[str]:
    """Image files under ``folder`` (recursively), as sorted posix paths relative to it.

    Hidden entries and ``*.lmdb`` folders are skipped (a prepared LMDB may live next to its images).
    """
    found = []
    for directory, subdirs, files in os.walk(folder):
        subdirs[:] = sorted(d for d in subdirs if not d.startswith(".") and not d.endswith(".lmdb"))
        base = Path(directory).relative_to(folder)
        found += [
            (base / f).as_posix() for f in files if not f.startswith(".") and f.lower().endswith(IMAGE_EXTENSIONS)
        ]
    return sorted(found)


def read_list(path: Path) -> list[str]:
    """A split list: one path per line; blank lines and ``#`` comments are ignored."""
    lines = (line.strip() for line in path.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename: readers never see half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def folder_split(
    image_dir: Path,
    names: Sequence[str],
    *,
    test_size: int | float | None,
    seed: int,
    official: tuple[int, int] | None = None,
    default_fraction: float = 0.1,
    split_dir: Path | None = None,
    write: bool = True,
) -> tuple[list[str], list[str]]:
    """The (train, test) names of a folder: read from its split files, or made and written (``write``)."""
    split_dir = split_dir or image_dir
    train_file, test_file, info_file = (split_dir / n for n in (TRAIN_LIST, TEST_LIST, SPLIT_INFO))
    if train_file.is_file() and test_file.is_file():
        return _existing_split(split_dir, image_dir, names, test_size, seed, official, default_fraction)
    test_count = resolve_test_count(len(names), test_size, official, default_fraction)
    train, test = seeded_split(names, test_count, seed)
    if write:
        info = {
            "seed": seed,
            "test_size": test_size,
            "test_count": test_count,
            "num_images": len(names),
            "written_by": f"vaezoo {__version__}",
        }
        try:
            split_dir.mkdir(parents=True, exist_ok=True)
            # the lists last: a split counts as written once both lists exist
            atomic_write_text(info_file, json.dumps(info, indent=2) + "\n")
            atomic_write_text(train_file, "\n".join(train) + "\n")
            atomic_write_text(test_file, "\n".join(test) + "\n")
        except OSError as exc:
            raise ConfigError(
                f"cannot write the split files to {split_dir} ({exc.strerror or exc}); make it writable or set data.split_dir to a writable folder"
            ) from exc
    return train, test


def _existing_split(split_dir, image_dir, names, test_size, seed, official, default_fraction):
    train, test = read_list(split_dir / TRAIN_LIST), read_list(split_dir / TEST_LIST)
    available = set(names)
    for list_name, listed in ((TRAIN_LIST, train), (TEST_LIST, test)):
        missing = next((n for n in listed if n not in available), None)
        if missing is not None:
            raise ConfigError(f"{split_dir / list_name} lists {missing}, which is not an image in {image_dir}")
    info_file = split_dir / SPLIT_INFO
    if not info_file.is_file():  # lists from elsewhere (e.g. a published split): they define the data set
        return train, test
    info = json.loads(info_file.read_text())
    wanted = resolve_test_count(len(names), test_size, official, default_fraction)
    if info.get("seed") != seed or len(test) != wanted:
        raise ConfigError(
            f"the split files in {split_dir} were made with split_seed {info.get('seed')} and {len(test)} test images, "
            f"not split_seed {seed} and {wanted}: use those settings, or delete train.txt, test.txt and split.json to re-split"
        )
    unlisted = len(available) - len(set(train) | set(test))
    if unlisted:
        raise ConfigError(
            f"{image_dir} has {unlisted} images in neither {TRAIN_LIST} nor {TEST_LIST} (the folder changed after the split); "
            "delete train.txt, test.txt and split.json in " + str(split_dir) + " to re-split"
        )
    return train, test
