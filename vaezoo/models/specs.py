"""Spec helpers that every preset family shares.

A preset is a function ``factory(**overrides) -> spec`` registered under a name; a spec is the jsonargparse form of a
model, ``{"class_path": ..., "init_args": {...}}``. Families of hierarchical models differ in which components fill
the assembler's slots and in a few layout numbers, so a family writes a table of components and calls
:func:`hierarchical_spec`; :func:`preset_factory` and :func:`register_preset_table` turn a table of named keyword
arguments into registered presets.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable, Mapping
from typing import Any

from .hierarchical import HierarchicalVAE

#: the component slots of :class:`HierarchicalVAE`, in the order of its signature
COMPONENT_SLOTS = (
    "likelihood",
    "stem",
    "preprocess_cell",
    "encoder_cell",
    "encoder_combiner",
    "encoder_head",
    "posterior",
    "top_prior",
    "prior",
    "decoder_cell",
    "decoder_combiner",
    "postprocess_cell",
    "decoder_head",
    "flow",
)

#: the core's generic choices for the slots most families share: a 3x3 weight-normalised stem, an ELU-wrapped 1x1
#: encoder head, an ELU-then-3x3 decoder head, the additive / concatenating combiners, a Normal posterior, a
#: standard Normal top prior and Normal priors from the decoder state
DEFAULT_COMPONENTS: dict[str, dict | None] = {
    "stem": {"class_path": "WeightNormConvCell", "init_args": {"kernel_size": 3}},
    "posterior": {"class_path": "NormalPosterior"},
    "top_prior": {"class_path": "StandardNormalPrior"},
    "prior": {"class_path": "NormalPrior"},
    "encoder_combiner": {"class_path": "EncoderCombiner"},
    "encoder_head": {
        "class_path": "WeightNormConvCell",
        "init_args": {"kernel_size": 1, "elu_before": True, "elu_after": True},
    },
    "decoder_combiner": {"class_path": "DecoderCombiner"},
    "decoder_head": {"class_path": "WeightNormConvCell", "init_args": {"kernel_size": 3, "elu_before": True}},
    "flow": None,
}


def same_cell_everywhere(cell: dict) -> dict[str, dict]:
    """The four cell slots (pre-processing, encoder, decoder, post-processing) filled with one cell spec."""
    return {slot: cell for slot in ("preprocess_cell", "encoder_cell", "decoder_cell", "postprocess_cell")}


def _layout_defaults() -> dict[str, Any]:
    parameters = inspect.signature(HierarchicalVAE.__init__).parameters
    return {
        name: p.default
        for name, p in parameters.items()
        # the optional joint prior is no layout number: a preset family's spec leaves it out unless it sets one
        if name not in ("self", "image_shape", "joint_prior", *COMPONENT_SLOTS)
        and p.default is not inspect.Parameter.empty
    }


def hierarchical_spec(components: Mapping[str, dict | None], *, image_shape: list[int], **layout: Any) -> dict:
    """The spec of a :class:`HierarchicalVAE`: ``components`` fills the slots (over :data:`DEFAULT_COMPONENTS`),
    ``layout`` the numbers (channels, scales, groups, cells, ...; the assembler's defaults for the rest).

    Every value is copied, so tables of component specs can be shared between presets.
    """
    unknown = sorted(set(components) - set(COMPONENT_SLOTS))
    if unknown:
        raise TypeError(f"unknown component slots {unknown}; slots are {', '.join(COMPONENT_SLOTS)}")
    slots = {**DEFAULT_COMPONENTS, **components}
    missing = [slot for slot in COMPONENT_SLOTS if slot not in slots]
    if missing:
        raise TypeError(f"no component for the slots {missing}")
    defaults = _layout_defaults()
    unknown = sorted(set(layout) - set(defaults))
    if unknown:
        raise TypeError(f"unknown layout arguments {unknown}; they are {', '.join(defaults)}")
    init_args: dict[str, Any] = {"image_shape": list(image_shape)}
    init_args.update({slot: copy.deepcopy(slots[slot]) for slot in COMPONENT_SLOTS})
    init_args.update({name: copy.deepcopy(layout.get(name, default)) for name, default in defaults.items()})
    return {"class_path": "HierarchicalVAE", "init_args": init_args}


def mirrored_layout(
    *,
    channels: int,
    latent_channels: int,
    num_latent_scales: int,
    groups_per_scale: int | list[int],
    cells_per_group: int = 1,
    preprocess_blocks: int = 1,
    preprocess_cells: int = 1,
    **layout: Any,
) -> dict[str, Any]:
    """Layout numbers of a hierarchy with one width for the encoder and the decoder, the same number of cells per
    group on both sides, and post-processing that mirrors pre-processing (``layout`` adds or overrides any other
    :func:`hierarchical_spec` layout argument)."""
    return {
        "encoder_channels": channels,
        "decoder_channels": channels,
        "latent_channels": latent_channels,
        "num_latent_scales": num_latent_scales,
        "groups_per_scale": groups_per_scale,
        "encoder_cells_per_group": cells_per_group,
        "decoder_cells_per_group": cells_per_group,
        "preprocess_blocks": preprocess_blocks,
        "preprocess_cells": preprocess_cells,
        "postprocess_blocks": preprocess_blocks,
        "postprocess_cells": preprocess_cells,
        **layout,
    }


def preset_factory(make_spec: Callable[..., dict], **kwargs: Any) -> Callable[..., dict]:
    """``factory(**overrides)``: ``make_spec(**kwargs)`` with ``overrides`` replacing its ``init_args`` entries."""

    def factory(**overrides: Any) -> dict:
        spec = make_spec(**copy.deepcopy(kwargs))
        spec["init_args"].update(overrides)
        return spec

    return factory


def register_preset_table(
    register: Callable[..., Any], table: Mapping[str, tuple[dict, str]], make_spec: Callable[..., dict]
) -> None:
    """Register ``name -> (keyword arguments of make_spec, description)`` as presets (a ``register_presets`` body)."""
    for name, (kwargs, description) in table.items():
        register(name, preset_factory(make_spec, **kwargs), description=description)
