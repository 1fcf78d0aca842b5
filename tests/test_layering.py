"""The layering of the source tree, read from its syntax trees (not grep):

- the core (``vaezoo``) never imports a plugin, and no plugin imports another plugin;
- the core's modules form layers, and no import, at module level or inside a function, points to a higher layer:
  foundations (errors, registry, hook specifications) < the layer library ``vaezoo.nn`` < the contracts
  (``vaezoo.interfaces``) < distributions, plugin manager and specs < saved-model I/O (``vaezoo.hub``) < models <
  components, data machinery and evaluation < training and benchmarking < the command line;
- models, components, the layer library and the contracts take from the Hub I/O only the model mixin
  (``vaezoo.hub.mixin``), and never import training or the command line.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

#: (module prefix, layer); a module takes the layer of its longest matching prefix
LAYERS = [
    ("vaezoo._version", 0),
    ("vaezoo.errors", 0),
    ("vaezoo.hookspecs", 0),
    ("vaezoo.registry", 0),
    ("vaezoo.progress", 0),  # rich progress bars for long operations (imports only rich)
    ("vaezoo.hardware", 0),  # CPU model and vector extensions, the bf16 warning (imports only torch)
    ("vaezoo.nn", 1),
    ("vaezoo.interfaces", 2),
    ("vaezoo.distributions", 3),
    ("vaezoo.plugins", 3),
    ("vaezoo.config", 3),
    ("vaezoo.spec_check", 3),  # recipe structure checks against the registry and the interfaces
    ("vaezoo.provenance", 3),  # the provenance record of a run's outputs: versions, plugins, machine, recipe, commit
    ("vaezoo.hub", 4),
    ("vaezoo.testing.doubles", 4),  # stand-ins for the assembler's slots (models build their examples of them)
    ("vaezoo.models", 5),
    ("vaezoo.components", 6),
    ("vaezoo.data", 6),
    ("vaezoo.evaluation", 6),
    ("vaezoo.testing", 6),  # the contract checks a plugin runs in its own suite
    ("vaezoo.plots", 6),
    (
        "vaezoo.loggers",
        6,
    ),  # the built-in logger (TensorBoard), registered by the core plugin  # training curves of a run (fit calls it at its end)
    ("vaezoo.training", 7),
    ("vaezoo.benchmarking", 7),
    ("vaezoo.commands", 8),
    ("vaezoo.cli", 8),
    ("vaezoo.__main__", 8),
    ("vaezoo", 9),  # the package itself: the user API (create, load, build) on top of everything
]
MODEL_SIDE = ("vaezoo.nn", "vaezoo.interfaces", "vaezoo.models", "vaezoo.components")
ALLOWED_HUB_FOR_MODELS = "vaezoo.hub.mixin"


def _module_name(path: Path) -> str:
    base = REPO / "plugins" if path.is_relative_to(REPO / "plugins") else REPO
    parts = list(path.relative_to(base).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _sources() -> dict[str, Path]:
    files = list((REPO / "vaezoo").rglob("*.py")) + list((REPO / "plugins").rglob("*.py"))
    return {_module_name(p): p for p in files}


SOURCES = _sources()
PLUGINS = sorted({m.split(".")[0] for m in SOURCES if m.startswith("vaezoo_")})


def _imports(module: str, path: Path) -> list[tuple[str, bool, int]]:
    """``(imported module, inside a function, line)`` for every import of a vaezoo module or plugin."""
    tree = ast.parse(path.read_text(), str(path))
    is_package = path.name == "__init__.py"
    found = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            local = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                found.extend((alias.name, in_function, child.lineno) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = module.split(".") if is_package else module.split(".")[:-1]
                    base = base[: len(base) - (child.level - 1)]
                    target = ".".join(base + ([child.module] if child.module else []))
                else:
                    target = child.module or ""
                # "from pkg import name" imports pkg.name when that is a module
                for alias in child.names:
                    sub = f"{target}.{alias.name}"
                    found.append((sub if sub in SOURCES else target, in_function, child.lineno))
            elif isinstance(child, ast.Call) and _dynamic_import(child):
                found.append((_dynamic_import(child), in_function, child.lineno))
            visit(child, local)

    visit(tree, False)
    return [(t, local, line) for t, local, line in found if t.split(".")[0].startswith("vaezoo")]


def _dynamic_import(call: ast.Call) -> str | None:
    """The module named by ``importlib.import_module("m")``, ``import_module("m")`` or ``__import__("m")``."""
    func = call.func
    name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else None
    if name in ("import_module", "__import__") and call.args and isinstance(call.args[0], ast.Constant):
        return call.args[0].value if isinstance(call.args[0].value, str) else None
    return None


def _string_constants(path: Path) -> list[tuple[str, int]]:
    tree = ast.parse(path.read_text(), str(path))
    return [(n.value, n.lineno) for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)]


def _layer(module: str) -> int:
    matches = [(len(prefix), layer) for prefix, layer in LAYERS if module == prefix or module.startswith(prefix + ".")]
    assert matches, f"{module} has no layer: add it to LAYERS in {Path(__file__).name}"
    return max(matches)[1]


CORE = sorted(m for m in SOURCES if m.split(".")[0] == "vaezoo")


def test_every_core_module_has_a_layer():
    for module in CORE:
        _layer(module)
    assert len(PLUGINS) >= 6, PLUGINS


@pytest.mark.parametrize("module", CORE)
def test_core_imports_no_plugin_and_never_upward(module):
    problems = []
    for target, local, line in _imports(module, SOURCES[module]):
        where = f"{SOURCES[module].relative_to(REPO)}:{line}"
        if target.split(".")[0] != "vaezoo":
            problems.append(f"{where}: the core imports the plugin {target}")
            continue
        if target == "vaezoo" and module != "vaezoo":
            problems.append(f"{where}: imports the package top ({target}); import the defining module instead")
        elif _layer(target) > _layer(module):
            kind = "a function-local import" if local else "an import"
            problems.append(f"{where}: {kind} points upward, {module} (layer {_layer(module)}) -> {target}")
        if module.startswith(MODEL_SIDE):
            if target.startswith(("vaezoo.training", "vaezoo.commands", "vaezoo.cli")):
                problems.append(f"{where}: {module} imports {target}")
            if target.startswith("vaezoo.hub") and target != ALLOWED_HUB_FOR_MODELS:
                problems.append(f"{where}: {module} imports {target}; models reach the Hub only by the mixin")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("plugin", PLUGINS)
def test_no_plugin_imports_another(plugin):
    problems = []
    for module in (m for m in SOURCES if m.split(".")[0] == plugin):
        for target, _, line in _imports(module, SOURCES[module]):
            owner = target.split(".")[0]
            if owner.startswith("vaezoo_") and owner != plugin:
                problems.append(f"{SOURCES[module].relative_to(REPO)}:{line}: {plugin} imports the plugin {target}")
    assert not problems, "\n".join(problems)


def _names_by_plugin() -> dict[str, set[str]]:
    import vaezoo

    registry = vaezoo.get_registry()
    owners: dict[str, set[str]] = {}
    for kind in registry.kinds():
        for entry in registry.entries(kind):
            owners.setdefault(entry.plugin, set()).add(entry.name)
    return owners


@pytest.mark.parametrize("plugin", PLUGINS)
def test_no_plugin_names_another_plugins_components(plugin):
    """No string in a plugin's code names a component, preset or class path that another plugin registers (a
    registry look-up or a spec by name is a dependency as real as an import); the core's names are fair game."""
    owners = _names_by_plugin()
    others = {
        name: owner
        for owner, names in owners.items()
        if owner not in (plugin.removeprefix("vaezoo_"), "core")
        for name in names
    }
    problems = []
    for module in (m for m in SOURCES if m.split(".")[0] == plugin):
        for text, line in _string_constants(SOURCES[module]):
            owner = others.get(text) or others.get(text.rsplit(".", 1)[-1] if text.startswith("vaezoo_") else "")
            dotted = text.split(".")[0]
            if owner is None and dotted.startswith("vaezoo_") and dotted in PLUGINS and dotted != plugin:
                owner = dotted
            if owner is not None:
                problems.append(
                    f"{SOURCES[module].relative_to(REPO)}:{line}: {plugin} names {text!r} of plugin {owner}"
                )
    assert not problems, "\n".join(problems)


def test_the_checks_see_violations(tmp_path, monkeypatch):
    """The AST reading catches relative, aliased and function-local imports (so the tests above can fail)."""
    source = tmp_path / "probe.py"
    source.write_text(
        "from ..training import trainer as t\n"
        "def f():\n    import vaezoo_nvae.cells\n    from ..hub import loading\n"
        "g = lambda: __import__('x')\n"
        "import importlib\nh = importlib.import_module('vaezoo_lsgm.prior')\ni = __import__('vaezoo.cli')\n"
    )
    found = _imports("vaezoo.models.probe", source)
    assert ("vaezoo_lsgm.prior", False, 7) in found and ("vaezoo.cli", False, 8) in found
    assert ("vaezoo.training.trainer", False, 1) in found
    assert ("vaezoo_nvae.cells", True, 3) in found
    assert ("vaezoo.hub.loading", True, 4) in found
    assert _layer("vaezoo.training.trainer") > _layer("vaezoo.models.probe")
