"""Registry, plugin manager and the list/plugins commands."""

from __future__ import annotations

import pytest
import torch

import vaezoo
from vaezoo import hookimpl, plugins
from vaezoo.cli import main
from vaezoo.distributions import DiagonalNormal
from vaezoo.errors import RegistryError
from vaezoo.interfaces import INTERFACES, Example, UnconditionalPrior
from vaezoo.registry import Registry


class WidePrior(UnconditionalPrior):
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


def test_a_clash_between_plugins_skips_the_later_one_whole(capsys):
    class _Clashing:  # registers a new prior and a name the first plugin registered
        @hookimpl
        def register_components(self, register):
            register("prior", WidePrior, name="OtherWidePrior")
            register("prior", WidePrior)

    with plugins.plugin(_WidePriorPlugin(), name="wide_a"), plugins.plugin(_Clashing(), name="wide_b"):
        registry = vaezoo.get_registry()
        assert registry.get("prior", "WidePrior").plugin == "wide_a"
        assert "OtherWidePrior" not in registry.names("prior")  # nothing of a skipped plugin is registered
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("warning: plugin 'wide_b' is skipped: ")
        assert "'WidePrior' is registered twice: by plugin 'wide_a' and by plugin 'wide_b'" in err
        assert "VAEZOO_BLOCK_PLUGINS=wide_b stops loading it" in err
        failed = {i.name: i.error for i in plugins.plugin_infos(failed=True)}
        assert failed["wide_a"] is None and "registered twice" in failed["wide_b"]
        assert "wide_b" not in {i.name for i in plugins.plugin_infos()}


def _entry_points_with(monkeypatch, tmp_path, modules: dict[str, str]):
    """The installed entry points plus third-party ones whose modules (name -> source) live in ``tmp_path``."""
    from importlib import metadata

    real = metadata.entry_points(group=plugins.ENTRY_POINT_GROUP)
    extra = []
    for name, source in modules.items():
        (tmp_path / f"{name}.py").write_text(source)
        extra.append(metadata.EntryPoint(name=name, value=name, group=plugins.ENTRY_POINT_GROUP))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(plugins.importlib_metadata, "entry_points", lambda group: [*real, *extra])
    plugins.reset()


def test_a_broken_or_clashing_installed_plugin_breaks_no_command(monkeypatch, tmp_path, capsys):
    clash = (
        "from vaezoo import hookimpl\n"
        "from vaezoo_baselines import ConvVAE\n"
        "@hookimpl\n"
        "def register_components(register):\n"
        "    register('model', ConvVAE)\n"  # the built-in's name: the built-in keeps it
    )
    _entry_points_with(
        monkeypatch, tmp_path, {"vaezoo_broken": "import no_such_module_anywhere\n", "vaezoo_clash": clash}
    )
    assert main(["--version"]) == 0
    assert main(["list", "model"]) == 0
    assert vaezoo.get_registry().get("model", "ConvVAE").plugin == "baselines"
    assert vaezoo.create("test-vae").latent_dim > 0  # every command and API still works
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("warning: plugin")]
    assert len(lines) == 2, err  # once each, however often the registry is used
    assert "plugin 'vaezoo_broken' is skipped: ModuleNotFoundError: No module named 'no_such_module_anywhere'" in err
    assert "plugin 'vaezoo_clash' is skipped: model 'ConvVAE' is registered twice" in err
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert "vaezoo_broken" in out and "failed: ModuleNotFoundError" in out and "vaezoo_clash" in out
    monkeypatch.setenv("VAEZOO_BLOCK_PLUGINS", "vaezoo_broken,vaezoo_clash")
    plugins.reset()
    assert main(["list", "model"]) == 0
    assert "warning" not in capsys.readouterr().err  # blocked: not loaded, nothing to say


def test_version_and_help_build_no_registry(monkeypatch, capsys):
    def refuse():
        raise AssertionError("the registry was built")

    plugins.reset()  # then loading a plugin or building the registry would call these
    monkeypatch.setattr(plugins, "_load_entry_points", lambda pm: refuse())
    monkeypatch.setattr(plugins, "_build_registry", lambda pm: refuse())
    assert main(["--version"]) == 0 and "vaezoo 0.1.0" in capsys.readouterr().out
    assert main(["--help"]) == 0 and "fit" in capsys.readouterr().out


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


def test_registration_refuses_a_class_that_does_not_implement_its_kind():
    class Empty(UnconditionalPrior):
        pass

    class HalfDone(UnconditionalPrior):
        def forward(self, state, latent_shape, temperature=1.0):
            raise NotImplementedError

    registry = Registry(INTERFACES)
    with pytest.raises(
        RegistryError, match=r"^prior 'Empty' \(plugin 'p'\): .*Empty does not implement example, forward"
    ):
        registry.register("prior", Empty, plugin="p")
    with pytest.raises(RegistryError, match=r"HalfDone does not implement example \(abstract in Prior\)$"):
        registry.register("prior", HalfDone, plugin="p")
    with pytest.raises(RegistryError, match=r"WidePrior is not a subclass of vaezoo.interfaces.Posterior"):
        registry.register("posterior", WidePrior, plugin="p")
    registry.register("prior", WidePrior, plugin="p")  # a complete one registers
    assert registry.names("prior") == ["WidePrior"]


def test_a_plugin_registered_in_code_and_removed_leaves_no_failure_behind():
    """A plugin whose hooks raise is listed as failed while it is registered; unregistered, it is neither loaded nor
    failed, and a sound plugin registered later under the same name loads."""

    class _Failing:
        @hookimpl
        def register_components(self, register):
            raise RuntimeError("broken wheel")

    with plugins.plugin(_Failing(), name="flaky"):
        vaezoo.get_registry()
        assert [i.error for i in plugins.plugin_infos(failed=True) if i.name == "flaky"] == [
            "RuntimeError: broken wheel"
        ]
    assert all(i.name != "flaky" for i in plugins.plugin_infos(failed=True))
    with plugins.plugin(_WidePriorPlugin(), name="flaky"):
        assert vaezoo.get_registry().get("prior", "WidePrior").plugin == "flaky"
        assert all(i.error is None for i in plugins.plugin_infos(failed=True) if i.name == "flaky")


def test_plugins_lists_a_blocked_plugin_as_blocked(capsys, monkeypatch):
    monkeypatch.setenv("VAEZOO_BLOCK_PLUGINS", "vdvae")
    plugins.reset()
    assert main(["plugins", "--components", "false"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if "vdvae" in line]
    assert len(rows) == 1 and "blocked (VAEZOO_BLOCK_PLUGINS)" in rows[0] and "loaded" not in rows[0]


def test_an_unknown_name_says_which_plugins_are_blocked(capsys, monkeypatch):
    """A preset or component of a blocked plugin is unknown, and the line says the block may be why."""
    monkeypatch.setenv("VAEZOO_BLOCK_PLUGINS", "vdvae")
    plugins.reset()
    with pytest.raises(RegistryError) as raised:
        vaezoo.get_registry().get("preset", "vdvae-mnist")
    assert str(raised.value).endswith("; VAEZOO_BLOCK_PLUGINS blocks vdvae, whose names are not loaded")
    assert main(["fit", "recipes/vdvae_mnist.yaml", "--run_dir", "never"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.endswith("; VAEZOO_BLOCK_PLUGINS blocks vdvae, whose names are not loaded")
    monkeypatch.delenv("VAEZOO_BLOCK_PLUGINS")
    plugins.reset()
    with pytest.raises(RegistryError) as raised:
        vaezoo.get_registry().get("preset", "no-such-preset")
    assert "blocks" not in str(raised.value)
