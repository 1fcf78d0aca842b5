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


def fake_distribution(site: Path, name: str, version: str, entry_points: dict[str, str]) -> Path:
    """A distribution's metadata in ``site`` (a folder put on ``sys.path``), as ``pip install`` leaves it: what
    ``importlib.metadata`` reads to find a plugin's entry points in the ``vaezoo`` group, its name and version."""
    dist_info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    lines = "".join(f"{ep} = {target}\n" for ep, target in entry_points.items())
    (dist_info / "entry_points.txt").write_text(f"[vaezoo]\n{lines}")
    (dist_info / "RECORD").write_text("")
    return site


def _global_state() -> dict:
    import torch._dynamo.config as dynamo_config

    from vaezoo import plugins

    return {
        "environ": dict(os.environ),
        "threads": torch.get_num_threads(),
        "dtype": torch.get_default_dtype(),
        "grad": torch.is_grad_enabled(),
        "dynamo": dynamo_config.get_config_copy(),
        "plugins": set(plugins._manager.list_name_plugin()) if plugins._manager is not None else None,
    }


def _restore(state: dict) -> None:
    import torch._dynamo.config as dynamo_config

    from vaezoo import plugins

    if os.environ != state["environ"]:
        os.environ.clear()
        os.environ.update(state["environ"])
    torch.set_num_threads(state["threads"])
    torch.set_default_dtype(state["dtype"])
    torch.set_grad_enabled(state["grad"])
    now = dynamo_config.get_config_copy()
    for key, value in state["dynamo"].items():  # only what changed: setting a deprecated key warns
        deleted = getattr(dynamo_config._config.get(key), "hide", False)  # monkeypatch's undo deletes: torch hides it
        if deleted:
            dynamo_config._config[key].hide = False
        if deleted or key not in now or now[key] != value:
            setattr(dynamo_config, key, value)
    registered = set(plugins._manager.list_name_plugin()) if plugins._manager is not None else None
    # a test left a plugin registered, or built the plugin manager under its own patches (entry points, blocks):
    # forget it, so that the next test builds its own (about 30 ms once every module is imported)
    if registered != state["plugins"]:
        plugins.reset()


# Whatever a test (or the code it runs, or its fixtures) changes in process-wide state is put back, so that no test
# depends on the order in which tests run: environment variables, torch's thread count, default dtype and grad mode,
# dynamo's configuration (``compile_cells`` raises its recompile limit for good; pytest's monkeypatch cannot restore
# attributes of torch's config modules: its undo deletes them) and the plugins registered in the plugin manager. The
# snapshot is taken before the test's first fixture is set up and restored after its last one is torn down.
@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item):
    item.stash[_STATE] = _global_state()
    return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item, nextitem):
    try:
        return (yield)
    finally:
        if _STATE in item.stash:
            _restore(item.stash[_STATE])


_STATE = pytest.StashKey[dict]()


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
