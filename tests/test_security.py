"""Source-level security rules over the syntax trees of ``vaezoo/``, ``plugins/`` and ``benchmarks/``: weights are
only unpickled with ``weights_only=True``, no pickle is read by an unrestricted unpickler, YAML is read only safely,
and no configuration content is ever evaluated as code.

Names are resolved through the module's imports, so ``from torch import load``, ``import torch as t; t.load(...)``
and ``from pickle import Unpickler as U`` are seen as what they are. A forbidden function is a finding wherever it is
named, not only where it is called (``map(pickle.loads, ...)`` unpickles too). A reviewed exception carries
``# security: allow -- REASON`` on its own line.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from conftest import REPO_ROOT

SCANNED = ("vaezoo", "plugins", "benchmarks")
SOURCES = sorted(p for root in SCANNED for p in (REPO_ROOT / root).rglob("*.py"))

#: never safe on untrusted content, whatever the arguments
FORBIDDEN = {
    "eval",
    "exec",
    "builtins.eval",
    "builtins.exec",
    "pickle.load",
    "pickle.loads",
    "_pickle.load",
    "_pickle.loads",
    "dill.load",
    "dill.loads",
    "marshal.load",
    "marshal.loads",
    "shelve.open",
    "joblib.load",
    "pandas.read_pickle",
    "yaml.load",
    "yaml.load_all",
    "yaml.full_load",
    "yaml.full_load_all",
    "yaml.unsafe_load",
    "yaml.unsafe_load_all",
}
#: unpicklers: allowed only as the base of a class that restricts ``find_class``
UNPICKLERS = {"pickle.Unpickler", "_pickle.Unpickler"}
#: safe only with this keyword set to this constant
GUARDED = {
    "torch.load": ("weights_only", True),
    "torch.serialization.load": ("weights_only", True),
    "numpy.load": ("allow_pickle", False),
}
#: names a snippet may use without importing them (scripts import numpy as np)
_DEFAULT_ALIASES = {"np": "numpy", "pd": "pandas"}


def _aliases(tree: ast.AST) -> dict[str, str]:
    """local name -> qualified name, from every import of the module (scopes are not told apart: stricter)."""
    aliases = dict(_DEFAULT_ALIASES)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    aliases[alias.asname] = alias.name
                else:
                    top = alias.name.split(".")[0]
                    aliases[top] = top
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:
                aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return aliases


def _qualified(node: ast.expr, aliases: dict[str, str]) -> str:
    if isinstance(node, ast.Attribute):
        base = _qualified(node.value, aliases)
        return f"{base}.{node.attr}" if base else ""
    if isinstance(node, ast.Name):
        return aliases.get(node.id, node.id)
    return ""


def _is_restricted_unpickler(node: ast.ClassDef) -> bool:
    return any(isinstance(item, ast.FunctionDef) and item.name == "find_class" for item in node.body)


def violations(source: str, label: str) -> list[str]:
    tree = ast.parse(source)
    aliases = _aliases(tree)
    found: list[tuple[int, str]] = []
    exempt: set[int] = set()  # name nodes already judged (a guarded call's function, a restricted base class)

    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            for base in node.bases:
                if _qualified(base, aliases) in UNPICKLERS:
                    exempt.add(id(base))
                    if not _is_restricted_unpickler(node):
                        found.append(
                            (node.lineno, f"{node.name} subclasses an unpickler without restricting find_class")
                        )
        elif isinstance(node, ast.Call):
            name = _qualified(node.func, aliases)
            if name in GUARDED:
                exempt.add(id(node.func))
                keyword, safe = GUARDED[name]
                value = next((kw.value for kw in node.keywords if kw.arg == keyword), None)
                if not (isinstance(value, ast.Constant) and value.value is safe):
                    found.append((node.lineno, f"{name} without {keyword}={safe}"))
    for node in ast.walk(tree):
        if isinstance(node, (ast.Name, ast.Attribute)) and isinstance(node.ctx, ast.Load) and id(node) not in exempt:
            name = _qualified(node, aliases)
            if name in FORBIDDEN or name in UNPICKLERS:
                found.append((node.lineno, f"{name}"))
            elif name in GUARDED:  # passed around uncalled: its keyword cannot be checked
                found.append((node.lineno, f"{name} used without a call that sets {GUARDED[name][0]}"))
    for node in ast.walk(tree):  # ``from pickle import loads`` binds the forbidden name itself
        if isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:
                if f"{node.module}.{alias.name}" in FORBIDDEN:
                    found.append((node.lineno, f"import of {node.module}.{alias.name}"))
    # an Attribute chain holds its inner Names: report each line and finding once; a reviewed line says why
    lines = source.splitlines()
    return [f"{label}:{line}: {what}" for line, what in sorted(set(found)) if not _waived(lines[line - 1])]


def _waived(line: str) -> bool:
    """``# security: allow -- REASON`` on the line itself, with a reason of some words: a reviewed exception (e.g. a
    benchmark that runs the argument definitions of the official source tree the user points it at)."""
    _, marker, reason = line.partition("# security: allow -- ")
    return bool(marker) and len(reason.split()) >= 3


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_no_unsafe_loading_or_evaluation(path: Path):
    assert violations(path.read_text(), str(path.relative_to(REPO_ROOT))) == []


def test_every_scanned_folder_is_scanned():
    for root in SCANNED:
        assert any(p.is_relative_to(REPO_ROOT / root) for p in SOURCES), root


UNSAFE = {
    "torch_load": ("import torch\ntorch.load('x.pt')\n", "torch.load without weights_only=True"),
    "torch_load_false": ("import torch\ntorch.load(f, weights_only=False)\n", "torch.load without weights_only=True"),
    "torch_load_variable": ("import torch\ntorch.load(f, weights_only=flag)\n", "torch.load without weights_only"),
    "from_torch_import_load": ("from torch import load\nload('x.pt')\n", "torch.load without weights_only=True"),
    "torch_alias": ("import torch as t\nt.load('x.pt')\n", "torch.load without weights_only=True"),
    "from_torch_import_load_as": ("from torch import load as tl\ntl(f)\n", "torch.load without weights_only=True"),
    "torch_serialization_load": (
        "import torch\ntorch.serialization.load(f)\n",
        "torch.serialization.load without weights_only=True",
    ),
    "from_torch_serialization": (
        "from torch.serialization import load\nload(f, map_location='cpu')\n",
        "torch.serialization.load without weights_only=True",
    ),
    "torch_load_passed_around": ("import torch\nf = torch.load\n", "torch.load used without a call"),
    "pickle_load": ("import pickle\npickle.load(f)\n", "pickle.load"),
    "pickle_loads_alias": ("import pickle as pk\npk.loads(b)\n", "pickle.loads"),
    "from_pickle_import_loads": ("from pickle import loads\nloads(b)\n", "pickle.loads"),
    "pickle_loads_as_callback": ("import pickle\nlist(map(pickle.loads, blobs))\n", "pickle.loads"),
    "pickle_unpickler": ("import pickle\npickle.Unpickler(f).load()\n", "pickle.Unpickler"),
    "from_pickle_import_unpickler": ("from pickle import Unpickler as U\nU(f).load()\n", "pickle.Unpickler"),
    "unrestricted_unpickler_subclass": (
        "import pickle\nclass Mine(pickle.Unpickler):\n    pass\n",
        "Mine subclasses an unpickler without restricting find_class",
    ),
    "yaml_load": ("import yaml\nyaml.load(text, Loader=yaml.Loader)\n", "yaml.load"),
    "yaml_full_load": ("import yaml\nyaml.full_load(text)\n", "yaml.full_load"),
    "yaml_load_all": ("import yaml\nyaml.load_all(text)\n", "yaml.load_all"),
    "yaml_unsafe_load": ("from yaml import unsafe_load\nunsafe_load(text)\n", "yaml.unsafe_load"),
    "numpy_allow_pickle": ("import numpy as np\nnp.load(f, allow_pickle=True)\n", "numpy.load without allow_pickle"),
    "numpy_default": ("import numpy\nnumpy.load(f)\n", "numpy.load without allow_pickle=False"),
    "from_numpy_import_load": ("from numpy import load\nload(f, allow_pickle=True)\n", "numpy.load without"),
    "eval": ("eval(cfg['x'])\n", "eval"),
    "exec_builtins": ("import builtins\nbuiltins.exec(code)\n", "builtins.exec"),
    "marshal": ("import marshal\nmarshal.loads(b)\n", "marshal.loads"),
    "a_waiver_without_a_reason": ("exec(block)  # security: allow -- ok\n", "exec"),
    "a_waiver_on_another_line": ("# security: allow -- the official train.py argument block\nexec(block)\n", "exec"),
}


@pytest.mark.parametrize("case", sorted(UNSAFE))
def test_scanner_catches_each_unsafe_pattern(case):
    source, expected = UNSAFE[case]
    found = violations(source, "a.py")
    assert found and all(f.startswith("a.py:") for f in found), found
    assert any(expected in f for f in found), found


SAFE = {
    "torch_load": "import torch\ntorch.load(f, map_location='cpu', weights_only=True)\n",
    "torch_alias": "import torch as t\nt.load(f, weights_only=True)\n",
    "from_torch_import_load": "from torch import load\nload(f, weights_only=True)\n",
    "torch_serialization": "import torch\nwith torch.serialization.safe_globals([X]):\n    torch.serialization.load(f, weights_only=True)\n",  # noqa: E501
    "numpy_load": "import numpy as np\nnp.load(f, allow_pickle=False)\n",
    "numpy_loadtxt": "import numpy as np\nnp.loadtxt(f)\n",
    "yaml_safe_load": "import yaml\nyaml.safe_load(text)\nyaml.safe_load_all(text)\nyaml.YAMLError\n",
    "pickle_dumps": "import pickle\npickle.dumps(obj)\npickle.UnpicklingError\n",
    "restricted_unpickler": (
        "import pickle\nclass Safe(pickle.Unpickler):\n    def find_class(self, module, name):\n"
        "        raise pickle.UnpicklingError(name)\nSafe(f).load()\n"
    ),
    "a_method_named_load": "state = checkpoint.load(path)\nmodel.eval()\n",
    "an_unrelated_load": "from json import load\nload(f)\n",
    "a_reviewed_exception": "exec(block, scope)  # security: allow -- the official train.py argument block\n",
}


@pytest.mark.parametrize("case", sorted(SAFE))
def test_scanner_accepts_the_safe_variants(case):
    assert violations(SAFE[case], "a.py") == []
