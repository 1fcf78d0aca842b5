"""Loading a saved model: :func:`load` (by name), :func:`from_pretrained` (by folder, repo id or name) and the
strict reading of a saved-model folder into a ready model.

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
from .downloading import fetch
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


def load(name: str, device: Any = "cpu", revision: str | None = None) -> nn.Module:
    """A ready model in eval mode on ``device``.

    ``name``: a registered pretrained name, ``hf-hub:org/repo[@revision]`` or ``local-dir:PATH``.
    ``revision`` overrides the revision of a pretrained name or of an hf-hub spec.
    """
    if not isinstance(name, str):
        raise VaezooError(f"vaezoo.load expects a name string, got {type(name).__name__}")
    if name.startswith(LOCAL_DIR_PREFIX):
        path = name[len(LOCAL_DIR_PREFIX) :]
        if not path:
            raise CheckpointError("local-dir: needs a path, e.g. local-dir:./my-model")
        return load_folder(Path(path).expanduser(), device, where=name)
    repo_id, rev = resolve_name(name, revision)
    return load_folder(fetch(repo_id, rev, label=name), device, where=f"{HF_HUB_PREFIX}{repo_id}@{rev}")


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
        model = load_folder(Path(text).expanduser(), device, where=text)
    elif text.startswith((HF_HUB_PREFIX, LOCAL_DIR_PREFIX)) or text in pretrained_names():
        model = load(text, device=device, revision=revision)
    elif re.fullmatch(r"[\w.\-]+/[\w.\-]+", text):
        model = load(f"{HF_HUB_PREFIX}{text}", device=device, revision=revision)
    else:
        raise CheckpointError(f"{text!r} is neither a model folder, a Hub repo id (org/name) nor a pretrained name")
    if expected_class is not None and not isinstance(model, expected_class):
        raise CheckpointError(f"{text} holds a {type(model).__name__}, not a {expected_class.__name__}")
    return model


def load_folder(folder: Path, device: Any, where: str) -> nn.Module:
    """The model saved in ``folder``, on ``device`` and in eval mode; ``where`` names it in error messages."""
    device = _device(device)
    if not folder.is_dir():
        raise CheckpointError(f"{where}: no such model folder")
    config = read_config(folder, where)
    weights = folder / WEIGHTS_NAME
    check_weights_file(weights, config["weights"], where)
    try:
        model = build(config["model"])
    except ConfigError as exc:
        raise ConfigError(f"{where}/{CONFIG_NAME}: {exc}") from exc
    model.to(device)
    _load_weights(model, weights, device, where)
    model.eval()
    metadata = config["metadata"]
    model.card_metadata = metadata
    if metadata.get("preset"):
        model.preset = metadata["preset"]
    return model


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
