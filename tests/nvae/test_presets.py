"""NVAE presets: the paper architectures match the official parameter counts and layouts exactly."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import vaezoo
from vaezoo.models import expand_groups_per_scale

from .conftest import fixtures_root

PAPER = {
    "nvae-mnist": ("mnist", 33_363_134),
    "nvae-cifar10": ("cifar10", 130_852_480),
    "nvae-celeba64": ("celeba64", 153_281_364),
    "nvae-imagenet32": ("imagenet32", 268_509_444),
    "nvae-celebahq256": ("celebahq256", 330_798_664),
    "nvae-ffhq256": ("ffhq256", 330_798_664),
}


def _unique_parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())  # parameters() yields each parameter object once


@pytest.mark.parametrize("preset", list(PAPER))
def test_paper_preset_matches_official_architecture(preset):
    manifest_name, expected = PAPER[preset]
    manifest = json.loads((fixtures_root() / "manifests" / f"{manifest_name}.json").read_text())
    with torch.device("meta"):
        model = vaezoo.create(preset)
    assert _unique_parameter_count(model) == expected == manifest["param_count"]
    assert model.groups_per_scale == manifest["latent_groups"]["groups_per_scale_encoder_order"]
    assert list(model.decoder_input.shape) == manifest["prior_ftr0_shape"]
    assert list(model.latent_shapes(1)[0][1:]) == manifest["latent_groups"]["z0_size"]
    # the modules the regularisers act on
    assert sum(isinstance(m, nn.Conv2d) for m in model.modules()) == manifest["n_conv_layers"]
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == manifest["n_bn_layers"]
    assert len(model.flows) == manifest["n_nf_cells"]


def test_small_presets_run():
    model = vaezoo.create("test-nvae")
    assert _unique_parameter_count(model) < 20_000 and model.num_flows == 1
    x = torch.bernoulli(torch.full((2, 1, 8, 8), 0.5))
    out = model(x)
    assert out.kl.shape == (model.num_groups, 2) and out.recon.shape == (2,)
    assert model.sample(3, temperature=0.7).shape == (3, 1, 8, 8)

    small = vaezoo.create("nvae-mnist-small")
    assert small.groups_per_scale == [4, 2] and small.latent_channels == 16 and small.image_shape == (1, 32, 32)
    assert small.likelihood.num_scored_dims(small.image_shape) == 28 * 28


def test_preset_overrides_replace_init_args():
    with torch.device("meta"):
        model = vaezoo.create("nvae-cifar10", decoder_channels=64, num_flows=0)
    assert model.config["init_args"]["decoder_channels"] == 64 and len(model.flows) == 0


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ((2, 10, True, 1), [10, 5]),
        ((3, 20, True, 1), [20, 10, 5]),
        ((5, 16, True, 4), [16, 8, 4, 4, 4]),
        ((2, 2, False, 1), [2, 2]),
        ((2, [3, 1], False, 1), [3, 1]),
    ],
)
def test_groups_per_scale(args, expected):
    assert expand_groups_per_scale(*args) == expected


def test_groups_per_scale_list_must_match_scales():
    with pytest.raises(ValueError, match="lists 1 scales"):
        expand_groups_per_scale(2, [4])
