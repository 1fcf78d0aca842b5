"""Exponential moving average of model weights (floating-point parameters and buffers)."""

from __future__ import annotations

import torch
from torch import nn


class ExponentialMovingAverage:
    """``keys``: the state entries to average (default: every floating-point one), e.g. one component's."""

    def __init__(self, model: nn.Module, decay: float, keys: list[str] | None = None) -> None:
        self.decay = decay
        wanted = None if keys is None else set(keys)
        self.shadow = {
            k: v.detach().clone()
            for k, v in model.state_dict().items()
            if v.is_floating_point() and (wanted is None or k in wanted)
        }

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        state = model.state_dict()
        keys = list(self.shadow)
        shadow = [self.shadow[k] for k in keys]
        torch._foreach_lerp_(shadow, [state[k].detach() for k in keys], 1.0 - self.decay)

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        state = model.state_dict()
        for key, value in self.shadow.items():
            state[key].copy_(value)

    def state_dict(self) -> dict:
        return dict(self.shadow)

    def load_state_dict(self, state: dict) -> None:
        for key, value in state.items():
            self.shadow[key].copy_(value)
