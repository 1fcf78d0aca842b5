"""The plugin manager: discovery through the ``vaezoo`` entry-point group, blocking, listing.

Environment variables:

- ``VAEZOO_DISABLE_PLUGIN_AUTOLOAD=1``: load only the plugins shipped with vaezoo itself
  (third-party entry points are ignored; plugins registered in code still work).
- ``VAEZOO_BLOCK_PLUGINS=name1,name2``: never load these plugins (built-in ones included).
"""

from __future__ import annotations

import contextlib
import importlib
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata as importlib_metadata
from typing import Any

import pluggy

from . import hookspecs
from .registry import Registry

ENTRY_POINT_GROUP = "vaezoo"
DISABLE_AUTOLOAD_ENV = "VAEZOO_DISABLE_PLUGIN_AUTOLOAD"
BLOCK_ENV = "VAEZOO_BLOCK_PLUGINS"
_BUILTIN_DISTRIBUTION = "vaezoo"
#: plugins inside the core package, loaded like any other (blockable by name) before the entry points
DEFAULT_PLUGINS: dict[str, str] = {"core": "vaezoo.components"}


@dataclass(frozen=True)
class PluginInfo:
    name: str
    distribution: str | None
    version: str | None
    builtin: bool


_lock = threading.RLock()
_manager: pluggy.PluginManager | None = None
_infos: dict[str, PluginInfo] = {}
_registry: Registry | None = None


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() not in ("", "0", "false", "no", "off")


def blocked_plugins() -> set[str]:
    return {n.strip() for n in os.environ.get(BLOCK_ENV, "").split(",") if n.strip()}


def get_plugin_manager() -> pluggy.PluginManager:
    """The process-wide plugin manager, with entry-point plugins loaded."""
    global _manager
    with _lock:
        if _manager is None:
            pm = pluggy.PluginManager("vaezoo")
            pm.add_hookspecs(hookspecs)
            for name in blocked_plugins():
                pm.set_blocked(name)
            _load_entry_points(pm)
            _manager = pm
        return _manager


def _load_entry_points(pm: pluggy.PluginManager) -> None:
    version = importlib_metadata.version(_BUILTIN_DISTRIBUTION)
    for name, module in DEFAULT_PLUGINS.items():
        if pm.is_blocked(name) or pm.get_plugin(name) is not None:
            continue
        pm.register(importlib.import_module(module), name=name)
        _infos[name] = PluginInfo(name, _BUILTIN_DISTRIBUTION, version, True)
    autoload = not _truthy(os.environ.get(DISABLE_AUTOLOAD_ENV))
    for ep in importlib_metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = getattr(ep, "dist", None)
        dist_name = dist.metadata["Name"] if dist is not None else None
        builtin = dist_name == _BUILTIN_DISTRIBUTION
        if pm.is_blocked(ep.name) or pm.get_plugin(ep.name) is not None:
            continue
        if not builtin and not autoload:
            continue
        plugin = ep.load()
        pm.register(plugin, name=ep.name)
        _infos[ep.name] = PluginInfo(ep.name, dist_name, dist.version if dist is not None else None, builtin)


def get_registry() -> Registry:
    """The registry filled by every loaded plugin (built lazily, rebuilt after plugin changes)."""
    global _registry
    with _lock:
        if _registry is None:
            _registry = _build_registry(get_plugin_manager())
        return _registry


def _build_registry(pm: pluggy.PluginManager) -> Registry:
    registry = Registry()
    # Each hook implementation is called on its own so that what it registers is tagged with its
    # plugin's name (pluggy's combined call would lose that).
    for impl in pm.hook.register_components.get_hookimpls():
        owner = impl.plugin_name

        def register(kind: str, target: Any, name: str | None = None, _owner: str = owner, **meta: Any) -> Any:
            return registry.register(kind, target, name, plugin=_owner, **meta)

        impl.function(register=register)
    for impl in pm.hook.register_presets.get_hookimpls():

        def register_preset(name: str, factory: Any, _owner: str = impl.plugin_name, **meta: Any) -> Any:
            return registry.register("preset", factory, name, plugin=_owner, **meta)

        impl.function(register=register_preset)
    for impl in pm.hook.register_pretrained.get_hookimpls():

        def register_pretrained(name: str, _owner: str = impl.plugin_name, **meta: Any) -> Any:
            return registry.register("pretrained", dict(meta), name, plugin=_owner, **meta)

        impl.function(register=register_pretrained)
    return registry


def invalidate() -> None:
    """Forget the registry so that the next :func:`get_registry` rebuilds it."""
    global _registry
    with _lock:
        _registry = None


def reset() -> None:
    """Forget the plugin manager too (re-reads entry points and environment variables)."""
    global _manager
    with _lock:
        _manager = None
        _infos.clear()
        invalidate()


def register_plugin(plugin: object, name: str | None = None) -> str:
    """Register a plugin object (a module or an instance with hook implementations) in code."""
    pm = get_plugin_manager()
    registered = pm.register(plugin, name=name)
    if registered is None:
        raise ValueError(f"plugin {name!r} is blocked")
    _infos[registered] = PluginInfo(registered, None, None, False)
    invalidate()
    return registered


def unregister_plugin(name: str) -> None:
    pm = get_plugin_manager()
    pm.unregister(name=name)
    _infos.pop(name, None)
    invalidate()


@contextlib.contextmanager
def plugin(obj: object, name: str | None = None) -> Iterator[str]:
    """Register a plugin for the duration of a ``with`` block (handy in tests)."""
    registered = register_plugin(obj, name)
    try:
        yield registered
    finally:
        unregister_plugin(registered)


def plugin_infos() -> list[PluginInfo]:
    pm = get_plugin_manager()
    out = []
    for name, obj in pm.list_name_plugin():
        if obj is None:  # blocked
            continue
        out.append(_infos.get(name, PluginInfo(name, None, None, False)))
    return sorted(out, key=lambda i: (not i.builtin, i.name))
