"""A third-party plugin as a separate distribution on disk (its own dist-info and entry point).

The distribution adds a prior; it must show up in ``vaezoo list prior`` and be usable from a recipe
both by full class path and by short name. Each check runs in a fresh interpreter with the
distribution on ``sys.path``, exactly as an installed package would be found.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import REPO_ROOT, fake_distribution

PLUGIN_SOURCE = textwrap.dedent(
    '''
    """A third-party vaezoo plugin adding a Laplace-width Gaussian prior."""
    import math

    import torch

    from vaezoo import hookimpl
    from vaezoo.distributions import DiagonalNormal
    from vaezoo.interfaces import Example, UnconditionalPrior


    class BroadNormalPrior(UnconditionalPrior):
        """N(0, scale^2): a broader prior than the standard normal."""

        def __init__(self, scale: float = 2.0) -> None:
            super().__init__()
            self.scale = scale

        def forward(self, state, latent_shape, temperature=1.0):
            device = state.device if state is not None else None
            zeros = torch.zeros(tuple(latent_shape), device=device)
            return DiagonalNormal(zeros, zeros + math.log(self.scale), temperature)

        @classmethod
        def example(cls):
            z = torch.randn(2, 3, requires_grad=True)
            return Example(build=cls, inputs=(z,), output_shape=(2, 3),
                           call=lambda m, i: m(None, i[0].shape).log_prob(i[0]))


    @hookimpl
    def register_components(register):
        register("prior", BroadNormalPrior)
    '''
)


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory) -> Path:
    site = tmp_path_factory.mktemp("site")
    (site / "vaezoo_broad_prior.py").write_text(PLUGIN_SOURCE)
    return fake_distribution(site, "vaezoo-broad-prior", "1.2.3", {"broad_prior": "vaezoo_broad_prior"})


def _vaezoo(args, site, cwd, env_extra=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith("VAEZOO_")}
    env["PYTHONPATH"] = os.pathsep.join([str(site), env.get("PYTHONPATH", "")])
    env["COLUMNS"] = "200"
    env.update(env_extra or {})
    return subprocess.run(
        [sys.executable, "-m", "vaezoo", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def _recipe(tmp_path: Path, prior_class_path: str) -> Path:
    recipe = (REPO_ROOT / "recipes" / "vae_mnist.yaml").read_text()
    overlay = tmp_path / f"overlay_{prior_class_path.replace('.', '_')}.yaml"
    overlay.write_text(
        textwrap.dedent(
            f"""
            model:
              init_args:
                latent_dim: 4
                hidden_channels: 4
                hidden_units: 16
                prior:
                  class_path: {prior_class_path}
                  init_args:
                    scale: 3.0
            data:
              init_args:
                batch_size: 50
            trainer:
              max_steps: 3
              evaluation:
                k: 0
              logging:
                progress: false
            """
        )
    )
    base = tmp_path / "vae_mnist.yaml"
    base.write_text(recipe)
    return overlay


def test_listed_with_its_version(plugin_site, tmp_path):
    result = _vaezoo(["list", "prior"], plugin_site, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "BroadNormalPrior" in result.stdout and "broad_prior" in result.stdout
    result = _vaezoo(["plugins"], plugin_site, tmp_path)
    assert "broad_prior" in result.stdout and "1.2.3" in result.stdout


def test_autoload_can_be_disabled(plugin_site, tmp_path):
    result = _vaezoo(["list", "prior"], plugin_site, tmp_path, {"VAEZOO_DISABLE_PLUGIN_AUTOLOAD": "1"})
    assert result.returncode == 0, result.stderr
    assert "BroadNormalPrior" not in result.stdout
    assert "StandardNormalPrior" in result.stdout  # built-in plugins still load


def test_blocked_by_name(plugin_site, tmp_path):
    result = _vaezoo(["list", "prior"], plugin_site, tmp_path, {"VAEZOO_BLOCK_PLUGINS": "broad_prior"})
    assert "BroadNormalPrior" not in result.stdout


@pytest.mark.parametrize("class_path", ["BroadNormalPrior", "vaezoo_broad_prior.BroadNormalPrior"])
def test_recipe_uses_third_party_prior(plugin_site, tmp_path, class_path):
    overlay = _recipe(tmp_path, class_path)
    run_dir = tmp_path / "run"
    result = _vaezoo(
        ["fit", "vae_mnist.yaml", "--config", str(overlay), "--run_dir", str(run_dir)], plugin_site, tmp_path
    )
    assert result.returncode == 0, result.stderr
    saved = (run_dir / "config.yaml").read_text()
    assert "vaezoo_broad_prior.BroadNormalPrior" in saved and "scale: 3.0" in saved
    assert "test ELBO" in result.stdout
