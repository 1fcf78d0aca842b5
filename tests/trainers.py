"""Trainers for tests, from the settings a test names (``lr=1e-2, log_every=1``), placed in their groups."""

from __future__ import annotations

from typing import Any

from vaezoo.training import Trainer
from vaezoo.training.settings import place_in_groups


def make_trainer(**settings: Any) -> Trainer:
    return Trainer(**place_in_groups(settings))
