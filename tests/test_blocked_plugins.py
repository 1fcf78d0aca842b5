"""Any paper plugin can be removed and the rest still stands.

For each built-in plugin: with it blocked (``VAEZOO_BLOCK_PLUGINS``), every preset of the other plugins builds (on
the meta device: no memory, no time) and every recipe that names none of its components still resolves. A
recipe's owners are read from the registry with everything loaded, so a preset or recipe that silently depends on
another plugin's component fails here.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
import yaml

import vaezoo
from vaezoo import plugins
from vaezoo.config import expand_recipe_presets, resolve_class_paths
from vaezoo.interfaces import INTERFACES

REPO = Path(__file__).resolve().parents[1]
RECIPES = sorted([*REPO.glob("recipes/**/*.yaml"), *REPO.glob("benchmarks/recipes/*.yaml")])
#: the paper plugins shipped with vaezoo (the core's own default plugin, "core", is the base they all build on)
BUILTIN_PLUGINS = ["baselines", "datasets", "nvae", "iaf", "ladder", "vdvae", "lsgm", "fid"]


def _class_paths(value) -> list[str]:
    if isinstance(value, dict):
        found = [value["class_path"]] if isinstance(value.get("class_path"), str) else []
        return found + [p for v in value.values() for p in _class_paths(v)]
    if isinstance(value, list):
        return [p for v in value for p in _class_paths(v)]
    return []


def _recipe_sections(path: Path) -> dict:
    recipe = yaml.safe_load(path.read_text()) or {}
    return {k: recipe[k] for k in ("model", "objective", "data") if k in recipe}


def _owners(path: Path) -> dict[str, set[str]]:
    """The plugins each section of a recipe needs: those of its class paths and of the preset its model names."""
    registry = vaezoo.get_registry()
    owners = {}
    for section, spec in _recipe_sections(path).items():
        found = {registry.find_class(p).plugin for p in _class_paths(spec)}
        preset = spec.get("preset") if section == "model" and isinstance(spec, dict) else None
        if preset is not None:
            found.add(registry.get("preset", preset).plugin)
            expanded = expand_recipe_presets({section: spec}, registry)
            found |= {registry.find_class(p).plugin for p in _class_paths(expanded)}
        owners[section] = found
    return owners


def _all_owners(owners: dict[str, set[str]]) -> set[str]:
    return set().union(*owners.values()) if owners else set()


@pytest.fixture
def everything():
    """Owners of every preset and recipe with all plugins loaded."""
    plugins.reset()
    registry = vaezoo.get_registry()
    presets = {e.name: e.plugin for e in registry.entries("preset")}
    recipes = {path: _owners(path) for path in RECIPES}
    return presets, recipes


@pytest.fixture
def blocked(monkeypatch):
    def block(name: str) -> None:
        monkeypatch.setenv("VAEZOO_BLOCK_PLUGINS", name)
        plugins.reset()

    yield block
    monkeypatch.delenv("VAEZOO_BLOCK_PLUGINS", raising=False)
    plugins.reset()


def test_the_plugins_and_recipes_are_all_seen(everything):
    presets, recipes = everything
    assert {i.name for i in plugins.plugin_infos() if i.builtin} == {"core", *BUILTIN_PLUGINS}
    assert set(presets.values()) >= {"baselines", "nvae", "iaf", "ladder", "vdvae"}
    assert len(recipes) >= 20 and sum(1 for owners in recipes.values() if _all_owners(owners)) >= 15
    # a recipe that names its preset is owned by the preset's plugin (and by those of the components it names)
    assert {"nvae", "lsgm"} <= recipes[REPO / "recipes" / "lsgm_mnist_small.yaml"]["model"]
    assert recipes[REPO / "recipes" / "nvae_mnist_small.yaml"] == {
        "model": {"core", "nvae"},
        "objective": {"nvae"},
        "data": {"datasets"},
    }


@pytest.mark.parametrize("plugin", BUILTIN_PLUGINS)
def test_blocking_a_plugin_leaves_the_rest_buildable(plugin, everything, blocked):
    presets, recipes = everything
    blocked(plugin)
    registry = vaezoo.get_registry()
    assert plugin not in {i.name for i in plugins.plugin_infos()}
    assert all(e.plugin != plugin for kind in registry.kinds() for e in registry.entries(kind))
    remaining = sorted(name for name, owner in presets.items() if owner != plugin)
    assert set(registry.names("preset")) == set(remaining)
    for name in remaining:
        with torch.device("meta"):
            model = vaezoo.create(name)
        assert sum(p.numel() for p in model.parameters()) > 0, name
    # each recipe section that names none of its components still resolves (blocking the data sets leaves every
    # recipe's model and objective to check)
    resolved = 0
    for path, owners in recipes.items():
        sections = {s: spec for s, spec in _recipe_sections(path).items() if plugin not in owners[s]}
        sections = expand_recipe_presets(sections, registry)  # an unknown preset: ConfigError
        for section, spec in sections.items():
            resolve_class_paths(spec, registry, section)  # ConfigError naming the key if a class is missing
            resolved += 1
    assert resolved >= 20, f"blocking {plugin} left {resolved} recipe sections to check"
    # every remaining component's contract example builds: none reaches for a component of the blocked plugin
    for kind in (k for k in INTERFACES if k != "logger"):  # a logger has no example: check_logger opens one in a folder
        for entry in registry.entries(kind):
            with torch.device("meta"), warnings.catch_warnings():
                warnings.filterwarnings(
                    "ignore", message=".*copying from a non-meta parameter"
                )  # weights: a no-op here
                built = entry.target.example().build()
            assert isinstance(built, entry.target), entry.name
    # the published weights that remain name a preset and a converter that remain
    for entry in registry.entries("pretrained"):
        for kind in ("preset", "converter"):
            if entry.metadata.get(kind) is not None:
                assert entry.metadata[kind] in registry.names(kind), (entry.name, kind)


def test_the_core_cannot_be_blocked_and_naming_it_says_so(blocked, capsys):
    """Blocking ``core`` would leave every assembled model's preset listed and none buildable: it is refused with one
    warning line, and everything else in the same setting is still blocked."""
    capsys.readouterr()
    blocked("core,vdvae")
    registry = vaezoo.get_registry()
    assert "HierarchicalVAE" in registry.names("model") and "EncoderCombiner" in registry.names("combiner")
    assert "ZInjectionCombiner" not in registry.names("combiner")  # vdvae is blocked
    assert plugins.blocked_plugins() == {"vdvae"}
    warnings = [line for line in capsys.readouterr().err.splitlines() if "core" in line]
    assert warnings == [
        "warning: VAEZOO_BLOCK_PLUGINS names 'core', which cannot be blocked (vaezoo's own components, which every "
        "assembled model builds on); it is loaded"
    ]
