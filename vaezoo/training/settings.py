"""The ranges of the trainer's settings, in one place: :class:`~vaezoo.training.Trainer` checks them when it is built
(from Python) and ``vaezoo fit`` before the run folder is created (from a recipe), so both see the same checks."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from ..errors import ConfigError

#: the values that type-check but that no run can use: ``(check, what the value must be)`` per setting (a 0 here
#: would divide by zero mid-run, a NaN would train on NaN learning rates)
TRAINER_RANGES = {
    "max_steps": (lambda v: v >= 1, "positive"),
    "accumulate_grad_batches": (lambda v: v >= 1, "positive"),
    "ema_decay": (lambda v: v is None or 0.0 < v < 1.0, "null or in (0, 1)"),
    "lr": (lambda v: math.isfinite(v) and v >= 0, "finite and >= 0"),
    "lr_min": (lambda v: math.isfinite(v) and v >= 0, "finite and >= 0"),
    "weight_decay": (lambda v: math.isfinite(v) and v >= 0, "finite and >= 0"),
    "adamax_eps": (lambda v: math.isfinite(v) and v > 0, "finite and positive"),
    "betas": (lambda v: all(math.isfinite(b) and 0 <= b < 1 for b in v), "two values in [0, 1)"),
    "grad_clip": (lambda v: v is None or (math.isfinite(v) and v > 0), "null or finite and positive"),
    "warmup_steps": (lambda v: v >= 0, ">= 0"),
    "max_epochs": (lambda v: v is None or v >= 1, "null or >= 1"),
    "warmup_epochs": (lambda v: v is None or (math.isfinite(v) and v >= 0), "null or finite and >= 0"),
    "checkpoint_every": (lambda v: v >= 0, ">= 0 (0: no periodic checkpoints)"),
    "keep_last": (lambda v: v >= 0, ">= 0"),
    "log_every": (lambda v: v >= 1, "positive"),
    "sample_every": (lambda v: v >= 0, ">= 0 (0: no periodic samples)"),
    "num_samples": (lambda v: v >= 1, "positive"),
    "sample_temperature": (lambda v: math.isfinite(v) and v > 0, "finite and positive"),
    "eval_k": (lambda v: v >= 0, ">= 0"),
    "eval_batch_size": (lambda v: v >= 1, "positive"),
    "max_consecutive_bad_steps": (lambda v: v >= 1, "positive"),
    "max_rollbacks": (lambda v: v >= 0, ">= 0"),
    "rollback_lr_factor": (lambda v: math.isfinite(v) and 0 < v <= 1, "in (0, 1]"),
    "num_workers": (lambda v: v >= 0, ">= 0"),
}


def check_trainer_settings(values: Mapping[str, Any]) -> None:
    """The first setting out of its range is one line: ``trainer.lr must be finite and >= 0, got nan``."""
    for key, (ok, what) in TRAINER_RANGES.items():
        if key in values and not ok(values[key]):
            raise ConfigError(f"trainer.{key} must be {what}, got {values[key]!r}")
