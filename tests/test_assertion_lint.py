"""No assertion helper is an operand of ``and``/``or``/``not`` or a conditional expression.

``torch.testing.assert_close``, numpy's ``assert_allclose``/``assert_equal`` and every other ``assert_*`` helper
return None by contract: written ``assert_close(a, b) and assert_close(c, d)``, the second check never runs (and
``not assert_close(...)`` is always true). This rule reads the syntax trees of ``tests/`` and ``benchmarks/``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from conftest import REPO_ROOT

SOURCES = sorted(p for root in ("tests", "benchmarks") for p in (REPO_ROOT / root).rglob("*.py"))


def _callee(node: ast.expr) -> str:
    """The last name of a call's function (``torch.testing.assert_close`` -> ``assert_close``), else ''."""
    if not isinstance(node, ast.Call):
        return ""
    func = node.func
    return func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""


def _is_assertion_call(node: ast.expr) -> bool:
    # assert_close, assert_allclose, assert_equal, assert_array_equal, mock's assert_called_with, ...: all None
    return _callee(node).startswith("assert")


def findings(source: str, label: str) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.BoolOp):
            operands = node.values
            operator = "and" if isinstance(node.op, ast.And) else "or"
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            operands, operator = [node.operand], "not"
        elif isinstance(node, ast.IfExp):
            operands, operator = [node.test], "if-else"
        else:
            continue
        for operand in operands:
            if _is_assertion_call(operand):
                found.append(f"{label}:{operand.lineno}: {_callee(operand)}() as an operand of {operator}")
    return found


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_no_assertion_helper_in_a_boolean_expression(path: Path):
    assert findings(path.read_text(), str(path.relative_to(REPO_ROOT))) == []


def test_the_rule_catches_each_form_and_allows_plain_statements():
    assert findings("torch.testing.assert_close(a, b) and torch.testing.assert_close(c, d)\n", "a.py") == [
        "a.py:1: assert_close() as an operand of and",
        "a.py:1: assert_close() as an operand of and",
    ]
    assert findings("x = ok or np.testing.assert_allclose(a, b)\n", "b.py") == [
        "b.py:1: assert_allclose() as an operand of or"
    ]
    assert findings("assert_equal(a, b) or assert_equal(c, d)\n", "c.py") == [
        "c.py:1: assert_equal() as an operand of or",
        "c.py:1: assert_equal() as an operand of or",
    ]
    assert findings("assert not assert_close(a, b)\n", "d.py") == ["d.py:1: assert_close() as an operand of not"]
    assert findings("y = 1 if m.assert_called_with(2) else 0\n", "e.py") == [
        "e.py:1: assert_called_with() as an operand of if-else"
    ]
    safe = "torch.testing.assert_close(a, b)\ntorch.testing.assert_close(c, d)\nassert a and b\nf = g() or h()\n"
    assert findings(safe, "f.py") == []
