"""The small NVAE recipe and its ablation overlays resolve through the fit command's parser, build, and train."""

from __future__ import annotations

import contextlib
import functools
import io
from pathlib import Path

import pytest
import torch
import yaml

import vaezoo
from vaezoo.cli import main

from .conftest import REPO_ROOT

RECIPE = REPO_ROOT / "recipes" / "nvae_mnist_small.yaml"
ABLATIONS = sorted((REPO_ROOT / "recipes" / "ablations").glob("*.yaml"))


@functools.cache
def _resolved_text(*overlays: Path) -> str:
    """The recipe as the fit command resolves it (``--print_config``), with these overlays applied."""
    args = ["fit", str(RECIPE)] + [a for o in overlays for a in ("--config", str(o))] + ["--print_config"]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(args) == 0
    return out.getvalue()


def _resolved(*overlays: Path) -> dict:
    return yaml.safe_load(_resolved_text(*overlays))


def _short(class_path: str) -> str:
    return class_path.rsplit(".", 1)[-1]


def _differences(base: dict, other: dict, path: str = "") -> set[str]:
    if isinstance(base, dict) and isinstance(other, dict):
        out = set()
        for key in base.keys() | other.keys():
            out |= _differences(base.get(key), other.get(key), f"{path}.{key}" if path else key)
        return out
    if isinstance(base, list) and isinstance(other, list) and len(base) == len(other):
        return set().union(
            *(_differences(a, b, f"{path}[{i}]") for i, (a, b) in enumerate(zip(base, other, strict=True)))
        )
    return set() if base == other else {path}


EXPECTED = {
    "residual_decoder_cell": lambda cfg: (
        _short(cfg["model"]["init_args"]["decoder_cell"]["class_path"]) == "ResidualCell"
    ),
    "plain_normal_posterior": lambda cfg: (
        _short(cfg["model"]["init_args"]["posterior"]["class_path"]) == "NormalPosterior"
    ),
    "no_spectral_regularizer": lambda cfg: (
        [_short(r["class_path"]) for r in cfg["objective"]["init_args"]["regularizers"]]
        == ["BatchNormScaleRegularizer"]
    ),
    "no_flows": lambda cfg: cfg["model"]["init_args"]["num_flows"] == 0 and cfg["model"]["init_args"]["flow"] is None,
    "no_se": lambda cfg: all(
        cfg["model"]["init_args"][k]["init_args"]["use_se"] is False
        for k in ("preprocess_cell", "encoder_cell", "decoder_cell", "postprocess_cell")
    ),
}


def test_the_required_ablations_exist():
    assert set(EXPECTED) <= {p.stem for p in ABLATIONS}


def test_the_quickstart_recipe_pads_the_digits_for_the_small_preset():
    cfg = _resolved()
    assert vaezoo.build(cfg["model"]).image_shape == (1, 32, 32)
    assert cfg["data"]["init_args"]["batch_size"] == 32 and cfg["data"]["init_args"]["pad"] == 2


@pytest.mark.parametrize("overlay", ABLATIONS, ids=[p.stem for p in ABLATIONS])
def test_ablation_swaps_one_component_and_trains(overlay):
    base = _resolved()
    cfg = _resolved(overlay)
    differences = _differences(base, cfg)
    assert differences and all(d.startswith(("model.init_args.", "objective.init_args.")) for d in differences)
    if overlay.stem in EXPECTED:  # the NVAE paper's ablations: exactly the intended component changes
        assert EXPECTED[overlay.stem](cfg)
        changed = {d.split(".init_args.")[1].split(".")[0] for d in differences}
        assert changed <= {
            "decoder_cell", "posterior", "regularizers", "num_flows", "flow",
            "preprocess_cell", "encoder_cell", "postprocess_cell",
        }  # fmt: skip
    torch.manual_seed(0)
    model = vaezoo.build(cfg["model"])
    objective = vaezoo.build(cfg["objective"], kind="objective")
    objective.set_total_steps(100)
    x = torch.bernoulli(torch.full((2, 1, 32, 32), 0.3))
    loss, _ = objective(model, x, step=1)
    loss.backward()
    assert torch.isfinite(loss)
