"""Model specs: build a model from a ``class_path``/``init_args`` dict, only through the registry.

A *spec* is the jsonargparse form of a component: ``{"class_path": NAME_OR_PATH, "init_args": {...}}``
where nested components are specs too. Every ``class_path`` must name a registered class (by its
registry name or its full import path): a spec is data, never a way to import arbitrary code, which
is what makes a downloaded ``config.json`` safe to open.
"""

from __future__ import annotations

import copy
import inspect
import re
import typing
from typing import Any

from .errors import ConfigError
from .interfaces import INTERFACES
from .plugins import get_registry
from .registry import Registry


def resolve_class_paths(spec: Any, registry: Registry, where: str = "model") -> Any:
    """Return a copy of ``spec`` with every ``class_path`` replaced by the registered full path.

    Raises :class:`ConfigError` naming the key of any class_path that is not registered.
    """
    if isinstance(spec, dict):
        out = {}
        for key, value in spec.items():
            sub = where if key in ("init_args", "dict_kwargs") else f"{where}.{key}"
            out[key] = resolve_class_paths(value, registry, sub)
        if "class_path" in out:
            class_path = out["class_path"]
            if not isinstance(class_path, str):
                raise ConfigError(f"{where}.class_path must be a string, got {type(class_path).__name__}")
            entry = registry.find_class(class_path)
            if entry is None:
                known = sorted({e.name for k in registry.kinds() for e in registry.entries(k) if e.class_path})
                raise ConfigError(f"{where}: " + registry.unknown_message("component", class_path, known))
            out["class_path"] = entry.class_path
        return out
    if isinstance(spec, list):
        return [resolve_class_paths(v, registry, f"{where}[{i}]") for i, v in enumerate(spec)]
    return spec


def restrict_value_imports(registry: Registry) -> None:
    """Let jsonargparse import only registered component classes when it reads a class_path value
    (recipes, CLI overrides, config.json): anything else is refused before it is imported."""
    from jsonargparse import set_parsing_settings

    allowed = set()
    for kind in registry.kinds():
        for entry in registry.entries(kind):
            if entry.class_path:
                parts = entry.target.__module__.split(".")
                for depth in range(1, len(parts) + 1):  # the defining module and re-exporting parents
                    allowed.add(".".join(parts[:depth] + [entry.target.__qualname__]))
    set_parsing_settings(import_path_denylist=["*"], import_path_allowlist=sorted(allowed))


def current_class_paths(spec: Any, registry: Registry) -> Any:
    """Replace every class_path that is a registry alias (the full path a component had before it moved) by the
    component's current full path; everything else is left as it is."""
    if isinstance(spec, dict):
        out = {k: current_class_paths(v, registry) for k, v in spec.items()}
        class_path = out.get("class_path")
        if isinstance(class_path, str) and "." in class_path:
            entry = registry.find_class(class_path)
            if entry is not None and class_path != entry.class_path and class_path not in (entry.name,):
                out["class_path"] = entry.class_path
        return out
    if isinstance(spec, list):
        return [current_class_paths(v, registry) for v in spec]
    return spec


def merge_spec(base: Any, override: Any) -> Any:
    """``override`` laid over ``base`` as overlays compose: mappings merge key by key, a component whose
    ``class_path`` changes is replaced whole (its old arguments belong to the old class), anything else replaces."""
    if not isinstance(base, dict) or not isinstance(override, dict):
        return copy.deepcopy(override)
    if "class_path" in override and override["class_path"] != base.get("class_path"):
        return copy.deepcopy(override)
    merged = copy.deepcopy(base)
    for key, value in override.items():
        merged[key] = merge_spec(merged[key], value) if key in merged else copy.deepcopy(value)
    return merged


def expand_preset(spec: Any, registry: Registry, where: str = "model") -> Any:
    """``{preset: NAME, init_args: {...}}`` -> the preset's model spec with those init_args laid over it
    (:func:`merge_spec`): a recipe names a registered architecture and changes only what differs."""
    if not isinstance(spec, dict) or "preset" not in spec:
        return spec
    name = spec["preset"]
    if not isinstance(name, str):
        raise ConfigError(f"{where}.preset: expected a preset name, got {name!r}")
    unknown = set(spec) - {"preset", "init_args"}
    if unknown:
        raise ConfigError(f"{where}: a preset takes init_args only, got {', '.join(sorted(map(str, unknown)))}")
    if name not in registry.names("preset"):
        raise ConfigError(f"{where}.preset: " + registry.unknown_message("preset", name, registry.names("preset")))
    overrides = spec.get("init_args", {})
    if not isinstance(overrides, dict):
        raise ConfigError(f"{where}.init_args: expected a mapping of arguments, got {type(overrides).__name__}")
    return merge_spec(registry.get("preset", name).target(), {"init_args": overrides})


