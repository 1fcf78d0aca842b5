"""vaezoo: a plugin-based zoo of deep hierarchical VAEs."""

from __future__ import annotations

from typing import Any

from ._version import __version__
from .errors import ConfigError, RegistryError, VaezooError
from .hookspecs import hookimpl
from .plugins import get_registry

__all__ = [
    "ConfigError",
    "RegistryError",
    "VaezooError",
    "__version__",
    "build",
    "create",
    "get_registry",
    "hookimpl",
    "list_components",
    "load",
]


def list_components(kind: str | None = None, pattern: str = "*") -> list[str]:
    """Registered component names of ``kind`` (all kinds when None) matching a wildcard pattern."""
    return [e.name for e in get_registry().entries(kind, pattern)]


def build(spec: dict, kind: str = "model") -> Any:
    """Instantiate a component from a ``class_path``/``init_args`` spec (registry classes only)."""
    from .config import build as _build

    return _build(spec, kind=kind)


def create(name: str, pretrained: bool = False, **overrides: Any) -> Any:
    """Build an untrained model from a registered preset; ``overrides`` replace its init_args.

    ``pretrained=True`` is :func:`load`: the published weights of the preset (or of a pretrained name), as they are.
    """
    registry = get_registry()
    if pretrained:
        if overrides:
            raise ConfigError(
                f"vaezoo.create({name!r}, pretrained=True) loads published weights as they are and takes no overrides "
                f"({', '.join(sorted(overrides))}); without pretrained=True it builds an untrained model with them"
            )
        return load(name)
    if name not in registry.names("preset") and name in registry.names("pretrained"):
        preset = registry.get("pretrained", name).target.get("preset")
        untrained = f"; vaezoo.create({preset!r}) builds its architecture untrained" if preset else ""
        raise RegistryError(f"{name!r} is a pretrained model, not a preset: vaezoo.load({name!r}) loads it{untrained}")
    entry = registry.get("preset", name)
    spec = entry.target(**overrides)
    model = build(spec)
    model.preset = name
    return model


def load(name: str, device: Any = "cpu", **kwargs: Any) -> Any:
    """A ready model in eval mode: a pretrained name (or a preset that exactly one pretrained entry uses),
    ``hf-hub:org/repo[@rev]``, ``local-dir:PATH`` or a folder."""
    from .hub import load as _load

    return _load(name, device=device, **kwargs)
