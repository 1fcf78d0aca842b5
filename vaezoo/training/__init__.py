"""The fit loop: optimiser and schedules, NaN guard, atomic checkpoints and exact resume."""

from .trainer import Trainer

__all__ = ["Trainer"]
