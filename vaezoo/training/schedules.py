"""The learning-rate schedule: linear warm-up per step, then cosine decay (per step or per epoch) or a constant.

A pure function of the step and the schedule's settings, so that a resumed run, the benchmark and the tests all see
the same learning rate at the same step without any state to save.
"""

from __future__ import annotations

import math
from typing import Literal

LRSchedule = Literal["cosine_step", "cosine_epoch", "constant"]


def learning_rate(
    step: int,
    *,
    lr: float,
    lr_min: float,
    max_steps: int,
    warmup_steps: int = 0,
    schedule: LRSchedule = "cosine_step",
    steps_per_epoch: int = 1,
) -> float:
    """Linear warm-up from 0 over ``warmup_steps``, then cosine decay to ``lr_min`` reached at the last step
    ``max_steps - 1`` (never past it: a cosine that runs on would turn the learning rate back up).

    ``"cosine_epoch"`` decays once per epoch of ``steps_per_epoch`` steps, as NVAE's reference implementation does;
    ``"constant"`` stays at ``lr`` after the warm-up.
    """
    if warmup_steps and step < warmup_steps:
        return lr * step / warmup_steps
    if schedule == "constant":
        return lr
    if schedule == "cosine_epoch":
        first, last = warmup_steps // steps_per_epoch, max(1, (max_steps - 1) // steps_per_epoch)
        span, position = max(1, last - first), step // steps_per_epoch - first
    else:
        span, position = max(1, max_steps - 1 - warmup_steps), step - warmup_steps
    progress = min(1.0, max(0.0, position / span))
    return lr_min + 0.5 * (lr - lr_min) * (1 + math.cos(math.pi * progress))