def expand_recipe_presets(document: Any, registry: Registry) -> Any:
    """A recipe or overlay whose ``model`` names a preset, or a ``--model`` value that does, with the preset
    expanded (:func:`expand_preset`); anything else as it is."""
    if isinstance(document, dict) and isinstance(document.get("model"), dict) and "preset" in document["model"]:
        return {**document, "model": expand_preset(document["model"], registry)}
    if isinstance(document, dict) and "preset" in document and "class_path" not in document:
        return expand_preset(document, registry)
    return document


#: the jsonargparse parser mode of vaezoo's command line: YAML, with moved class paths brought up to date, so a
#: recipe or a run's config.yaml written before a component moved still parses (``vaezoo fit ... --resume``)
RECIPE_MODE = "vaezoo_yaml"


def register_recipe_mode() -> str:
    """Register :data:`RECIPE_MODE` with jsonargparse (idempotent) and return its name."""
    from jsonargparse import get_loader, set_dumper, set_loader
    from jsonargparse._loaders_dumpers import dumpers, get_loader_exceptions

    if RECIPE_MODE not in dumpers:
        yaml_load = get_loader("yaml")

        def load(text: str) -> Any:
            registry = get_registry()
            return current_class_paths(expand_recipe_presets(yaml_load(text), registry), registry)

        set_loader(RECIPE_MODE, load, exceptions=get_loader_exceptions("yaml"))
        set_dumper(RECIPE_MODE, dumpers["yaml"])
    return RECIPE_MODE


def short_spec(spec: Any, registry: Registry) -> Any:
    """Replace full class paths by registry names (for human-readable saved configs)."""
    if isinstance(spec, dict):
        out = {k: short_spec(v, registry) for k, v in spec.items()}
        if isinstance(out.get("class_path"), str):
            entry = registry.find_class(out["class_path"])
            if entry is not None:
                out["class_path"] = entry.name
        return out
    if isinstance(spec, list):
        return [short_spec(v, registry) for v in spec]
    return spec


