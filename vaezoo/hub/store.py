"""The local model store: pretrained models installed from official checkpoints, under their pretrained name.

Some published weights cannot be redistributed on the Hub (NVIDIA's NVAE checkpoints are on Google Drive under a
non-commercial licence); ``vaezoo convert SOURCE CHECKPOINT --pretrained NAME`` converts them and installs the
result here, and :func:`vaezoo.load` finds them first, before the Hugging Face cache and the Hub.

Layout, next to the Hugging Face cache conventions::

    $VAEZOO_HOME/                     default $XDG_CACHE_HOME/vaezoo, else ~/.cache/vaezoo
      models/<pretrained name>/       a saved-model folder: config.json, model.safetensors, README.md

The folder is written atomically (see :mod:`.installing`), so a folder holding config.json is complete.
The environment is read at every call, as for the ``HF_*`` variables.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from .format import CONFIG_NAME, HubError

VAEZOO_HOME_ENV = "VAEZOO_HOME"
MODELS_DIR = "models"


def vaezoo_home() -> Path:
    """``$VAEZOO_HOME``, else ``$XDG_CACHE_HOME/vaezoo``, else ``~/.cache/vaezoo`` (not created here)."""
    if os.environ.get(VAEZOO_HOME_ENV):
        return Path(os.environ[VAEZOO_HOME_ENV]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "vaezoo"


def store_dir() -> Path:
    """The folder of installed models."""
    return vaezoo_home() / MODELS_DIR


def store_path(name: str) -> Path:
    """Where the pretrained model ``name`` is (or would be) installed."""
    if not re.fullmatch(r"[\w][\w.\-]*", name):  # one plain folder name: never a path out of the store
        raise HubError(f"pretrained name {name!r} cannot name a folder of the model store (letters, digits, . _ -)")
    return store_dir() / name


def installed_folder(name: str) -> Path | None:
    """The installed folder of pretrained ``name``, or None when it is not installed."""
    path = store_path(name)
    return path if (path / CONFIG_NAME).is_file() else None
