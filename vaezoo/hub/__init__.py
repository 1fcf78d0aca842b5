"""Saved models and the Hugging Face Hub: save_pretrained / from_pretrained / push_to_hub / load(name).

A saved model is a folder of three files:

- ``config.json``: ``{"format": "vaezoo", "format_version", "vaezoo_version", "model": <spec>, "weights":
  {"sha256", "size"}, "metadata": {...}}``. ``model`` is the component spec of ``model.config``, rebuilt with
  :func:`vaezoo.config.build`, which only accepts registered class paths (a config never imports code).
  ``metadata`` holds the optional card metadata: preset, license, dataset, metrics (with their protocol), source.
- ``model.safetensors``: the state dict (tensors only: never pickle). Loading is strict.
- ``README.md``: a model card written with huggingface_hub's :class:`~huggingface_hub.ModelCard` from config.json.

Names accepted by :func:`load`: a registered pretrained name (``vaezoo list pretrained``),
``hf-hub:org/repo[@revision]`` or ``local-dir:PATH``. A pretrained name is looked for in the local store
(``$VAEZOO_HOME/models/<name>``, filled by ``vaezoo convert SOURCE CHECKPOINT --pretrained NAME``), then in the
folder that ships inside an installed package (the entry's ``bundled``, e.g. ``nvae-mnist-small``), then in the
Hugging Face cache, then on the Hub. A loaded model carries ``model.card`` (:class:`ModelCardInfo`).

huggingface_hub reads its ``HF_*`` environment variables (HF_HOME, HF_HUB_CACHE, HF_ENDPOINT, HF_HUB_OFFLINE,
HF_HUB_DISABLE_XET, HF_TOKEN_PATH, ...) once, when it is imported. Every function here re-reads them first
(:func:`sync_hf_environment`), so they behave as huggingface_hub defines them at the time of the call.

The package is split by reason to change, each module importing only those before it in this list:
:mod:`.format` (the folder layout and its checks), :mod:`.env` (HF_* syncing), :mod:`.card` (README.md and
``model.card``), :mod:`.saving`, :mod:`.names` (name -> repo and revision), :mod:`.store` (the local model store),
:mod:`.downloading` (the cache; Hub errors in one line), :mod:`.catalog` (pretrained entries: card, where a name
would load from, install hints), :mod:`.loading`, :mod:`.installing` (official checkpoint -> store),
:mod:`.pushing`, and :mod:`.mixin` (:class:`ModelHubMixin`, for concrete model classes).
Module names are gerunds so that none is shadowed by a function of the same name re-exported here (``load``).
"""

from __future__ import annotations

from .card import ModelCardInfo, model_card
from .catalog import Location, install_hint, locate, locate_all
from .downloading import cached_snapshot, download, fetch
from .env import sync_hf_environment
from .format import (
    CARD_KEYS,
    CARD_NAME,
    CONFIG_NAME,
    DEFAULT_REVISION,
    FORMAT,
    FORMAT_VERSION,
    HF_HUB_PREFIX,
    LOCAL_DIR_PREFIX,
    WEIGHTS_NAME,
    HubError,
    check_metadata,
    read_config,
)
from .installing import install_pretrained
from .loading import from_pretrained, load
from .mixin import ModelHubMixin
from .names import parse_hf_hub_spec, resolve_name
from .pushing import push_to_hub
from .saving import save_pretrained
from .store import installed_folder, store_dir, store_path, vaezoo_home

__all__ = [
    "CARD_KEYS",
    "CARD_NAME",
    "CONFIG_NAME",
    "DEFAULT_REVISION",
    "FORMAT",
    "FORMAT_VERSION",
    "HF_HUB_PREFIX",
    "LOCAL_DIR_PREFIX",
    "WEIGHTS_NAME",
    "HubError",
    "Location",
    "ModelCardInfo",
    "ModelHubMixin",
    "cached_snapshot",
    "check_metadata",
    "download",
    "fetch",
    "from_pretrained",
    "install_hint",
    "install_pretrained",
    "installed_folder",
    "load",
    "locate",
    "locate_all",
    "model_card",
    "parse_hf_hub_spec",
    "push_to_hub",
    "read_config",
    "resolve_name",
    "save_pretrained",
    "store_dir",
    "store_path",
    "sync_hf_environment",
    "vaezoo_home",
]
