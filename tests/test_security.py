"""Source-level security rules: weights are only unpickled with weights_only=True, and no
configuration content is ever evaluated as code."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from conftest import REPO_ROOT

SOURCES = sorted(p for root in ("vaezoo", "plugins") for p in (REPO_ROOT / root).rglob("*.py"))
FORBIDDEN = {
    "eval",
    "exec",
    "builtins.eval",
    "builtins.exec",
    "pickle.load",
    "pickle.loads",
    "yaml.load",
    "yaml.unsafe_load",
}


def _name(func: ast.expr) -> str:
    if isinstance(func, ast.Attribute):
        return f"{_name(func.value)}.{func.attr}"
    return func.id if isinstance(func, ast.Name) else ""


def violations(source: str, label: str) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        name = _name(node.func)
        if name in FORBIDDEN:
            found.append(f"{label}:{node.lineno}: {name}()")
        if name.endswith("torch.load"):
            flag = next((kw.value for kw in node.keywords if kw.arg == "weights_only"), None)
            if not (isinstance(flag, ast.Constant) and flag.value is True):
                found.append(f"{label}:{node.lineno}: torch.load without weights_only=True")
    return found


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_no_unsafe_loading_or_evaluation(path: Path):
    assert violations(path.read_text(), str(path.relative_to(REPO_ROOT))) == []


def test_scanner_catches_violations():
    assert violations("import torch\ntorch.load('x.pt')\n", "a.py") == ["a.py:2: torch.load without weights_only=True"]
    assert violations("torch.load(f, weights_only=False)\n", "b.py") == ["b.py:1: torch.load without weights_only=True"]
    assert violations("eval(cfg['x'])\n", "c.py") == ["c.py:1: eval()"]
    assert violations("torch.load(f, map_location='cpu', weights_only=True)\n", "d.py") == []
