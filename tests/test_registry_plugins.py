"""Registry, plugin manager and the list/plugins commands."""

from __future__ import annotations

import pytest
import torch

import vaezoo
from vaezoo import hookimpl, plugins
from vaezoo.cli import main
from vaezoo.distributions import DiagonalNormal
from vaezoo.errors import RegistryError
from vaezoo.interfaces import Example, Prior
from vaezoo.registry import Registry


class WidePrior(Prior):
    """N(0, scale^2) prior (registered by test plugins)."""

    def __init__(self, scale: float = 2.0) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, state, latent_shape, temperature=1.0):
        zeros = torch.zeros(tuple(latent_shape))
        return DiagonalNormal(zeros, zeros + torch.log(torch.tensor(self.scale)), temperature)

    @classmethod
    def example(cls):
        z = torch.randn(2, 3, requires_grad=True)
        return Example(
            build=cls, inputs=(z,), output_shape=(2, 3), call=lambda m, i: m(None, i[0].shape).log_prob(i[0])
        )


class _WidePriorPlugin:
    @hookimpl
    def register_components(self, register):
        register("prior", WidePrior)


def test_register_and_list_with_wildcards():
    registry = Registry()
    registry.register("prior", WidePrior, plugin="a")
    registry.register("preset", lambda: {}, "nvae-tiny", plugin="a")
    registry.register("preset", lambda: {}, "vae-tiny", plugin="a")
    assert [e.name for e in registry.entries("preset", "nvae-*")] == ["nvae-tiny"]
    assert [e.name for e in registry.entries("preset", "*-TINY")] == ["nvae-tiny", "vae-tiny"]
    assert [e.name for e in registry.entries(None, "Wide*")] == ["WidePrior"]
    assert registry.get("prior", "WidePrior").target is WidePrior


def test_duplicate_registration_names_both_owners():
    registry = Registry()
    registry.register("prior", WidePrior, plugin="first_plugin")
    with pytest.raises(RegistryError, match="first_plugin.*second_plugin"):
        registry.register("prior", WidePrior, plugin="second_plugin")


def test_unknown_name_suggests_close_match():
    registry = Registry()
    registry.register("prior", WidePrior, plugin="p")
    with pytest.raises(RegistryError, match="did you mean WidePrior"):
        registry.get("prior", "WidePriors")
    with pytest.raises(RegistryError, match="unknown component kind 'priors'"):
        registry.entries("priors")


def test_plugin_registered_in_code_is_listed_and_removed():
    assert "WidePrior" not in vaezoo.list_components("prior")
    with plugins.plugin(_WidePriorPlugin(), name="wide"):
        assert "WidePrior" in vaezoo.list_components("prior")
        assert vaezoo.get_registry().get("prior", "WidePrior").plugin == "wide"
    assert "WidePrior" not in vaezoo.list_components("prior")


def test_duplicate_across_plugins_is_an_error():
    with plugins.plugin(_WidePriorPlugin(), name="wide_a"), plugins.plugin(_WidePriorPlugin(), name="wide_b"):
        with pytest.raises(RegistryError, match="wide_a.*wide_b|wide_b.*wide_a"):
            vaezoo.get_registry()


def test_builtin_plugins_come_from_entry_points():
    infos = {i.name: i for i in plugins.plugin_infos()}
    assert infos["baselines"].builtin and infos["baselines"].distribution == "vaezoo"
    assert infos["nvae"].builtin
    assert vaezoo.get_registry().get("model", "ConvVAE").plugin == "baselines"


def test_block_plugins_env(monkeypatch):
    monkeypatch.setenv("VAEZOO_BLOCK_PLUGINS", "baselines")
    plugins.reset()
    try:
        assert "baselines" not in {i.name for i in plugins.plugin_infos()}
        assert "ConvVAE" not in vaezoo.list_components("model")
    finally:
        monkeypatch.delenv("VAEZOO_BLOCK_PLUGINS")
        plugins.reset()
    assert "ConvVAE" in vaezoo.list_components("model")


def test_list_and_plugins_commands(capsys):
    assert main(["list", "prior"]) == 0
    out = capsys.readouterr().out
    assert "StandardNormalPrior" in out and "core" in out
    assert main(["list", "preset", "test-*"]) == 0
    out = capsys.readouterr().out
    assert "test-vae" in out and "vae-mnist" not in out
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert "baselines" in out and "0.1.0" in out and "ConvVAE" in out


def test_list_unknown_kind_is_one_line_exit_2(capsys):
    assert main(["list", "priorz"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "did you mean prior" in err


def test_create_with_overrides():
    model = vaezoo.create("test-vae", latent_dim=5)
    assert model.latent_dim == 5 and model.config["init_args"]["latent_dim"] == 5
    assert model.config["init_args"]["prior"]["class_path"] == "StandardNormalPrior"
    with pytest.raises(RegistryError, match="did you mean test-vae"):
        vaezoo.create("test-vea")
