"""Atomic, safely loadable training checkpoints.

A checkpoint is written to a temporary file in the same directory, flushed and fsync'ed, then
renamed over its final name, so a crash during a save never corrupts the latest complete one.
Checkpoints contain only tensors and plain containers and are read with ``weights_only=True``.
"""

from __future__ import annotations

import os
import pickle
import re
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError

_PATTERN = re.compile(r"^step_(\d{8})\.pt$")


def atomic_torch_save(obj: Any, path: Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(obj, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def checkpoint_path(directory: Path, step: int) -> Path:
    return Path(directory) / f"step_{step:08d}.pt"


def list_checkpoints(directory: Path) -> list[tuple[int, Path]]:
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := _PATTERN.match(p.name))]
    return sorted(found)


def remove_stale_temporaries(directory: Path) -> int:
    """Delete the temporary files of checkpoint writes that a crash interrupted."""
    directory = Path(directory)
    if not directory.is_dir():
        return 0
    stale = [p for p in directory.iterdir() if p.name.startswith(".step_") and p.name.endswith(".tmp")]
    for path in stale:
        path.unlink(missing_ok=True)
    return len(stale)


def prune_checkpoints(directory: Path, keep_last: int) -> None:
    for _, path in list_checkpoints(directory)[:-keep_last] if keep_last > 0 else []:
        path.unlink(missing_ok=True)


def load_checkpoint(path: Path) -> dict:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the unpickler warns about protocols before refusing
            state = torch.load(Path(path), map_location="cpu", weights_only=True)
    except FileNotFoundError as exc:
        raise CheckpointError(f"checkpoint not found: {path}") from exc
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"cannot read checkpoint {path}: it holds objects other than tensors and plain containers, refused as unsafe"
        ) from exc
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"cannot read checkpoint {path}: {first} (damaged or not a checkpoint)") from exc
    if not isinstance(state, dict) or "model" not in state or "step" not in state:
        raise CheckpointError(f"{path} is not a vaezoo training checkpoint")
    return state
