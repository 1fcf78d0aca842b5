"""Exponential moving average of model weights (floating-point parameters and buffers)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn


class ExponentialMovingAverage:
    """``keys``: the state entries to average (default: every floating-point one), e.g. one component's.

    ``warmup``: the decay of the update at training step ``s`` is ``min(decay, (1 + s) / (10 + s))``, so that a decay
    as high as the paper's 0.9999 averages recent weights in a run of a few thousand steps rather than staying near
    the initial ones (the step is the trainer's, so a resumed run continues the same schedule)."""

    def __init__(self, model: nn.Module, decay: float, keys: list[str] | None = None, warmup: bool = False) -> None:
        self.decay, self.warmup = decay, warmup
        wanted = None if keys is None else set(keys)
        self.shadow = {
            k: v.detach().clone()
            for k, v in model.state_dict().items()
            if v.is_floating_point() and (wanted is None or k in wanted)
        }

    @torch.no_grad()
    def update(self, model: nn.Module, step: int | None = None) -> None:
        decay = self.decay_at(step)
        state = model.state_dict()
        keys = list(self.shadow)
        shadow = [self.shadow[k] for k in keys]
        torch._foreach_lerp_(shadow, [state[k].detach() for k in keys], 1.0 - decay)

    def decay_at(self, step: int | None) -> float:
        if not self.warmup or step is None:
            return self.decay
        return min(self.decay, (1.0 + step) / (10.0 + step))

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        state = model.state_dict()
        for key, value in self.shadow.items():
            state[key].copy_(value)

    @contextlib.contextmanager
    def swapped_in(self, model: nn.Module) -> Iterator[None]:
        """The averaged weights in ``model`` for the ``with`` block, its own weights back after it."""
        state = model.state_dict()
        own = {key: state[key].detach().clone() for key in self.shadow}
        self.copy_to(model)
        try:
            yield
        finally:
            with torch.no_grad():
                for key, value in own.items():
                    state[key].copy_(value)

    def state_dict(self) -> dict:
        return dict(self.shadow)

    def load_state_dict(self, state: dict) -> None:
        for key, value in state.items():
            self.shadow[key].copy_(value)
