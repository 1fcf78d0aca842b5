"""Model folders saved before a layout change still load and compute what they computed then."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import vaezoo

ROOT = Path(__file__).parent / "fixtures" / "saved_before_layout"
EXPECTED = json.loads((ROOT / "expected.json").read_text())
FOLDERS = sorted(p.name for p in ROOT.iterdir() if p.is_dir())


def test_every_folder_is_checked():
    assert len(FOLDERS) == 7
    assert {f.removesuffix("-full-class-paths") for f in FOLDERS} == set(EXPECTED)


@pytest.mark.parametrize("folder", FOLDERS)
def test_old_folder_loads_and_matches(folder):
    expected = EXPECTED[folder.removesuffix("-full-class-paths")]
    model = vaezoo.load(f"local-dir:{ROOT / folder}")
    x = torch.tensor(expected["x"])
    noise = [torch.tensor(n) for n in expected["noise"]] if expected["noise"] else None
    with torch.no_grad():
        out = model(x, noise=noise)
    torch.testing.assert_close(out.nelbo, torch.tensor(expected["nelbo"]), rtol=1e-6, atol=1e-5)
    # a sum of float32 values agrees to the rounding of its terms: a few ulp of the largest, once per term
    rounding = out.params.numel() * 4 * torch.finfo(torch.float32).eps * float(out.params.abs().max())
    assert float(out.params.double().sum()) == pytest.approx(expected["params_sum"], rel=1e-6, abs=rounding)


def test_recipe_with_class_paths_from_before_the_move_still_parses(tmp_path, capsys):
    """A recipe (or a run's config.yaml, read again by ``fit --resume``) that spells the full class paths
    components had before they moved parses, with the paths brought up to date through the registry aliases."""
    from vaezoo.cli import main
    from vaezoo.components import PREVIOUS_CLASS_PATHS

    # the recipe as a run's config.yaml spells it (its preset expanded, full class paths), with the earlier paths
    recipe = Path(__file__).resolve().parents[1] / "recipes" / "nvae_mnist_small.yaml"
    assert main(["fit", str(recipe), "--print_config"]) == 0
    old = capsys.readouterr().out
    registry = vaezoo.get_registry()
    for name, previous in PREVIOUS_CLASS_PATHS.items():
        old = old.replace(f"class_path: {registry.find_class(name).class_path}\n", f"class_path: {previous[0]}\n")
    assert old.count("vaezoo_nvae.cells.") >= 3 and "vaezoo.likelihoods.BernoulliLikelihood" in old
    path = tmp_path / "old_recipe.yaml"
    path.write_text(old)
    assert main(["fit", str(path), "--print_config"]) == 0
    printed = capsys.readouterr().out
    for name, previous in PREVIOUS_CLASS_PATHS.items():
        assert previous[0] not in printed, name
    assert "class_path: vaezoo.components.cells.WeightNormConvCell" in printed
    assert "class_path: vaezoo.components.likelihoods.BernoulliLikelihood" in printed
