"""The example third-party plugin of the repository (examples/plugin-gated-cell, written from
docs/plugin-tutorial.md), found as an installed distribution would be: its own dist-info and entry point on
``sys.path``, each check in a fresh interpreter. It passes vaezoo.testing in its own test suite, trains from its
five-line recipe that names its preset, its saved model names the distribution it needs, and blocked, it is one
line wherever it is missing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO_ROOT, fake_distribution

EXAMPLE = REPO_ROOT / "examples" / "plugin-gated-cell"


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory) -> Path:
    return fake_distribution(tmp_path_factory.mktemp("site"), "vaezoo-gated", "0.1.0", {"gated": "vaezoo_gated"})


def _run(args: list[str], site: Path, cwd: Path, **env_extra: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VAEZOO_")}
    env["PYTHONPATH"] = os.pathsep.join([str(site), str(EXAMPLE), env.get("PYTHONPATH", "")])
    env.update(COLUMNS="200", VAEZOO_PROGRESS="0", **env_extra)
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def test_the_example_plugin_passes_vaezoo_testing_in_its_own_suite(plugin_site, tmp_path):
    done = _run(["-m", "pytest", "-q", "-p", "no:randomly", "-p", "no:cacheprovider", str(EXAMPLE / "tests")],
                plugin_site, tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:]
    # two components and two presets, each checked
    assert "5 passed" in done.stdout.splitlines()[-1]


def test_trains_from_its_recipe_and_is_one_line_when_blocked(plugin_site, tmp_path):
    recipe = (EXAMPLE / "recipe.yaml").read_text()
    assert len(recipe.strip().splitlines()) == 5 and "preset: gated-mnist" in recipe
    run = tmp_path / "run"
    fit = _run(
        ["-m", "vaezoo", "fit", str(EXAMPLE / "recipe.yaml"), "--model", "{preset: gated-test}",
         "--trainer.max_steps", "2", "--trainer.evaluation.k", "0", "--run_dir", str(run)],
        plugin_site, tmp_path,
    )  # fmt: skip
    assert fit.returncode == 0, fit.stderr[-3000:]
    saved = json.loads((run / "model" / "config.json").read_text())
    needs = {name: entry["distribution"] for name, entry in saved["plugins"].items() if entry["plugin"] == "gated"}
    assert needs == {"GatedResidualCell": "vaezoo-gated", "LearnedScalePrior": "vaezoo-gated"}
    assert saved["model"]["init_args"]["prior"]["class_path"] == "LearnedScalePrior"
    assert saved["model"]["init_args"]["encoder_channels"] == 4  # the preset named on the command line

    # blocked: its saved model and its recipe are each one line naming what is missing; nothing is written
    before = sorted(p.relative_to(run) for p in run.rglob("*"))
    blocked = _run(
        ["-c", "import sys, vaezoo\ntry:\n    vaezoo.load(sys.argv[1])\nexcept Exception as e:\n    print(e)",
         str(run / "model")],
        plugin_site, tmp_path, VAEZOO_BLOCK_PLUGINS="gated",
    )  # fmt: skip
    message = blocked.stdout.strip()
    assert len(message.splitlines()) == 1, message
    assert message.endswith(
        "/run/model: needs plugin 'gated' (from vaezoo-gated), which VAEZOO_BLOCK_PLUGINS blocks, for "
        "GatedResidualCell, LearnedScalePrior"
    )
    refit = _run(["-m", "vaezoo", "fit", str(EXAMPLE / "recipe.yaml"), "--run_dir", str(tmp_path / "other")],
                 plugin_site, tmp_path, VAEZOO_BLOCK_PLUGINS="gated")  # fmt: skip
    assert refit.returncode == 2
    error = refit.stderr.strip().splitlines()
    assert len(error) == 1 and "gated-mnist" in error[0] and "preset" in error[0], refit.stderr
    assert sorted(p.relative_to(run) for p in run.rglob("*")) == before and not (tmp_path / "other").exists()
