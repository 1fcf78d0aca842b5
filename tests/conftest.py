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


def pytest_configure(config):
    # Two threads, as on CI machines: keeps timings honest and float results reproducible.
    torch.set_num_threads(int(os.environ.get("VAEZOO_TEST_THREADS", "2")))
