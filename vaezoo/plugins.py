"""The plugin manager: discovery through the ``vaezoo`` entry-point group, blocking, listing.

Environment variables:

- ``VAEZOO_DISABLE_PLUGIN_AUTOLOAD=1``: load only the plugins shipped with vaezoo itself
  (third-party entry points are ignored; plugins registered in code still work).
- ``VAEZOO_BLOCK_PLUGINS=name1,name2``: never load these plugins (any plugin, built-in paper plugins included, but
  ``core``: vaezoo's own generic components, which every assembled model and preset builds on, cannot be blocked;
  naming it is one warning line and it is loaded).

One plugin cannot break the others: a plugin that fails to import, whose hooks raise, or that registers a name
another plugin registered first is skipped as a whole (none of its components is registered), reported once as one
warning line on stderr that names it and how to block it, and listed as failed by ``vaezoo plugins``. Built-in
plugins load first, so a third-party plugin can never shadow a built-in component.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata as importlib_metadata
from typing import Any

import pluggy

from . import hookspecs
from .errors import VaezooError
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
    #: why the plugin was skipped (None: loaded)
    error: str | None = None


_lock = threading.RLock()
_manager: pluggy.PluginManager | None = None
_infos: dict[str, PluginInfo] = {}
_registry: Registry | None = None
_failed: dict[str, PluginInfo] = {}
_warned: set[tuple[str, str]] = set()


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() not in ("", "0", "false", "no", "off")


#: plugins that VAEZOO_BLOCK_PLUGINS cannot block: the core's own components, the base every other plugin builds on
UNBLOCKABLE = frozenset(DEFAULT_PLUGINS)


def _requested_blocks() -> set[str]:
    return {n.strip() for n in os.environ.get(BLOCK_ENV, "").split(",") if n.strip()}


def blocked_plugins() -> set[str]:
    """The plugins ``VAEZOO_BLOCK_PLUGINS`` blocks (never those in :data:`UNBLOCKABLE`)."""
    return _requested_blocks() - UNBLOCKABLE


def get_plugin_manager() -> pluggy.PluginManager:
    """The process-wide plugin manager, with entry-point plugins loaded."""
    global _manager
    with _lock:
        if _manager is None:
            pm = pluggy.PluginManager("vaezoo")
            pm.add_hookspecs(hookspecs)
            for name in sorted(_requested_blocks() & UNBLOCKABLE):
                print(
                    f"warning: {BLOCK_ENV} names {name!r}, which cannot be blocked (vaezoo's own components, which "
                    "every assembled model builds on); it is loaded",
                    file=sys.stderr,
                )
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
    found = []
    for ep in importlib_metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = getattr(ep, "dist", None)
        dist_name = dist.metadata["Name"] if dist is not None else None
        found.append((dist_name != _BUILTIN_DISTRIBUTION, ep, dist_name, dist.version if dist is not None else None))
    for third_party, ep, dist_name, version in sorted(found, key=lambda f: f[0]):  # built-in plugins first
        info = PluginInfo(ep.name, dist_name, version, not third_party)
        if pm.is_blocked(ep.name) or pm.get_plugin(ep.name) is not None:
            if pm.get_plugin(ep.name) is not None and _infos.get(ep.name) != info:  # two plugins of one name
                _fail(info, f"another plugin is already named {ep.name!r} ({_infos[ep.name].distribution})")
            continue
        if third_party and not autoload:
            continue
        try:
            pm.register(ep.load(), name=ep.name)
        except Exception as exc:  # a broken plugin is skipped, never fatal: the others still work
            _fail(info, f"{type(exc).__name__}: {_first_line(exc)}")
            continue
        _infos[ep.name] = info


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _fail(info: PluginInfo, reason: str) -> None:
    """Record a skipped plugin and say so once, in one line that names it and how to block it."""
    from dataclasses import replace

    _failed[info.name] = replace(info, error=reason)
    where = f" ({info.distribution} {info.version})" if info.distribution else ""
    if (info.name, reason) not in _warned:
        _warned.add((info.name, reason))
        print(
            f"warning: plugin {info.name!r}{where} is skipped: {reason}; {BLOCK_ENV}={info.name} stops loading it",
            file=sys.stderr,
        )


def get_registry() -> Registry:
    """The registry filled by every loaded plugin (built lazily, rebuilt after plugin changes)."""
    global _registry
    with _lock:
        if _registry is None:
            _registry = _build_registry(get_plugin_manager())
        return _registry


def _build_registry(pm: pluggy.PluginManager) -> Registry:
    """Each plugin's hooks are called on their own (pluggy's combined call would lose who registered what), into a
    scratch registry first: a plugin whose hooks raise, or that clashes with a name registered before it, is skipped
    whole and reported (:func:`_fail`), so that no half of a plugin is ever registered."""
    from .interfaces import INTERFACES  # torch, only once a registry is built (not for --version)

    blocked = sorted(blocked_plugins())
    note = f"{BLOCK_ENV} blocks {', '.join(blocked)}, whose names are not loaded" if blocked else ""
    registry = Registry(INTERFACES, absent_note=note)
    order = [name for name, plugin in pm.list_name_plugin() if plugin is not None]
    order.sort(key=lambda name: not _infos.get(name, PluginInfo(name, None, None, False)).builtin)
    for owner in order:
        calls: list[tuple[str, Any, str | None, dict]] = []
        try:
            for hook, wrap in (
                ("register_components", lambda kind, target, name=None, **meta: (kind, target, name, meta)),
                ("register_presets", lambda name, factory, **meta: ("preset", factory, name, meta)),
                ("register_pretrained", lambda name, **meta: ("pretrained", dict(meta), name, meta)),
            ):
                for impl in getattr(pm.hook, hook).get_hookimpls():
                    if impl.plugin_name == owner:
                        impl.function(register=lambda *a, _w=wrap, _c=calls, **kw: _c.append(_w(*a, **kw)))
            scratch = registry.copy()
            for kind, target, name, meta in calls:
                scratch.register(kind, target, name, plugin=owner, **meta)
        except Exception as exc:  # a broken or clashing plugin is skipped, never fatal: the others still work
            info = _infos.get(owner, PluginInfo(owner, None, None, False))
            _fail(info, f"{type(exc).__name__}: {_first_line(exc)}" if not isinstance(exc, VaezooError) else str(exc))
            continue
        registry = scratch
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
        _failed.clear()
        invalidate()


def register_plugin(plugin: object, name: str | None = None) -> str:
    """Register a plugin object (a module or an instance with hook implementations) in code."""
    pm = get_plugin_manager()
    registered = pm.register(plugin, name=name)
    if registered is None:
        raise ValueError(f"plugin {name!r} is blocked")
    _infos[registered] = PluginInfo(registered, None, None, False)
    _failed.pop(registered, None)  # a new registration under a name is judged afresh when the registry is built
    invalidate()
    return registered


def unregister_plugin(name: str) -> None:
    pm = get_plugin_manager()
    pm.unregister(name=name)
    _infos.pop(name, None)
    _failed.pop(name, None)  # a plugin that is gone is neither loaded nor failed
    invalidate()


@contextlib.contextmanager
def plugin(obj: object, name: str | None = None) -> Iterator[str]:
    """Register a plugin for the duration of a ``with`` block (handy in tests)."""
    registered = register_plugin(obj, name)
    try:
        yield registered
    finally:
        unregister_plugin(registered)


def plugin_infos(failed: bool = False) -> list[PluginInfo]:
    """The loaded plugins; with ``failed``, also the skipped ones (their ``error`` says why)."""
    pm = get_plugin_manager()
    out = []
    for name, obj in pm.list_name_plugin():
        if obj is None or name in _failed:  # blocked, or skipped when the registry was built
            continue
        out.append(_infos.get(name, PluginInfo(name, None, None, False)))
    if failed:
        out += list(_failed.values())
    return sorted(out, key=lambda i: (not i.builtin, i.name))
