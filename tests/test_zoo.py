"""The zoo beyond NVAE: every model trains from its recipe, recipes match their presets, and every NVAE ablation
overlay composes with NVAE recipes and builds."""

from __future__ import annotations

import json
import math

import pytest
import torch
import yaml
from by_hand import evaluation_by_hand
from conftest import REPO_ROOT
from torch import nn
from vaezoo_nvae.presets import nvae_spec

import vaezoo
from vaezoo.cli import main
from vaezoo.nn import BatchNormSwish

RECIPES = REPO_ROOT / "recipes"
ABLATIONS = sorted((RECIPES / "ablations").glob("*.yaml"))
QUICK = ["--trainer.logging.progress", "false", "--trainer.logging.tensorboard", "false", "--trainer.evaluation.k", "2",
         "--trainer.logging.log_every", "1", "--trainer.checkpoints.every", "2", "--trainer.logging.num_samples", "4",
         "--data.init_args.batch_size", "16", "--data.init_args.test_size", "20", "--trainer.schedule.warmup_steps", "0"]  # fmt: skip
CONV_VAE_TINY = ["--model.init_args.latent_dim", "4", "--model.init_args.hidden_channels", "4",
                 "--model.init_args.hidden_units", "16"]  # fmt: skip
HIERARCHICAL_TINY = ["--model.init_args.encoder_channels", "4", "--model.init_args.decoder_channels", "4",
                     "--model.init_args.latent_channels", "2"]  # fmt: skip

#: recipe -> (overrides that shrink it, number of latent groups)
MODELS = {
    "vae_mnist": (CONV_VAE_TINY, 1),
    "beta_vae_mnist": (CONV_VAE_TINY, 1),
    "iwae_mnist": (CONV_VAE_TINY, 1),
    "iaf_vae_mnist": (HIERARCHICAL_TINY, 4),
    "lvae_mnist": (HIERARCHICAL_TINY, 4),
    "vdvae_mnist": (HIERARCHICAL_TINY, 6),
}


