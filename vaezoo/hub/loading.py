"""Loading a saved model: :func:`load` (by name), :func:`from_pretrained` (by folder, repo id or name) and the
strict reading of a saved-model folder into a ready model.

A pretrained name is looked for in the local store (installed with ``vaezoo convert ... --pretrained NAME``),
then among the folders that ship inside installed packages (the entry's ``bundled``), then in the Hugging Face cache
(no request), then on the Hub; found nowhere, the error says where the official checkpoint is published and how to
install it. A loaded model carries ``model.card`` (:class:`~vaezoo.hub.card.ModelCardInfo`: metadata and where it
came from) and ``model.card_metadata``.

A config never imports code: the model is rebuilt with :func:`vaezoo.config.build`, which only accepts
registered class paths, and its weights are loaded strictly from safetensors.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..config import build
from ..errors import CheckpointError, ConfigError, VaezooError
from .card import ModelCardInfo
from .catalog import bundled_folder, install_hint, pretrained_name
from .downloading import cached_snapshot, fetch
from .format import (
    CONFIG_NAME,
    HF_HUB_PREFIX,
    LOCAL_DIR_PREFIX,
    WEIGHTS_NAME,
    check_weights_file,
    first_line,
    read_config,
)
from .names import pretrained_names, resolve_name
from .store import installed_folder


def load(name: str, device: Any = "cpu", revision: str | None = None) -> nn.Module:
    """A ready model in eval mode on ``device``.

    ``name``: a registered pretrained name (or a preset whose weights exactly one pretrained entry publishes),
    ``hf-hub:org/repo[@revision]``, ``local-dir:PATH`` or a folder.
    ``revision`` overrides the revision of a pretrained name or of an hf-hub spec.
    """
    if isinstance(name, os.PathLike):
        name = os.fspath(name)
    if not isinstance(name, str):
        raise VaezooError(f"vaezoo.load expects a name string or a folder path, got {type(name).__name__}")
    if name.startswith(LOCAL_DIR_PREFIX):
        path = name[len(LOCAL_DIR_PREFIX) :]
        if not path:
            raise CheckpointError("local-dir: needs a path, e.g. local-dir:./my-model")
        folder = model_folder(Path(path).expanduser(), name)
        return load_folder(folder, device, where=name, location=str(folder.absolute()))
    if not name.startswith(HF_HUB_PREFIX) and _looks_like_path(name):  # a folder, as timm and diffusers take them
        folder = model_folder(Path(name).expanduser(), name)
        return load_folder(folder, device, where=name, location=str(folder.absolute()))
    if name.startswith(HF_HUB_PREFIX):
        from huggingface_hub import constants

        repo_id, rev = resolve_name(name, revision)
        folder = fetch(repo_id, rev, label=name)
        origin = "hf-cache" if constants.is_offline_mode() else "hub"
        return load_folder(
            folder, device, where=f"{HF_HUB_PREFIX}{repo_id}@{rev}", origin=origin, location=f"{repo_id}@{folder.name}"
        )
    return load_pretrained(name, device, revision)


def load_pretrained(name: str, device: Any = "cpu", revision: str | None = None) -> nn.Module:
    """A registered pretrained name (or a preset that exactly one pretrained entry uses): from the local store, else
    the folder that ships with its package (the entry's ``bundled``), else the Hugging Face cache, else the Hub.

    ``revision`` (a Hub branch, tag or commit) skips the store and the bundled folder, which hold one version each.
    """
    name = pretrained_name(name)  # unknown name: one line with close matches, before anything else
    if revision is None:
        folder = installed_folder(name)
        if folder is not None:
            return load_folder(folder, device, where=f"{name} (installed in {folder})", origin="store", name=name)
        folder = bundled_folder(name)
        if folder is not None:
            return load_folder(folder, device, where=f"{name} (shipped in {folder})", origin="bundled", name=name)
    repo_id, rev = resolve_name(name, revision)
    where = f"{name} ({HF_HUB_PREFIX}{repo_id}@{rev})"
    folder = cached_snapshot(repo_id, rev)
    if folder is not None:
        return load_folder(
            folder, device, where=where, origin="hf-cache", location=f"{repo_id}@{folder.name}", name=name
        )
    folder = fetch(repo_id, rev, label=name, hint=install_hint(name))
    return load_folder(folder, device, where=where, origin="hub", location=f"{repo_id}@{folder.name}", name=name)


def from_pretrained(
    name_or_path: str | os.PathLike,
    revision: str | None = None,
    device: Any = "cpu",
    *,
    expected_class: type | None = None,
) -> nn.Module:
    """Load a saved model from a folder or a Hub repo id ``org/name`` (or any name :func:`load` accepts).

    ``expected_class``: refuse a model of another class (``ConvVAE.from_pretrained`` passes itself).
    """
    text = os.fspath(name_or_path)
    if Path(text).expanduser().is_dir():
        folder = model_folder(Path(text).expanduser(), text)
        model = load_folder(folder, device, where=text, location=str(folder.absolute()))
    elif text.startswith((HF_HUB_PREFIX, LOCAL_DIR_PREFIX)) or text in pretrained_names() or _is_preset(text):
        model = load(text, device=device, revision=revision)
    elif re.fullmatch(r"[\w.\-]+/[\w.\-]+", text):
        model = load(f"{HF_HUB_PREFIX}{text}", device=device, revision=revision)
    else:
        raise CheckpointError(f"{text!r} is neither a model folder, a Hub repo id (org/name) nor a pretrained name")
    if expected_class is not None and not isinstance(model, expected_class):
        raise CheckpointError(f"{text} holds a {type(model).__name__}, not a {expected_class.__name__}")
    return model


def load_folder(
    folder: Path,
    device: Any,
    where: str,
    *,
    origin: str = "local-dir",
    location: str | None = None,
    name: str | None = None,
) -> nn.Module:
    """The model saved in ``folder``, on ``device`` and in eval mode; ``where`` names it in error messages.

    ``origin``, ``location`` (default: the folder) and ``name`` go to ``model.card`` (where it was loaded from).
    """
    device = _device(device)
    if not folder.is_dir():
        raise CheckpointError(f"{where}: no such model folder")
    config = read_config(folder, where)
    weights = folder / WEIGHTS_NAME
    check_weights_file(weights, config["weights"], where)
    _check_plugins(config, where)
    try:
        model = build(config["model"])
    except ConfigError as exc:
        raise ConfigError(f"{where}/{CONFIG_NAME}: {exc}") from exc
    model.to(device)
    _load_weights(model, weights, device, where)
    model.eval()
    metadata = config["metadata"]
    model.card_metadata = metadata
    model.card = ModelCardInfo.from_metadata(metadata, origin=origin, location=location or str(folder), name=name)
    if metadata.get("preset"):
        model.preset = metadata["preset"]
    return model


def _is_preset(name: str) -> bool:
    from ..plugins import get_registry

    return name in get_registry().names("preset")


def _looks_like_path(name: str) -> bool:
    """A folder that exists, or a name spelt as a path (``./x``, ``~/x``, ``/x``, ``runs/x``; a pretrained name has no
    slash, and a Hub repo is written ``hf-hub:org/name``). A registered pretrained name wins over a folder of that
    name in the working directory."""
    if name.startswith((".", "~", os.sep)) or os.sep in name:
        return True
    return Path(name).is_dir() and name not in pretrained_names()


def model_folder(path: Path, where: str) -> Path:
    """The saved-model folder that ``path`` means: itself, or the ``model/`` of a run folder written by ``vaezoo
    fit``. One line when it is neither."""
    if (path / CONFIG_NAME).is_file():
        return path
    if (path / "model" / CONFIG_NAME).is_file():
        return path / "model"
    if not path.is_dir():
        hub = (
            f" (a Hub repo is written {HF_HUB_PREFIX}{where})"
            if where.count("/") == 1 and not path.parent.is_dir()
            else ""
        )
        raise CheckpointError(f"{where}: no such model folder{hub}")
    if (path / "config.yaml").is_file():
        raise CheckpointError(
            f"{where}: a run folder without a saved model (fit writes model/ when it ends); vaezoo evaluate and "
            "vaezoo sample read its last checkpoint"
        )
    raise CheckpointError(f"{where}: missing {CONFIG_NAME}: not a saved model folder (nor a run folder with model/)")


def _check_plugins(config: dict, where: str) -> None:
    """Components the config names that no loaded plugin provides, when ``config.json`` records where they came from
    (``plugins``, written since that record exists): one line naming the distribution to install."""
    from ..plugins import BLOCK_ENV, blocked_plugins, get_registry, plugin_infos

    record = config.get("plugins")
    if not isinstance(record, dict):
        return  # saved before the record existed: build() names the unknown component
    registry = get_registry()
    failed = {info.name: info.error for info in plugin_infos(failed=True) if info.error}
    needed: dict[str, list[str]] = {}
    for component, source in record.items():
        if not isinstance(source, dict) or registry.find_class(component) is not None:
            continue
        dist, plugin = source.get("distribution"), source.get("plugin")
        if plugin in blocked_plugins():
            provider = f" (from {dist})" if dist else ""
            needed.setdefault(f"plugin {plugin!r}{provider}, which {BLOCK_ENV} blocks,", []).append(component)
        elif plugin in failed:
            needed.setdefault(f"plugin {plugin!r}, which failed to load ({failed[plugin]}),", []).append(component)
        elif dist:
            version = f"=={source['version']}" if source.get("version") else ""
            needed.setdefault(f"plugin {dist} (pip install {dist}{version})", []).append(component)
        else:
            needed.setdefault(f"the plugin {plugin!r} (it was registered in code, not installed)", []).append(component)
    if needed:
        parts = [f"{what} for {', '.join(names)}" for what, names in needed.items()]
        raise ConfigError(f"{where}: needs {'; '.join(parts)}")


def _device(device: Any) -> torch.device:
    try:
        return torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise VaezooError(f"invalid device {device!r}: {first_line(exc)}") from exc


def _load_weights(model: nn.Module, path: Path, device: torch.device, where: str) -> None:
    from safetensors import SafetensorError
    from safetensors.torch import load_model

    try:
        missing, unexpected = load_model(model, str(path), strict=False, device=str(device))
    except SafetensorError as exc:
        raise CheckpointError(f"{where}: {WEIGHTS_NAME} is not a valid safetensors file ({first_line(exc)})") from exc
    except RuntimeError as exc:  # shape mismatches from load_state_dict
        text = str(exc)
        found = re.findall(r"size mismatch for [^\n]*", text)
        detail = found[0].rstrip(".") if found else first_line(exc)
        if len(found) > 1:
            detail += f" (and {len(found) - 1} more)"
        raise CheckpointError(f"{where}: {WEIGHTS_NAME} does not fit the model: {detail}") from exc
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing keys: {_key_list(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {_key_list(unexpected)}")
        raise CheckpointError(f"{where}: {WEIGHTS_NAME} does not match {CONFIG_NAME}: {'; '.join(parts)}")


def _key_list(keys, limit: int = 8) -> str:
    keys = sorted(keys)
    return ", ".join(keys[:limit]) + (f" ... ({len(keys)} in all)" if len(keys) > limit else "")
