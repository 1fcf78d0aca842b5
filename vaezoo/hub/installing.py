"""Installing an official checkpoint under a pretrained name: ``vaezoo convert SOURCE CHECKPOINT --pretrained NAME``.

Any registered converter (kind ``converter``) can install under any registered pretrained name whose preset it
matches. The converter entry is ``register("converter", convert, name=..., checkpoint_spec=..., argument_name=...)``:

- ``convert(checkpoint, out_dir) -> out_dir``: writes a saved-model folder (required, as for plain conversion);
- ``checkpoint_spec(checkpoint) -> spec`` (optional): the vaezoo model spec the checkpoint describes, so that a
  mismatch is refused before anything is converted;
- ``argument_name(path) -> str | None`` (optional): the checkpoint's own argument name for a spec path such as
  ``encoder_channels`` or ``likelihood.num_bits``, so that a mismatch names what its user knows.

Whatever the converter provides, the converted folder's spec is compared with the preset's too, and the result is
loaded strictly before it replaces the store folder (:mod:`.store`) in one rename: an interrupted or refused
install leaves the store as it was.
"""

from __future__ import annotations

import copy
import json
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import ConfigError, VaezooError
from ..plugins import get_registry
from ..progress import progress_bar
from .catalog import entry_card, pretrained_entry
from .format import CARD_NAME, CONFIG_NAME, check_metadata, first_line, read_config, sha256
from .loading import load_folder
from .saving import _check_replaceable, _replace_dir
from .store import store_path

_ABSENT = object()
_MAX_LISTED = 8


def install_pretrained(source: str, checkpoint: str | Path, name: str, *, progress=None) -> Path:
    """Convert ``checkpoint`` with converter ``source`` and install it as pretrained ``name``; returns the folder.

    Refused (a one-line :class:`~vaezoo.errors.VaezooError`, the store untouched) when the checkpoint's
    architecture is not the one the entry's preset describes.
    """
    registry = get_registry()
    converter = registry.get("converter", source)
    entry = pretrained_entry(name)
    checkpoint = Path(checkpoint)
    preset = entry.target.get("preset")
    if not preset:
        raise ConfigError(f"pretrained {name!r} (plugin {entry.plugin}) names no preset to check a checkpoint against")
    expected = resolved_spec(registry.get("preset", preset).target(), f"preset {preset}")
    argument_name = converter.metadata.get("argument_name")
    refuse = _mismatch_check(str(checkpoint), name, preset, expected, argument_name)
    target = store_path(name)
    _check_replaceable(target)
    with progress_bar(progress) as bars:
        task = bars.add_task(f"{name}: checking {checkpoint.name}", total=4)
        describe = converter.metadata.get("checkpoint_spec")
        if describe is not None:
            refuse(resolved_spec(describe(str(checkpoint)), str(checkpoint)))
        bars.update(task, advance=1, description=f"{name}: converting {checkpoint.name} ({source})")
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".install", dir=target.parent))
        try:
            folder = Path(converter.target(str(checkpoint), str(staging / "model")) or staging / "model")
            config = read_config(folder, f"{source} conversion of {checkpoint}")
            refuse(resolved_spec(config["model"], f"{source} conversion of {checkpoint}"))
            bars.update(task, advance=1, description=f"{name}: recording provenance")
            converted = config["metadata"]
            config["metadata"] = check_metadata(
                {
                    **converted,
                    **entry_card(entry),
                    "pretrained": name,
                    "converted_from": converted.get("source") or f"{checkpoint.name} ({source} converter)",
                    "checkpoint_sha256": sha256(checkpoint),
                }
            )
            _rewrite_card(folder, config)
            bars.update(task, advance=1, description=f"{name}: verifying")
            load_folder(folder, "cpu", where=f"{name} (converted from {checkpoint})")  # strict, as users load it
            _replace_dir(folder, target)
            bars.update(task, advance=1, description=f"{name}: installed")
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return target


def resolved_spec(spec: Any, where: str) -> dict:
    """``spec`` with every default filled in, as ``model.config`` of the model it builds (nothing is built)."""
    from jsonargparse import ArgumentParser

    from ..config import INTERFACES, namespace_to_dict, resolve_class_paths, restrict_value_imports, short_spec

    registry = get_registry()
    restrict_value_imports(registry)
    if not isinstance(spec, dict) or "class_path" not in spec:
        raise ConfigError(f"{where}: not a model spec (no class_path)")
    resolved = resolve_class_paths(copy.deepcopy(spec), registry, "model")
    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--model", type=INTERFACES["model"], required=True)
    try:
        cfg = parser.parse_object({"model": resolved})
    except Exception as exc:  # jsonargparse's nested messages
        raise ConfigError(f"{where}: {first_line(exc)}") from exc
    return json.loads(json.dumps(short_spec(namespace_to_dict(cfg["model"]), registry)))


def spec_differences(found: Any, expected: Any, path: str = "") -> list[tuple[str, Any, Any]]:
    """``(path, found value, expected value)`` where two specs differ; paths skip ``init_args``
    (``encoder_channels``, ``likelihood.num_bits``; a component's own path for its class_path)."""
    if _is_spec(found) and _is_spec(expected):
        if found["class_path"] != expected["class_path"]:
            return [(path or "class_path", found, expected)]
        return spec_differences(found.get("init_args") or {}, expected.get("init_args") or {}, path)
    if isinstance(found, dict) and isinstance(expected, dict) and not _is_spec(found) and not _is_spec(expected):
        keys = list(expected) + [k for k in found if k not in expected]
        out: list[tuple[str, Any, Any]] = []
        for key in keys:
            out += spec_differences(
                found.get(key, _ABSENT), expected.get(key, _ABSENT), f"{path}.{key}" if path else key
            )
        return out
    return [] if found == expected else [(path, found, expected)]


def _mismatch_check(
    checkpoint: str, name: str, preset: str, expected: dict, argument_name: Callable[[str], str | None] | None
) -> Callable[[dict], None]:
    def refuse(found: dict) -> None:
        differences = spec_differences(found, expected)
        if not differences:
            return
        listed: dict[str, tuple[str, bool]] = {}  # label -> (text, from a component rather than a value)
        for path, a, b in differences:
            label = (argument_name(path) if argument_name is not None else None) or path
            component = _is_spec(a) or _is_spec(b)
            if label not in listed or (listed[label][1] and not component):  # a value says more than a class
                listed[label] = (f"{label} {_value_text(a)} != {_value_text(b)}", component)
        items = [text for text, _ in listed.values()]
        more = f" (and {len(items) - _MAX_LISTED} more)" if len(items) > _MAX_LISTED else ""
        raise VaezooError(
            f"{checkpoint} does not match pretrained {name} (preset {preset}): {', '.join(items[:_MAX_LISTED])}{more}"
        )

    return refuse


def _rewrite_card(folder: Path, config: dict) -> None:
    from .card import model_card

    (folder / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    model_card(config).save(folder / CARD_NAME)


def _is_spec(value: Any) -> bool:
    return isinstance(value, dict) and "class_path" in value


def _value_text(value: Any) -> str:
    if value is _ABSENT or value is None:
        return "none"
    if _is_spec(value):
        return str(value["class_path"])
    if isinstance(value, (list, tuple)):
        return json.dumps(value, separators=(",", ":"))
    return str(value)
