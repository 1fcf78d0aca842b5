"""Checks on parsed recipes shared by the commands that take one."""

from __future__ import annotations

from ..config import namespace_to_dict, resolve_class_paths
from ..plugins import get_registry


def check_registered(cfg, sections) -> None:
    """Every class_path in these recipe sections must be a registered component."""
    registry = get_registry()
    for section in sections:
        value = namespace_to_dict(cfg.get(section))
        if value is not None:
            resolve_class_paths(value, registry, section)
