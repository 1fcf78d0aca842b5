"""vaezoo's NVAE against the official implementation, number by number.

Every fixture folder under ``$VAEZOO_NVLABS_FIXTURES`` is converted from its official checkpoint and replayed with
the recorded noise (see :mod:`vaezoo_nvae.fidelity`); each recorded quantity must match in fp32. A missing fixture
folder is a failure, not a skip.
"""

from __future__ import annotations

import functools

import pytest
import torch
from vaezoo_nvae.fidelity import fixture_dirs, replay_fixture

from .conftest import FIXTURES_ENV, fixtures_root

RTOL, ATOL = 1e-5, 1e-5
# Parameter gradients of a training step flow back through every train-mode BatchNorm of the model; their fp32
# noise floor is above 1e-5 (vaezoo's own 1- vs 2-thread runs differ by up to 1.3e-5 on cifar_small's stem.weight
# gradient), so full gradient tensors, and the per-parameter norms made from them, get a larger absolute tolerance.
GRADIENT_ATOL = 5e-5

SECTIONS = ["forward", "loss", "sample", "iw", "bn_readjust", "train_step"]


def _fixture_params():
    root = fixtures_root()
    dirs = fixture_dirs(root) if root.is_dir() else []
    if not dirs:
        return [pytest.param(None, section, id=f"missing-fixtures-{section}") for section in SECTIONS]
    return [pytest.param(d, section, id=f"{d.name}-{section}") for d in dirs for section in SECTIONS]


@functools.cache
def _replay(fixture_dir):
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # the fixtures were recorded with 2 threads
    try:
        return replay_fixture(fixture_dir)
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize(("fixture_dir", "section"), _fixture_params())
def test_replay_matches_official(fixture_dir, section):
    if fixture_dir is None:
        pytest.fail(f"no NVAE fixtures found under {fixtures_root()} (set {FIXTURES_ENV})")
    pairs = {k: v for k, v in _replay(fixture_dir).items() if k.split("/", 1)[0] == section}
    assert pairs, f"{fixture_dir.name}: nothing recorded for {section}"
    failures = []
    for name, (ours, reference) in pairs.items():
        # the gradients and the per-parameter gradient norms made from them
        atol = GRADIENT_ATOL if name.startswith(("train_step/grad/", "train_step/grad_norm")) else ATOL
        ours = ours.to(reference.dtype) if reference.dtype.is_floating_point else ours
        if ours.shape != reference.shape:
            failures.append(f"{name}: shape {tuple(ours.shape)} != {tuple(reference.shape)}")
        elif not torch.allclose(ours, reference, rtol=RTOL, atol=atol):
            diff = (ours.double() - reference.double()).abs().max().item()
            failures.append(f"{name}: max abs difference {diff:.3g}")
    assert not failures, f"{fixture_dir.name}: " + "; ".join(failures)


def _not_replayed(name: str) -> bool:
    """Recorded tensors that are inputs of the replay, or that vaezoo's NVAE components do not produce."""
    replay_inputs = (
        name == "input/x"
        or name.startswith(("loss/sr_u/", "loss/sr_v/"))
        or ("/eps/" in name and not name.startswith("train_step/"))
    )
    # the 3 training steps' batches are not recorded; lr and the parameter update belong to the optimiser
    outside = name in ("train/train_nelbo_avg", "train_step/lr", "train_step/delta_norm")
    return replay_inputs or outside


def test_replay_covers_every_recorded_quantity():
    from safetensors import safe_open

    dirs = fixture_dirs(fixtures_root()) if fixtures_root().is_dir() else []
    assert dirs, f"no NVAE fixtures found under {fixtures_root()} (set {FIXTURES_ENV})"
    for fixture_dir in dirs:
        with safe_open(str(fixture_dir / "reference.safetensors"), "pt") as handle:
            recorded = set(handle.keys())
        missing = sorted(k for k in recorded - set(_replay(fixture_dir)) if not _not_replayed(k))
        assert not missing, f"{fixture_dir.name}: recorded but not replayed: {missing[:10]}"
