"""Shared helpers of the NVAE tests."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
FIXTURES_ENV = "VAEZOO_NVLABS_FIXTURES"


def fixtures_root() -> Path:
    """Where the official-implementation fixtures live (``$VAEZOO_NVLABS_FIXTURES`` or ``../shared/...``)."""
    return Path(os.environ.get(FIXTURES_ENV) or REPO_ROOT.parent / "shared" / "fixtures" / "nvae_official")
