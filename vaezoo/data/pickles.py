"""Reading the numpy pickles that CIFAR-10 and downsampled ImageNet are distributed as, safely.

A pickle can run any code while it loads. These files only ever hold dicts, lists, strings, numbers and
numpy arrays, so the unpickler resolves numpy's array reconstructors and nothing else: a tampered
file fails with one line instead of executing code.
"""

from __future__ import annotations

import importlib
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError

# numpy 1 pickles name numpy.core, numpy 2 pickles name numpy._core; both resolve to the running numpy.
# _codecs.encode is how Python 3 writes bytes (the raw array data) into protocol-2 pickles.
_ALLOWED = {
    ("numpy", "ndarray"): ("numpy", "ndarray"),
    ("numpy", "dtype"): ("numpy", "dtype"),
    **{
        (f"{core}.multiarray", name): ("multiarray", name)
        for core in ("numpy.core", "numpy._core")
        for name in ("_reconstruct", "scalar")
    },
    **{(f"{core}.numeric", "_frombuffer"): ("numeric", "_frombuffer") for core in ("numpy.core", "numpy._core")},
    ("_codecs", "encode"): ("_codecs", "encode"),
}


class _NumpyOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only numpy arrays are expected")
        where, attribute = _ALLOWED[module, name]
        return getattr(_module(where), attribute)


def _module(where: str) -> Any:
    if where == "numpy":
        return np
    if where == "_codecs":
        import _codecs

        return _codecs
    try:  # numpy >= 2
        return importlib.import_module(f"numpy._core.{where}")
    except ImportError:  # pragma: no cover - numpy 1
        return importlib.import_module(f"numpy.core.{where}")


def load_numpy_pickle(path: Path) -> dict[str, Any]:
    """A dict of arrays from a (Python 2 or 3) pickle file; bytes keys are decoded to str."""
    try:
        with open(path, "rb") as handle:
            # latin1 decodes the raw array bytes of Python 2 pickles (the official CIFAR files) unchanged
            content = _NumpyOnlyUnpickler(handle, encoding="latin1").load()
    except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError, AttributeError) as exc:
        raise ConfigError(f"{path}: not a readable data pickle ({type(exc).__name__}: {exc})") from exc
    if not isinstance(content, dict):
        raise ConfigError(f"{path}: expected a pickled dict, found {type(content).__name__}")
    return {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in content.items()}


def load_rows(path: Path, image_bytes: int) -> tuple[np.ndarray, np.ndarray]:
    """``(data uint8 [N, image_bytes], labels int64 [N])`` from a CIFAR-style batch (pickle or .npz)."""
    if path.suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as archive:
                content = {k: archive[k] for k in archive.files}
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{path}: not a readable .npz batch ({exc})") from exc
    else:
        content = load_numpy_pickle(path)
    if "data" not in content or "labels" not in content:
        raise ConfigError(f"{path}: expected the keys 'data' and 'labels', found {sorted(content)}")
    data, labels = np.asarray(content["data"]), np.asarray(content["labels"], dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != image_bytes or len(labels) != len(data):
        raise ConfigError(
            f"{path}: 'data' must be uint8 [N, {image_bytes}] with N labels, found {data.dtype} {list(data.shape)} and {len(labels)} labels"
        )
    return data, labels
