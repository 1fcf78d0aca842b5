"""Every recipe parses, and the paper recipes instantiate at tiny size with their own components."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from conftest import REPO_ROOT

import vaezoo
from vaezoo.cli import main

RECIPES = sorted((REPO_ROOT / "recipes").glob("*.yaml"))
PAPER = {
    "nvae_mnist": ("nvae-mnist", 33_363_134),
    "nvae_cifar10": ("nvae-cifar10", 130_852_480),
    "nvae_celeba64": ("nvae-celeba64", 153_281_364),
    "nvae_imagenet32": ("nvae-imagenet32", 268_509_444),
    "nvae_celebahq256": ("nvae-celebahq256", 330_798_664),
    "nvae_ffhq256": ("nvae-ffhq256", 330_798_664),
}
TINY = {"encoder_channels": 4, "decoder_channels": 4, "latent_channels": 2, "groups_per_scale": 1}


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_recipe_parses(recipe: Path, capsys):
    assert main(["fit", str(recipe), "--print_config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert {"model", "objective", "data", "trainer"} <= set(printed)


@pytest.mark.parametrize("name", sorted(PAPER))
def test_paper_recipe_matches_preset_and_builds_tiny(name):
    recipe = yaml.safe_load((REPO_ROOT / "recipes" / f"{name}.yaml").read_text())
    preset, count = PAPER[name]
    with torch.device("meta"):
        full = vaezoo.build(recipe["model"])
        reference = vaezoo.create(preset)
    assert sum(p.numel() for p in full.parameters()) == count
    assert full.config == reference.config  # the recipe is the preset's architecture, nothing else
    tiny_spec = {**recipe["model"], "init_args": {**recipe["model"]["init_args"], **TINY}}
    tiny = vaezoo.build(tiny_spec)
    objective = vaezoo.build(recipe["objective"], kind="objective")
    objective.set_total_steps(100)
    x = torch.rand(1, *tiny.image_shape)
    if tiny.image_shape[0] == 1:
        x = x.round()
    loss, metrics = objective(tiny, x, step=1)
    assert torch.isfinite(loss)
    loss.backward()
    assert recipe["trainer"]["max_epochs"] > 0 and recipe["data"]["init_args"]["batch_size"] > 0
