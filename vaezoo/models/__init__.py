"""Generic model assemblers built from registered components (registered by the plugins that use them)."""

from .hierarchical import HierarchicalVAE, expand_groups_per_scale

__all__ = ["HierarchicalVAE", "expand_groups_per_scale"]
