"""The code style of CONTRIBUTING.md holds: ruff lint and format are clean."""

from __future__ import annotations

import shutil
import subprocess
import sys

from conftest import REPO_ROOT


def _ruff(*args: str) -> subprocess.CompletedProcess:
    ruff = shutil.which("ruff")
    command = [ruff] if ruff else [sys.executable, "-m", "ruff"]
    return subprocess.run([*command, *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)


def test_ruff_check():
    result = _ruff("check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format():
    result = _ruff("format", "--check", ".")
    assert result.returncode == 0, result.stdout + result.stderr