def _lines(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _records(run_dir):
    return [r for r in _lines(run_dir) if "loss" in r]


@pytest.mark.parametrize("name", list(MODELS))
def test_model_trains_from_its_recipe(tmp_path, capsys, name):
    overrides, num_groups = MODELS[name]
    run_dir = tmp_path / name
    argv = [
        "fit",
        str(RECIPES / f"{name}.yaml"),
        *QUICK,
        *overrides,
        "--trainer.max_steps",
        "3",
        "--run_dir",
        str(run_dir),
    ]
    assert main(argv) == 0, capsys.readouterr().err
    records = _records(run_dir)
    assert [r["step"] for r in records] == [1, 2, 3]
    assert all(math.isfinite(r["loss"]) and math.isfinite(r["grad_norm"]) for r in records)
    assert all(len(r["kl_per_group"]) == num_groups for r in records)
    assert all(r["skipped_steps"] == 0 for r in records)
    units = [r["active_units"] for r in _lines(run_dir) if "active_units" in r]  # the model encodes, per group
    assert len(units) == 1 and len(units[0]) == num_groups
    if name == "vdvae_mnist":  # gradient skipping is on, and the recipe's threshold lets healthy steps through
        assert [r["grad_skips"] for r in records] == [0, 0, 0] and records[-1]["grad_norm_unclipped"] > 0
    if name == "iwae_mnist":
        assert all(r["iw_bound"] >= -r["nelbo"] - 1e-3 for r in records)  # the k-sample bound is above the ELBO
    results = json.loads((run_dir / "results.json").read_text())
    assert results["unit"] == "nats" and results["k"] == 2 and results["num_examples"] == 20
    model = vaezoo.load(f"local-dir:{run_dir / 'model'}")
    # the values: the documented evaluation protocol computed by hand on the saved model, one pass per sample
    recipe = yaml.safe_load((run_dir / "config.yaml").read_text())
    dataset = vaezoo.build(recipe["data"], kind="dataset").test_dataset()
    elbo, iw_nll = evaluation_by_hand(model, dataset, k=2, seed=recipe["seed"])
    assert results["elbo_nats"] == pytest.approx(elbo, rel=1e-5)
    assert results["iw_nll_nats"] == pytest.approx(iw_nll, rel=1e-5)
    assert len(model.latent_shapes(2)) == num_groups
    assert model.sample(2).shape == (2, *model.image_shape)


@pytest.mark.parametrize("preset, recipe", [("iaf-vae-mnist", "iaf_vae_mnist"), ("lvae-mnist", "lvae_mnist"),
                                            ("vdvae-mnist", "vdvae_mnist")])  # fmt: skip
def test_recipe_model_is_its_preset(preset, recipe):
    """The recipe names its paper's preset (one source of the architecture, no copy to keep in sync)."""
    assert yaml.safe_load((RECIPES / f"{recipe}.yaml").read_text())["model"] == {"preset": preset}


def test_recipes_use_registered_components_of_their_paper():
    def classes(spec):
        if isinstance(spec, dict):
            found = {spec["class_path"]} if "class_path" in spec else set()
            return found.union(*(classes(v) for v in spec.values()))
        if isinstance(spec, list):
            return set().union(*(classes(v) for v in spec))
        return set()

    def recipe(name):  # with its preset expanded, as fit reads it
        from vaezoo.config import expand_recipe_presets

        return expand_recipe_presets(yaml.safe_load((RECIPES / f"{name}.yaml").read_text()), vaezoo.get_registry())

    assert {"ContextualIAF", "WeightNormELUResidualCell"} <= classes(recipe("iaf_vae_mnist"))
    assert {"PrecisionWeightedPosterior", "PassThroughCombiner", "LatentOnlyCombiner"} <= classes(recipe("lvae_mnist"))
    assert recipe("lvae_mnist")["objective"]["init_args"]["kl_warmup_portion"] > 0
    vdvae = recipe("vdvae_mnist")
    assert {"BottleneckBlock", "BottleneckNormalPrior", "ZInjectionCombiner", "GradientSkipping"} <= classes(vdvae)
    assert vdvae["model"]["init_args"]["channel_multiplier"] == 1
    assert recipe("beta_vae_mnist")["objective"]["init_args"]["beta"] > 1
    assert recipe("iwae_mnist")["objective"]["class_path"] == "IWAE"


# ---------------------------------------------------------------------------------------------
# NVAE ablation overlays
# ---------------------------------------------------------------------------------------------
def _resolved(capsys, recipe, *overlays):
    args = ["fit", str(recipe), *[a for o in overlays for a in ("--config", str(o))], "--print_config"]
    assert main(args) == 0, capsys.readouterr().err
    return yaml.safe_load(capsys.readouterr().out)


@pytest.fixture(scope="module")
def other_nvae_recipe(tmp_path_factory):
    """A second NVAE recipe of another geometry: RGB 16x16, three latent scales, no flows, a logistic mixture."""
    model = nvae_spec(
        image_shape=[3, 16, 16],
        likelihood={"class_path": "DiscretizedLogisticMixture", "init_args": {"num_mixtures": 2}},
        channels_enc=4, channels_dec=4, num_latent_scales=3, groups_per_scale=2, ada_groups=True,
        latent_per_group=2, cells_per_group_enc=1, cells_per_group_dec=1, preprocess_blocks=1, preprocess_cells=1,
        postprocess_blocks=1, postprocess_cells=1, num_nf=0,
    )  # fmt: skip
    recipe = yaml.safe_load((RECIPES / "nvae_mnist_small.yaml").read_text())
    recipe["model"] = model
    path = tmp_path_factory.mktemp("recipes") / "nvae_rgb_tiny.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


@pytest.mark.parametrize("overlay", ABLATIONS, ids=[p.stem for p in ABLATIONS])
def test_ablation_composes_with_nvae_recipes_and_builds(capsys, overlay, other_nvae_recipe):
    for recipe, x in ((RECIPES / "nvae_mnist_small.yaml", torch.bernoulli(torch.full((2, 1, 32, 32), 0.3))),
                      (other_nvae_recipe, torch.rand(2, 3, 16, 16))):  # fmt: skip
        cfg = _resolved(capsys, recipe, overlay)
        torch.manual_seed(0)
        model = vaezoo.build(cfg["model"])
        objective = vaezoo.build(cfg["objective"], kind="objective")
        objective.set_total_steps(10)
        with torch.no_grad():
            loss, metrics = objective(model, x, step=5)
        assert torch.isfinite(loss) and metrics["kl_vals"].shape == (model.num_groups,)


def test_ablation_axes_of_the_nvae_paper_are_covered(capsys):
    """Cell types (regular vs depthwise, in both towers), BN + Swish vs WN + ELU, residual vs plain Normal, spectral
    regularisation on/off, the number of flows and the number of groups: each overlay changes what it says."""
    recipe = RECIPES / "nvae_mnist_small.yaml"
    base = _resolved(capsys, recipe)
    stems = {p.stem for p in ABLATIONS}
    assert {"residual_decoder_cell", "depthwise_encoder_cell", "weight_norm_elu_cells", "plain_normal_posterior",
            "no_spectral_regularizer", "no_flows", "two_flows", "one_group_per_scale"} <= stems  # fmt: skip

    def cfg(name):
        return _resolved(capsys, recipe, RECIPES / "ablations" / f"{name}.yaml")["model"]["init_args"]

    def short(spec):
        return spec["class_path"].rsplit(".", 1)[-1]

    both_regular, both_depthwise = cfg("residual_decoder_cell"), cfg("depthwise_encoder_cell")
    assert short(both_regular["encoder_cell"]) == short(both_regular["decoder_cell"]) == "ResidualCell"
    assert short(both_depthwise["encoder_cell"]) == short(both_depthwise["decoder_cell"]) == "DepthwiseResidualCell"
    assert cfg("two_flows")["num_flows"] == 2 > base["model"]["init_args"]["num_flows"] > cfg("no_flows")["num_flows"]
    torch.manual_seed(0)
    one_group = vaezoo.build(_resolved(capsys, recipe, RECIPES / "ablations" / "one_group_per_scale.yaml")["model"])
    assert one_group.groups_per_scale == [1, 1] and vaezoo.build(base["model"]).groups_per_scale == [4, 2]

    wn = _resolved(capsys, recipe, RECIPES / "ablations" / "weight_norm_elu_cells.yaml")
    model = vaezoo.build(wn["model"])
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    assert not any(isinstance(m, BatchNormSwish) for m in model.modules())
    assert [short(r) for r in wn["objective"]["init_args"]["regularizers"]] == ["SpectralRegularizer"]
