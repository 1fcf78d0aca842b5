"""Importing official NVlabs/NVAE checkpoints: key mapping (on the six paper manifests, no weights), safe loading,
old-argument defaults, and the written model folder."""

from __future__ import annotations

import argparse
import json

import pytest
import torch
from vaezoo_nvae.convert import (
    convert_nvlabs_checkpoint,
    load_official_checkpoint,
    map_official_state_dict,
    model_from_official_checkpoint,
    official_key_map,
)
from vaezoo_nvae.presets import spec_from_official_args

import vaezoo
from vaezoo.errors import CheckpointError

from .conftest import fixtures_root

MANIFESTS = ["mnist", "cifar10", "celeba64", "imagenet32", "celebahq256", "ffhq256"]


def _manifest(name):
    return json.loads((fixtures_root() / "manifests" / f"{name}.json").read_text())


def _meta_state_dict(manifest):
    dtypes = {"float32": torch.float32, "int64": torch.int64}
    return {r["key"]: torch.empty(r["shape"], dtype=dtypes[r["dtype"]], device="meta") for r in manifest["state_dict"]}


@pytest.mark.parametrize("name", MANIFESTS)
def test_every_manifest_key_maps_onto_the_model(name):
    manifest = _manifest(name)
    with torch.device("meta"):
        model = vaezoo.build(spec_from_official_args(manifest["args"]))
    mapped = map_official_state_dict(_meta_state_dict(manifest), model)  # checks keys and shapes, raises otherwise
    assert set(mapped) == set(model.state_dict())
    assert len(mapped) == manifest["n_state_dict_entries"] - manifest["n_weight_normalized_alias_entries"]
    dropped = [k for k, v in official_key_map(r["key"] for r in manifest["state_dict"]).items() if v is None]
    assert len(dropped) == manifest["n_weight_normalized_alias_entries"]
    assert all(k.endswith(".weight_normalized") for k in dropped)


def test_unknown_and_missing_keys_are_named():
    manifest = _manifest("cifar10")
    with torch.device("meta"):
        model = vaezoo.build(spec_from_official_args(manifest["args"]))
    state = _meta_state_dict(manifest)
    with pytest.raises(CheckpointError, match=r"'enc_tower\.0\.mystery\.weight'"):
        map_official_state_dict({**state, "enc_tower.0.mystery.weight": torch.empty(1, device="meta")}, model)
    del state["stem.bias"]
    with pytest.raises(CheckpointError, match=r"lacks 1 model entries, first 'stem\.conv\.bias'"):
        map_official_state_dict(state, model)
    state = _meta_state_dict(manifest)
    state["stem.weight"] = torch.empty(1, 2, 3, device="meta")
    with pytest.raises(CheckpointError, match=r"'stem\.weight' has shape"):
        map_official_state_dict(state, model)


class _NotAllowed:
    pass


def test_refuses_checkpoints_with_arbitrary_objects(tmp_path):
    path = tmp_path / "checkpoint.pt"
    torch.save({"state_dict": {}, "args": argparse.Namespace(dataset="mnist"), "extra": _NotAllowed()}, path)
    with pytest.raises(CheckpointError) as info:
        load_official_checkpoint(path)
    assert "refused to load" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_official_checkpoint(tmp_path / "missing.pt")


def test_old_checkpoints_without_newer_arguments_get_the_official_defaults(tmp_path):
    checkpoint = load_official_checkpoint(fixtures_root() / "mnist_small" / "checkpoint.pt")
    args = {
        k: v
        for k, v in checkpoint["args"].items()
        if k not in ("ada_groups", "min_groups_per_scale", "num_mixture_dec")
    }
    old = tmp_path / "old.pt"
    torch.save({**checkpoint, "args": argparse.Namespace(**args)}, old)
    model = model_from_official_checkpoint(old)
    assert model.groups_per_scale == [2, 2]


def test_converted_folder_loads_and_reproduces_the_model(tmp_path):
    source = fixtures_root() / "cifar_small" / "checkpoint.pt"
    converter = vaezoo.get_registry().get("converter", "nvlabs").target
    folder = converter(str(source), str(tmp_path / "nvae"))
    loaded = vaezoo.load(f"local-dir:{folder}")
    direct = model_from_official_checkpoint(source)
    assert loaded.card_metadata["dataset"] == "cifar10"
    x = torch.rand(2, 3, 32, 32)
    noise = [torch.randn(s) for s in direct.latent_shapes(2)]
    with torch.no_grad():
        torch.testing.assert_close(loaded(x, noise=noise).params, direct(x, noise=noise).params, rtol=0, atol=0)
    assert convert_nvlabs_checkpoint(source, tmp_path / "again").is_dir()
