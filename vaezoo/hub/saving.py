"""Writing a saved-model folder: :func:`save_pretrained` and the atomic replacement of an existing folder."""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

from torch import nn

from .._version import __version__
from ..errors import CheckpointError, ConfigError
from .card import model_card
from .format import CARD_NAME, CONFIG_NAME, FORMAT, FORMAT_VERSION, WEIGHTS_NAME, check_metadata, sha256


def save_pretrained(model: nn.Module, save_directory: str | os.PathLike, **card_metadata: Any) -> Path:
    """Write ``config.json``, ``model.safetensors`` and ``README.md`` into ``save_directory``.

    ``card_metadata``: optional ``preset``, ``description``, ``license``, ``license_link``, ``dataset``,
    ``metrics`` (a list of ``{"name", "value", "protocol", "unit"?, "split"?, "source"?}``), ``source``, and any
    other JSON values. The folder is written atomically: files go to a temporary folder next to it, which
    replaces it only once complete. An existing folder is replaced only if it is a saved vaezoo model.
    """
    from safetensors.torch import save_model

    spec = _model_spec(model)
    metadata = check_metadata({"preset": getattr(model, "preset", None), **card_metadata})
    target = Path(save_directory).expanduser().absolute()
    _check_replaceable(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.mkdir()  # not mkdtemp: the folder gets mkdir's mode under the user's umask
    try:
        weights = tmp / WEIGHTS_NAME
        save_model(model, str(weights), metadata={"format": "pt"})
        config = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "vaezoo_version": __version__,
            "model": spec,
            "plugins": component_plugins(spec),
            "weights": {"sha256": sha256(weights), "size": weights.stat().st_size},
            "metadata": metadata,
        }
        (tmp / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        model_card(config).save(tmp / CARD_NAME)
        shutil.copymode(tmp / CONFIG_NAME, weights)  # safetensors writes a private file; use open()'s mode
        _replace_dir(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def component_plugins(spec: Any) -> dict[str, dict[str, str | None]]:
    """Which plugin, from which distribution at which version, provides each component a spec names: recorded in
    ``config.json`` so that loading without that plugin can say what to install."""
    from ..plugins import get_registry, plugin_infos

    registry, infos = get_registry(), {info.name: info for info in plugin_infos()}
    found: dict[str, dict[str, str | None]] = {}

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            entry = registry.find_class(value["class_path"]) if isinstance(value.get("class_path"), str) else None
            if entry is not None:
                info = infos.get(entry.plugin)
                found[entry.name] = {
                    "plugin": entry.plugin,
                    "distribution": info.distribution if info else None,
                    "version": info.version if info else None,
                }
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(spec)
    return dict(sorted(found.items()))


def _model_spec(model: nn.Module) -> dict:
    spec = getattr(model, "config", None)
    if not isinstance(spec, dict) or "class_path" not in spec:
        raise ConfigError(
            f"cannot save a {type(model).__name__}: it has no model.config spec (build models with vaezoo.create or vaezoo.build)"
        )
    try:
        return json.loads(json.dumps(spec))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"model.config of {type(model).__name__} is not JSON data: {exc}") from exc


def _check_replaceable(target: Path) -> None:
    if not target.exists():
        return
    if not target.is_dir():
        raise CheckpointError(f"cannot save a model to {target}: it is a file")
    if any(target.iterdir()) and _read_format(target / CONFIG_NAME) != FORMAT:
        raise CheckpointError(f"refusing to replace {target}: it exists and is not a saved vaezoo model")


def _read_format(path: Path) -> str | None:
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("format")
    except (OSError, ValueError, AttributeError):
        return None


def _replace_dir(tmp: Path, target: Path) -> None:
    """Move the complete ``tmp`` folder to ``target``; an old ``target`` is removed only after that succeeded."""
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.old")
        os.rename(target, old)
    try:
        os.rename(tmp, target)
    except BaseException:
        if old is not None:
            os.rename(old, target)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
