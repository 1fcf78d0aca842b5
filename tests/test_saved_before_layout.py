"""Model folders saved before a layout change still load and compute what they computed then."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import vaezoo

ROOT = Path(__file__).parent / "fixtures" / "saved_before_layout"
EXPECTED = json.loads((ROOT / "expected.json").read_text())
FOLDERS = sorted(p.name for p in ROOT.iterdir() if p.is_dir())


def test_every_folder_is_checked():
    assert len(FOLDERS) == 7
    assert {f.removesuffix("-full-class-paths") for f in FOLDERS} == set(EXPECTED)


@pytest.mark.parametrize("folder", FOLDERS)
def test_old_folder_loads_and_matches(folder):
    expected = EXPECTED[folder.removesuffix("-full-class-paths")]
    model = vaezoo.load(f"local-dir:{ROOT / folder}")
    x = torch.tensor(expected["x"])
    noise = [torch.tensor(n) for n in expected["noise"]] if expected["noise"] else None
    with torch.no_grad():
        out = model(x, noise=noise)
    torch.testing.assert_close(out.nelbo, torch.tensor(expected["nelbo"]), rtol=1e-6, atol=1e-5)
    assert float(out.params.double().sum()) == pytest.approx(expected["params_sum"], rel=1e-6, abs=1e-6)
