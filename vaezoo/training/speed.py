"""Applying a recipe's speed switches to a model.

The switches change speed and memory, never results (up to float rounding). Those that depend on the model's layers
(cell compilation, the depthwise weight gradient, fused BatchNorm-Swish, gradient checkpointing) are declared by the model family that has them,
by mixing in :class:`~vaezoo.interfaces.SpeedSwitches` (whose methods raise ``NotImplementedError`` when the model
has no layer they act on): a model without them, or without such a layer, is one line naming the recipe key, raised
before training starts.
``channels_last`` and ``keep_freed_memory`` work on any model.
"""

from __future__ import annotations

import torch

from ..errors import VaezooError
from ..interfaces import GenerativeModel, SpeedSwitches
from .memory import keep_freed_memory as _keep_freed_memory


def apply_speed_switches(
    model: GenerativeModel,
    device: torch.device,
    *,
    channels_last: bool = False,
    compile_cells: bool = False,
    depthwise_weight_grad: str = "native",
    keep_freed_memory: bool = True,
    gradient_checkpointing: bool = False,
    bn_swish: str = "native",
) -> None:
    """Turn on the switches the recipe asks for, on a model already moved to ``device``."""
    name = type(model).__name__
    asked = {
        "compile_cells": compile_cells,
        "depthwise_weight_grad": depthwise_weight_grad != "native",  # every layer's default: any model will do
        "bn_swish": bn_swish != "native",
        "gradient_checkpointing": gradient_checkpointing,
    }
    if not isinstance(model, SpeedSwitches) and any(asked.values()):
        key = next(k for k, on in asked.items() if on)
        raise VaezooError(
            f"trainer.speed.{key}: {name} has no speed switches (only models built from vaezoo.nn layers do)"
        )
    if channels_last:
        model.to(memory_format=torch.channels_last)
    if compile_cells:
        try:
            model.compile_cells()
        except NotImplementedError:
            raise VaezooError(f"trainer.speed.compile_cells: {name} has no cell to compile") from None
    if depthwise_weight_grad != "native":  # "native" is every layer's default: nothing to switch, any model will do
        try:
            model.set_depthwise_weight_grad(depthwise_weight_grad)
        except NotImplementedError:
            raise VaezooError(f"trainer.speed.depthwise_weight_grad: {name} has no layer that supports it") from None
    if bn_swish != "native":  # "native" is every layer's default, as for the depthwise weight gradient
        try:
            model.set_bn_swish(bn_swish)
        except NotImplementedError:
            raise VaezooError(f"trainer.speed.bn_swish: {name} has no BatchNorm-Swish layer") from None
    if keep_freed_memory and device.type == "cpu":
        _keep_freed_memory()
    if gradient_checkpointing:
        try:
            model.enable_gradient_checkpointing(True)
        except NotImplementedError:
            raise VaezooError(f"trainer.speed.gradient_checkpointing: {name} does not support it") from None
