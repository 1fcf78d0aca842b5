"""A tiny NVAE recipe for the tests that train through ``vaezoo fit`` (distributed runs, kills and resumes).

The model is the ``test-nvae`` preset (8x8 binary images, two latent scales, one IAF per group, 26 BatchNorm
layers, 12k parameters); the data are 64 random binary images. Not a test module: the helper the others import.
"""

from __future__ import annotations

from pathlib import Path

import yaml

import vaezoo
from vaezoo.training.settings import place_in_groups


def write_recipe(path: Path, objective: dict | None = None, **trainer) -> Path:
    """Write the recipe to ``path``; ``objective`` replaces NVAEObjective's init_args, ``trainer`` adds to its own."""
    spec = vaezoo.get_registry().get("preset", "test-nvae").target()
    recipe = {
        "model": spec,
        "objective": {"class_path": "NVAEObjective", "init_args": objective or {}},
        "data": {
            "class_path": "RandomImages",
            "init_args": {"image_shape": [1, 8, 8], "num_examples": 64, "batch_size": 8, "binary": True},
        },
        "trainer": place_in_groups(
            {
                "max_steps": 6,
                "lr": 1e-2,
                "warmup_steps": 2,
                "checkpoint_every": 3,
                "keep_last": 5,
                "log_every": 1,
                "progress": False,
                "tensorboard": False,
                "eval_k": 0,
                "device": "cpu",
                **trainer,
            }
        ),
        "seed": 3,
    }
    path.write_text(yaml.safe_dump(recipe))
    return path
