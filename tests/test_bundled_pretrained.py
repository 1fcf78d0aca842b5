"""The pretrained model that ships with the package: ``nvae-mnist-small``, trained by ``vaezoo fit
recipes/nvae_mnist_small.yaml`` (``benchmarks/reproduce_pretrained.py``), loads offline right after installation.

Offline throughout, with an empty model store and an empty Hugging Face cache (the conftest fixture sets
HF_HUB_OFFLINE=1 and temporary HF_HOME and VAEZOO_HOME), and no socket may connect: what loads comes from the
package itself. A test plugin adds bundled entries in a package made in a temporary folder, to check the lookup
order and the one-line errors of a bundled folder that is missing or misnamed.
"""

from __future__ import annotations

import hashlib
import json
import socket
import sys
import tomllib
from importlib import resources
from pathlib import Path

import pytest
import torch
from conftest import REPO_ROOT
from PIL import Image

import vaezoo
from vaezoo import hookimpl, hub
from vaezoo.cli import main
from vaezoo.config import build
from vaezoo.errors import VaezooError
from vaezoo.plugins import get_registry, plugin

NAME = "nvae-mnist-small"
RECIPE = REPO_ROOT / "recipes" / "nvae_mnist_small.yaml"


@pytest.fixture
def no_network(monkeypatch):
    """Any connection attempt fails the test: the shipped model must need none."""

    def refuse(self, address, *args, **kwargs):
        raise AssertionError(f"a connection to {address} was attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)


def _shipped() -> Path:
    """The folder inside the installed NVAE plugin package, found independently of the hub's lookup."""
    return Path(str(resources.files("vaezoo_nvae").joinpath("weights", NAME)))


def test_the_shipped_weights_are_the_ones_their_card_describes():
    folder = _shipped()
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    config = json.loads((folder / "config.json").read_text())
    raw = (folder / "model.safetensors").read_bytes()
    assert config["weights"] == {"sha256": hashlib.sha256(raw).hexdigest(), "size": len(raw)}
    assert len(raw) < 5_000_000  # the package stays small
    meta = config["metadata"]
    assert meta["preset"] == NAME and meta["pretrained"] == NAME and meta["source"].startswith("trained by vaezoo fit")
    # the numbers vaezoo fit measured, each with its protocol: not a paper's
    assert [m["name"] for m in meta["metrics"]] == ["ELBO", "IW-NLL (k=100)"]
    for metric in meta["metrics"]:
        assert (
            metric["source"] == "vaezoo fit, after 1800 steps"
            and metric["split"] == "test"
            and metric["unit"] == "nats"
        )
        assert "k=100 importance samples" in metric["protocol"] and "bundled MNIST digits" in metric["protocol"]
    record = meta["provenance"]
    assert record["recipe_file"].endswith("recipes/nvae_mnist_small.yaml") and record["ended"]
    assert record["machine"] and record["threads"] >= 1 and record["torch"]["version"]  # what and where it ran
    assert sum(p.numel() for p in build(config["model"]).parameters()) == 825_878
    assert meta["dataset"].startswith("bundled MNIST digits")


def test_the_card_metric_is_what_the_weights_score(no_network):
    """The test ELBO of the card, recomputed here on the 500 test digits with other posterior noise: the weights are
    the trained ones the card measured (an untrained model scores about -550 nats, a half-trained one -110)."""
    model = vaezoo.load(NAME)
    data = build({"class_path": "BundledMNIST", "init_args": {"pad": 2}}, kind="dataset")
    x = torch.stack([item[0] for item in data.test_dataset()])
    torch.manual_seed(123)
    with torch.no_grad():
        elbo = float((-model(x).nelbo).double().mean())
    (card_elbo,) = [m["value"] for m in model.card.metrics if m["name"] == "ELBO"]
    assert abs(elbo - card_elbo) < 2.0, (elbo, card_elbo)


def test_load_offline_from_the_package_with_nothing_installed_or_cached(no_network):
    assert not hub.store_dir().exists() and hub.installed_folder(NAME) is None
    model = vaezoo.load(NAME)
    assert model.card.origin == "bundled" and Path(model.card.location) == _shipped()
    assert model.card.name == NAME and not model.training
    assert str(hub.locate(NAME)) == f"bundled ({_shipped()})"
    from safetensors.torch import load_file

    saved = load_file(_shipped() / "model.safetensors")
    state = model.state_dict()
    assert saved.keys() <= state.keys()
    assert all(torch.equal(state[key], value) for key, value in saved.items())

    torch.manual_seed(7)
    images = model.sample(16)
    assert images.shape == (16, *vaezoo.create(NAME).image_shape) == (16, 1, 32, 32)
    assert images.min() >= 0 and images.max() <= 1
    torch.manual_seed(7)
    assert torch.equal(model.sample(16), images)  # the same seed, the same samples
    torch.manual_seed(8)
    assert not torch.equal(model.sample(16), images)

    same = vaezoo.create(NAME, pretrained=True)  # the preset's published weights: the same model
    assert same.card.origin == "bundled" and same.state_dict().keys() == state.keys()
    assert all(torch.equal(same.state_dict()[key], value) for key, value in state.items())


def test_the_commands_take_the_shipped_model(no_network, tmp_path, capsys):
    out = tmp_path / "x.png"
    assert main(["sample", NAME, "--n", "16", "--out", str(out)]) == 0
    image = Image.open(out)
    side = 4 * (32 + 2) + 2  # a 4x4 grid of 32-pixel images with torchvision's 2-pixel padding
    assert image.format == "PNG" and image.size == (side, side)
    assert main(["list", "pretrained", NAME]) == 0
    listing = capsys.readouterr().out
    assert "bundled" in listing.split(NAME, 1)[1] and "installed, bundled, cached, Hub" in listing.replace("\n", " ")
    assert main(["download", NAME]) == 2  # nothing to download: one line that says so
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "ships with its package" in err and f"vaezoo.load('{NAME}')" in err


def test_a_wheel_takes_the_shipped_files():
    """pyproject's package data covers every file of the bundled folder: setuptools globs each pattern from the
    package's folder, and takes the files it matches (``*`` stops at ``/``)."""
    patterns = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    package = REPO_ROOT / "plugins" / "vaezoo_nvae"
    files = {p for p in (package / "weights").rglob("*") if p.is_file()}
    taken = {p for pattern in patterns.get("vaezoo_nvae", []) for p in package.glob(pattern) if p.is_file()}
    assert len(files) == 3 and files <= taken, sorted(str(p) for p in files - taken)


# --- the lookup itself, with a package made here ---------------------------------------------------------------


class _Bundles:
    @hookimpl
    def register_pretrained(self, register):
        register("acme-tiny", bundled="acme_bundle:models/tiny", source="test")
        register("acme-gone", bundled="acme_bundle:models/gone", source="test")
        register("acme-misnamed", bundled="acme_bundle/models/tiny", source="test")
        register("acme-outside", bundled="acme_bundle:../tiny", source="test")


@pytest.fixture
def acme(tmp_path, monkeypatch):
    """A package ``acme_bundle`` with a saved tiny ConvVAE in ``models/tiny``; yields that model's state dict."""
    package = tmp_path / "site" / "acme_bundle"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    torch.manual_seed(3)
    model = vaezoo.create("vae-mnist", latent_dim=4, hidden_channels=4, hidden_units=16)
    hub.save_pretrained(model, package / "models" / "tiny")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    try:
        with plugin(_Bundles(), name="acme-bundles"):
            yield model.state_dict()
    finally:
        sys.modules.pop("acme_bundle", None)


def _one_line(call) -> str:
    with pytest.raises(VaezooError) as info:
        call()
    assert "\n" not in str(info.value)
    return str(info.value)


def test_the_store_comes_before_the_bundled_folder(acme, no_network):
    bundled = vaezoo.load("acme-tiny")
    assert bundled.card.origin == "bundled" and hub.locate("acme-tiny").kind == "bundled"
    assert all(torch.equal(bundled.state_dict()[k], v) for k, v in acme.items())
    with torch.no_grad():  # another model installed under the name: the store wins
        for p in bundled.parameters():
            p.add_(1.0)
    hub.save_pretrained(bundled, hub.store_path("acme-tiny"))
    installed = vaezoo.load("acme-tiny")
    assert installed.card.origin == "store" and hub.locate("acme-tiny").kind == "installed"
    assert torch.equal(installed.state_dict()["decoder.0.weight"], acme["decoder.0.weight"] + 1.0)
    assert "acme-tiny" in get_registry().names("pretrained")


def test_a_missing_or_misnamed_bundled_folder_is_one_line(acme, no_network):
    message = _one_line(lambda: vaezoo.load("acme-gone"))
    assert "acme-gone ships with the package in" in message and "reinstall" in message
    assert hub.locate("acme-gone").kind == "nowhere"
    assert "bundled must be 'package:folder/inside/it', got 'acme_bundle/models/tiny'" in _one_line(
        lambda: vaezoo.load("acme-misnamed")
    )
    assert "got 'acme_bundle:../tiny'" in _one_line(lambda: vaezoo.load("acme-outside"))
