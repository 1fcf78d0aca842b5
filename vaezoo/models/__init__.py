"""Generic model assemblers and the spec helpers that presets share (registered by the core's default plugin)."""

from .hierarchical import HierarchicalVAE, expand_groups_per_scale
from .specs import (
    DEFAULT_COMPONENTS,
    hierarchical_spec,
    mirrored_layout,
    preset_factory,
    register_preset_table,
    same_cell_everywhere,
)

__all__ = [
    "DEFAULT_COMPONENTS",
    "HierarchicalVAE",
    "expand_groups_per_scale",
    "hierarchical_spec",
    "mirrored_layout",
    "preset_factory",
    "register_preset_table",
    "same_cell_everywhere",
]