def namespace_to_dict(value: Any) -> Any:
    """jsonargparse Namespace (possibly nested) -> plain dict/list data."""
    from jsonargparse import Namespace

    if isinstance(value, Namespace):
        return {k: namespace_to_dict(v) for k, v in vars(value).items()}
    if isinstance(value, dict):
        return {k: namespace_to_dict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [namespace_to_dict(v) for v in value]
    return value


def build(spec: dict, *, kind: str = "model", registry: Registry | None = None) -> Any:
    """Instantiate a component of ``kind`` from its spec, validated against the registry.

    The returned model carries ``model.config``: the fully resolved spec (all defaults filled in),
    which rebuilds an identical architecture.
    """
    from jsonargparse import ArgumentParser

    registry = registry or get_registry()
    restrict_value_imports(registry)
    if kind == "model" and isinstance(spec, dict) and "preset" in spec and "class_path" not in spec:
        spec = expand_preset(spec, registry)  # a recipe's ``model: {preset: NAME, init_args: {...}}``
    if not isinstance(spec, dict) or "class_path" not in spec:
        wanted = "a class_path (or a preset)" if kind == "model" else "a class_path"
        got = (
            f"a mapping of {', '.join(map(str, spec)) or 'nothing'}" if isinstance(spec, dict) else type(spec).__name__
        )
        raise ConfigError(f"{kind} spec must be a mapping with {wanted}, got {got}")
    resolved = resolve_class_paths(copy.deepcopy(spec), registry, kind)
    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument(f"--{kind}", type=INTERFACES[kind], required=True)
    try:
        cfg = parser.parse_object({kind: resolved})
        component = getattr(parser.instantiate(cfg), kind)
    except Exception as exc:  # jsonargparse reports nested problems in long multi-line messages
        raise ConfigError(f"{kind}: {one_line(exc)}") from exc
    if kind == "model":
        component.config = short_spec(namespace_to_dict(cfg[kind]), registry)
    return component


def one_line(exc: BaseException, limit: int = 400) -> str:
    """The most specific line of a (possibly multi-line) error message."""
    text = str(exc).strip()
    lines = [ln.strip(" -") for ln in text.splitlines() if ln.strip()]
    if not lines:
        return type(exc).__name__
    # jsonargparse nests the real cause in the last lines ("... Got value: X")
    message = lines[0] if len(lines) == 1 else "; ".join(lines[:1] + lines[-2:])
    return message if len(message) <= limit else message[: limit - 3] + "..."


_KEY = re.compile(r'Parser key "([^"]+)"')
_EXPECTED = re.compile(r"Expected an? <class '([\w.]+)'>\. Got value: (.*)")
_BAD_CLASS = re.compile(r"(?:Expected a dot import path string|Problem with given class_path):? '?([^'\s:]+)'?")
_SUBTYPE = re.compile(r"<class 'vaezoo\.interfaces\.(\w+)'>")
_GIVEN = re.compile(r"Given value: (?:NestedArg\(key='class_path', val=')?(?:\{'class_path': ')?([^'\),}]+)")


def describe_parse_error(message: str, argv: list[str] | None = None) -> str:
    """Turn a (multi-line) jsonargparse error into one line naming the key and, for components,
    the registered choices of that kind."""
    keys = _KEY.findall(message)
    if not keys:
        return one_line(Exception(message))
    key = _full_key(keys[-1], argv or [])
    subtype = _SUBTYPE.search(message)
    bad_class = _BAD_CLASS.search(message)
    if bad_class or (subtype and "Given value" in message):
        given = _GIVEN.search(message)
        name = given.group(1) if given else (bad_class.group(1) if bad_class else "?")
        kind = next((k for k, cls in INTERFACES.items() if subtype and cls.__name__ == subtype.group(1)), None)
        if kind is None and "." not in key:
            section, kind = _parameter_kind(key.split(".")[-1])
            key = f"{section}.{key}" if section else key
        if kind is None and key.split(".")[0] in ("model", "objective"):
            kind = key.split(".")[0]
        if kind is None and key.split(".")[0] == "data":
            kind = "dataset"
        if get_registry().find_class(name) is not None or "NestedArg" in name:  # a known name: its arguments are wrong
            detail = _EXPECTED.search(message)
            what = f"expected {detail.group(1)}, got {detail.group(2).strip()!r}" if detail else "invalid arguments"
            subject = kind or "component" if "NestedArg" in name else name
            return f"{key}: {subject}: {what}"
        choices = get_registry().names(kind) if kind else []
        return f"{key}: " + get_registry().unknown_message(kind or "component", name, choices)
    expected = _EXPECTED.search(message)
    if expected:
        return f"{key}: expected {expected.group(1)}, got {expected.group(2).strip()!r}"
    return f"{key}: {one_line(Exception(message.split(':', 1)[-1]))}"


def _parameter_kind(name: str) -> tuple[str | None, str | None]:
    """(recipe section, component kind) of a constructor parameter called ``name`` in a registered
    model, objective or data module, read from its type hint (also inside Optional/Callable/list)."""

    def kinds_in(annotation) -> str | None:
        if isinstance(annotation, type):
            return next((k for k, cls in INTERFACES.items() if issubclass(annotation, cls)), None)
        for arg in typing.get_args(annotation):
            found = kinds_in(arg)
            if found:
                return found
        return None

    sections = {"model": "model", "objective": "objective", "dataset": "data"}
    registry = get_registry()
    for kind, section in sections.items():
        for entry in registry.entries(kind):
            try:
                hints = typing.get_type_hints(entry.target.__init__)
            except Exception:
                continue
            if name in inspect.signature(entry.target.__init__).parameters and name in hints:
                found = kinds_in(hints[name])
                if found:
                    return section, found
    return None, None


def _full_key(key: str, argv: list[str]) -> str:
    """jsonargparse names nested keys relative to their class; recover the dotted path from argv."""
    for token in argv:
        option = token[2:].split("=", 1)[0] if token.startswith("--") else ""
        cleaned = option.replace(".init_args", "").replace(".class_path", "")
        if cleaned == key or cleaned.endswith("." + key):
            return cleaned
    return key
