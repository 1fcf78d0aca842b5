"""``hubconf.py``: torch.hub loads vaezoo's presets from a checkout of the repository (``source="local"``)."""

from __future__ import annotations

import pytest
import torch
from conftest import REPO_ROOT

import vaezoo
from vaezoo.errors import VaezooError


@pytest.mark.parametrize(("entry", "preset"), [("nvae_mnist_small", "nvae-mnist-small"), ("vae_mnist", "vae-mnist")])
def test_hub_load_builds_the_preset_as_vaezoo_create(entry, preset):
    torch.manual_seed(3)
    model = torch.hub.load(str(REPO_ROOT), entry, source="local")
    torch.manual_seed(3)
    expected = vaezoo.create(preset)
    assert type(model) is type(expected)
    state, reference = model.state_dict(), expected.state_dict()
    assert list(state) == list(reference)
    assert all(torch.equal(state[key], reference[key]) for key in reference), preset
    torch.manual_seed(4)
    other = vaezoo.create(preset)  # the comparison can tell two draws apart
    assert not all(torch.equal(other.state_dict()[key], reference[key]) for key in reference)


def test_hub_load_passes_overrides_and_pretrained_gives_vaezoos_one_line_error():
    torch.manual_seed(0)
    model = torch.hub.load(str(REPO_ROOT), "vae_mnist", source="local", latent_dim=4)
    torch.manual_seed(0)
    reference = vaezoo.create("vae-mnist", latent_dim=4).state_dict()
    assert model.latent_dim == 4 and model.state_dict().keys() == reference.keys()
    assert all(torch.equal(model.state_dict()[key], reference[key]) for key in reference)
    with pytest.raises(VaezooError, match=r"^'vae-mnist' is a preset without published weights: vaezoo\.create"):
        torch.hub.load(str(REPO_ROOT), "vae_mnist", source="local", pretrained=True)
    # the small NVAE ships its weights with the package: pretrained=True is vaezoo.load of them
    shipped = torch.hub.load(str(REPO_ROOT), "nvae_mnist_small", source="local", pretrained=True)
    loaded = vaezoo.load("nvae-mnist-small").state_dict()
    assert all(torch.equal(shipped.state_dict()[key], value) for key, value in loaded.items())


def test_hub_list_and_help_read_the_entry_points(tmp_path, monkeypatch):
    # torch.hub.list and help take GitHub repositories only; a checkout placed in the hub cache under the name torch.hub
    # would have unpacked it to is read from there, with no request made
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path))
    (tmp_path / "vaezoo_vaezoo_main").symlink_to(REPO_ROOT)
    entries = torch.hub.list("vaezoo/vaezoo:main", trust_repo=True, skip_validation=True, verbose=False)
    assert {"nvae_mnist_small", "vae_mnist", "nvae_cifar10", "vdvae_mnist"} <= set(entries)
    assert [name for name in entries if name.startswith("test_") or not name.islower()] == []
    doc = torch.hub.help("vaezoo/vaezoo:main", "nvae_mnist_small", trust_repo=True, skip_validation=True)
    assert doc.startswith("A small NVAE for padded MNIST: 8 channels")
    assert "vaezoo.create('nvae-mnist-small', **kwargs)" in doc and "pretrained entry 'nvae-mnist-small'" in doc
    doc = torch.hub.help("vaezoo/vaezoo:main", "vae_mnist", trust_repo=True, skip_validation=True)
    assert "no published weights" in doc
    doc = torch.hub.help("vaezoo/vaezoo:main", "nvae_cifar10", trust_repo=True, skip_validation=True)
    assert "weights of the registered pretrained entry 'nvae-cifar10'" in doc
    for name in entries:
        doc = torch.hub.help("vaezoo/vaezoo:main", name, trust_repo=True, skip_validation=True)
        assert "Args:" in doc and "pretrained:" in doc, name


def test_dependencies_name_every_plugin_the_entry_points_build_from():
    import importlib.metadata
    import importlib.util

    spec = importlib.util.spec_from_file_location("vaezoo_hubconf", REPO_ROOT / "hubconf.py")
    hubconf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hubconf)
    entries = [name for name in dir(hubconf) if callable(getattr(hubconf, name)) and not name.startswith("_")]
    registry = vaezoo.get_registry()
    # the plugin registering each entry point's preset, and the package its entry point names
    modules = {ep.name: ep.value for ep in importlib.metadata.entry_points(group="vaezoo")}
    packages = {modules[registry.get("preset", name.replace("_", "-")).plugin] for name in entries}
    assert packages == {"vaezoo_baselines", "vaezoo_iaf", "vaezoo_ladder", "vaezoo_nvae", "vaezoo_vdvae"}
    assert packages <= set(hubconf.dependencies)
    assert all(importlib.util.find_spec(name) is not None for name in hubconf.dependencies)
