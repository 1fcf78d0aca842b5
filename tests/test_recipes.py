"""Every recipe parses, and the paper recipes instantiate at tiny size with their own components."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from conftest import REPO_ROOT

import vaezoo
from vaezoo.cli import main
from vaezoo.config import expand_preset

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
    assert recipe["model"] == {"preset": preset}  # the recipe is the preset's architecture, nothing else
    recipe["model"] = expand_preset(recipe["model"], vaezoo.get_registry())
    with torch.device("meta"):
        full = vaezoo.build(recipe["model"])
    assert sum(p.numel() for p in full.parameters()) == count
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


def test_a_recipe_names_a_preset_and_overrides_parts_of_it(tmp_path, capsys):
    """``model: {preset: NAME, init_args: {...}}``: the preset's spec with the given arguments laid over it as an
    overlay is (a nested component's arguments merge; a new class_path replaces the component)."""
    recipe = tmp_path / "mine.yaml"
    base = yaml.safe_load((REPO_ROOT / "recipes" / "nvae_mnist_small.yaml").read_text())
    base["model"] = {
        "preset": "nvae-mnist-small",
        "init_args": {
            "encoder_channels": 4,
            "decoder_cell": {"init_args": {"use_se": False}},
            "posterior": {"class_path": "NormalPosterior"},
        },
    }
    recipe.write_text(yaml.safe_dump(base))
    assert main(["fit", str(recipe), "--print_config"]) == 0
    resolved = yaml.safe_load(capsys.readouterr().out)["model"]
    expected = vaezoo.create("nvae-mnist-small", encoder_channels=4).config  # built independently, then edited
    expected["init_args"]["decoder_cell"]["init_args"]["use_se"] = False
    expected["init_args"]["posterior"] = {"class_path": "NormalPosterior", "init_args": {"kernel_size": 3}}
    assert vaezoo.build(resolved).config == vaezoo.build(expected).config


@pytest.mark.parametrize(
    "model, expected",
    [
        (
            {"preset": "nvae-mnist-smal"},
            "model.preset: unknown preset 'nvae-mnist-smal'; did you mean nvae-mnist-small",
        ),
        (
            {"preset": "nvae-mnist-small", "class_path": "HierarchicalVAE"},
            "a preset takes init_args only, got class_path",
        ),
        (
            {"preset": "nvae-mnist-small", "init_args": {"encoder_chanels": 4}},
            "model.init_args.encoder_chanels: unknown",
        ),
    ],
)
def test_a_wrong_preset_is_one_line(tmp_path, capsys, model, expected):
    recipe = tmp_path / "mine.yaml"
    base = yaml.safe_load((REPO_ROOT / "recipes" / "nvae_mnist_small.yaml").read_text())
    recipe.write_text(yaml.safe_dump({**base, "model": model}))
    assert main(["fit", str(recipe), "--run_dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and expected in err, err
    assert not (tmp_path / "run").exists()
