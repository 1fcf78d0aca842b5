"""Shared helpers of the NVAE tests: where the official-implementation fixtures are.

The fixtures shipped in the repository (``tests/fixtures/nvae_official``: ``mnist_small``, ``cifar_small`` and the
paper configurations' ``manifests/``) are always used. ``$VAEZOO_NVLABS_FIXTURES``, when set, names a folder whose
every fixture folder (same layout: ``checkpoint.pt``, ``reference.safetensors``, ``reference.json``) is replayed
as well; a named folder that is missing, holds no fixture, or holds an incomplete one is reported as a failure.
"""

from __future__ import annotations

import os
from pathlib import Path

FIXTURES_ENV = "VAEZOO_NVLABS_FIXTURES"
REPO_ROOT = Path(__file__).resolve().parents[2]
BUNDLED_FIXTURES = REPO_ROOT / "tests" / "fixtures" / "nvae_official"
FIXTURE_FILES = ("checkpoint.pt", "reference.safetensors", "reference.json")


def fixtures_root() -> Path:
    """The fixtures shipped with the repository (also the home of the manifests)."""
    return BUNDLED_FIXTURES


def fixture_problems(folder: Path) -> list[str]:
    """What is wrong with one fixture folder (empty when it is complete)."""
    return [f"{folder}: missing {name}" for name in FIXTURE_FILES if not (folder / name).is_file()]


def extra_fixture_dirs(env: dict | None = None) -> tuple[list[Path], list[str]]:
    """``(fixture folders, problems)`` under ``$VAEZOO_NVLABS_FIXTURES`` (none when it is unset)."""
    value = (env if env is not None else os.environ).get(FIXTURES_ENV)
    if not value:
        return [], []
    root = Path(value).expanduser()
    if not root.is_dir():
        return [], [f"{FIXTURES_ENV}={value}: no such folder"]
    candidates = sorted(p for p in root.iterdir() if p.is_dir() and any((p / f).exists() for f in FIXTURE_FILES))
    if not candidates:
        return [], [f"{FIXTURES_ENV}={value}: holds no fixture folder (each needs {', '.join(FIXTURE_FILES)})"]
    problems = [problem for folder in candidates for problem in fixture_problems(folder)]
    return [p for p in candidates if not fixture_problems(p)], problems


def all_fixture_dirs() -> tuple[list[Path], list[str]]:
    """The bundled fixture folders, then those of ``$VAEZOO_NVLABS_FIXTURES``, and the problems found."""
    bundled = sorted(p.parent for p in BUNDLED_FIXTURES.glob("*/reference.safetensors"))
    problems = [problem for folder in bundled for problem in fixture_problems(folder)]
    extra, extra_problems = extra_fixture_dirs()
    known = {p.resolve() for p in bundled}
    return bundled + [p for p in extra if p.resolve() not in known], problems + extra_problems


def compiled_kernel_expected() -> bool:
    """Whether this machine can build the compiled depthwise weight gradient: a C++ compiler on the PATH and a
    Python that torch's compiler supports. Where it can, the tests that compare the compiled path with the native one
    fail unless the compiled kernel really ran (its fallback is silent after one warning)."""
    import shutil

    import torch._dynamo

    return bool(shutil.which("g++") or shutil.which("c++")) and torch._dynamo.is_dynamo_supported()
