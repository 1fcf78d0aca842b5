"""Largest differences between vaezoo's NVAE and the official implementation, per quantity and fixture.

    python benchmarks/nvae_fidelity_report.py [FIXTURES_ROOT]

Reads every fixture folder (``checkpoint.pt``, ``reference.safetensors``, ``reference.json``) under FIXTURES_ROOT
(default ``$VAEZOO_NVLABS_FIXTURES`` or the repository's ``tests/fixtures/nvae_official``), replays it through vaezoo
with the fidelity tests' replay (``tests/nvae/replay.py``) and prints
the maximum absolute and relative difference of every recorded quantity (grouped: per-group and per-buffer entries
are summarised by their family), with 2 threads in fp32 as the fixtures were made.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the replay lives with the tests that use it
from tests.nvae.replay import replay_fixture  # noqa: E402


def family(name: str) -> str:
    """Collapse per-group / per-buffer / per-shape names into one family (e.g. forward/q_mu/*)."""
    for prefix in ("bn_readjust/bn/", "train_step/bn/", "train_step/sr_u/", "train_step/sr_v/"):
        if name.startswith(prefix):
            return prefix + "*"
    return re.sub(r"/\d+$", "/*", name)


def main() -> None:
    default = REPO / "tests" / "fixtures" / "nvae_official"
    root = Path(sys.argv[1] if len(sys.argv) > 1 else os.environ.get("VAEZOO_NVLABS_FIXTURES") or default)
    torch.set_num_threads(2)
    dirs = sorted(p.parent for p in root.glob("*/reference.safetensors"))
    if not dirs:
        sys.exit(f"no fixtures under {root}")
    for fixture in dirs:
        pairs = replay_fixture(fixture)
        stats: dict[str, list[float]] = {}
        for name, (ours, ref) in pairs.items():
            a, b = ours.double().flatten(), ref.double().flatten()
            abs_diff = (a - b).abs()
            # elementwise relative difference, over elements not at the noise level of zero
            significant = b.abs() > 1e-6
            rel = (abs_diff[significant] / b.abs()[significant]).max().item() if significant.any() else 0.0
            entry = stats.setdefault(family(name), [0.0, 0.0, 0.0, 0])
            entry[0] = max(entry[0], abs_diff.max().item() if a.numel() else 0.0)
            entry[1] = max(entry[1], rel)
            entry[2] = max(entry[2], b.abs().max().item() if b.numel() else 0.0)
            entry[3] += 1
        print(f"\n== {fixture.name} ({len(pairs)} quantities) ==")
        print(f"{'quantity':44s} {'n':>4s} {'max |ref|':>11s} {'max abs diff':>13s} {'max rel diff':>13s}")
        print("(rel: elementwise |ours - ref| / |ref| over elements with |ref| > 1e-6)")
        for name, (abs_diff, rel, scale, count) in stats.items():
            print(f"{name:44s} {count:4d} {scale:11.4g} {abs_diff:13.3g} {rel:13.3g}")


if __name__ == "__main__":
    main()
