"""Shared test fixtures.

Every test runs offline and inside a temporary Hugging Face home, so nothing downloads and no test
sees the user's cache or token.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _offline_hub(tmp_path_factory, monkeypatch):
    hf_home = tmp_path_factory.mktemp("hf_home")
    monkeypatch.setenv("HF_HOME", str(hf_home))
    monkeypatch.setenv("HF_HUB_CACHE", str(hf_home / "hub"))
    monkeypatch.setenv("VAEZOO_HOME", str(tmp_path_factory.mktemp("vaezoo_home")))  # the model store, too
    monkeypatch.delenv("VAEZOO_PROGRESS", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    yield


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)
    yield


@pytest.fixture(autouse=True)
def _restore_global_state():
    """Whatever a test (or the code it runs) changes in process-wide state is put back, so that no test depends on the
    order in which tests run: environment variables, torch's thread count, default dtype and grad mode, dynamo's
    configuration (``compile_cells`` raises its recompile limit for good; pytest's monkeypatch cannot restore
    attributes of torch's config modules: it deletes them), and the plugins registered in the plugin manager."""
    import torch._dynamo.config as dynamo_config

    from vaezoo import plugins

    environ = dict(os.environ)
    threads, dtype, grad = torch.get_num_threads(), torch.get_default_dtype(), torch.is_grad_enabled()
    dynamo = dynamo_config.get_config_copy()
    registered = set(plugins._manager.list_name_plugin()) if plugins._manager is not None else None
    yield
    if os.environ != environ:
        os.environ.clear()
        os.environ.update(environ)
    torch.set_num_threads(threads)
    torch.set_default_dtype(dtype)
    torch.set_grad_enabled(grad)
    changed = dynamo_config.get_config_copy()
    for key, value in dynamo.items():  # only what changed: setting a deprecated key warns
        if key not in changed or changed[key] != value:
            setattr(dynamo_config, key, value)
    now = set(plugins._manager.list_name_plugin()) if plugins._manager is not None else None
    if registered is not None and now != registered:  # a test left a plugin registered: start afresh
        plugins.reset()


def pytest_configure(config):
    # Two threads, as on CI machines: keeps timings honest and float results reproducible.
    torch.set_num_threads(int(os.environ.get("VAEZOO_TEST_THREADS", "2")))
