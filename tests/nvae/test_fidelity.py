"""vaezoo's NVAE against the official implementation, number by number.

Every fixture folder shipped in ``tests/fixtures/nvae_official`` (and, when it is set, under
``$VAEZOO_NVLABS_FIXTURES``) is converted from its official checkpoint and replayed with the recorded noise (see
:mod:`tests.nvae.replay`); each recorded quantity must match in fp32. A missing or incomplete fixture folder is a
failure, not a skip.
"""

from __future__ import annotations

import functools

import pytest
import torch

from .conftest import all_fixture_dirs
from .replay import BF16_QUANTITIES, replay_fixture, replay_forward_bf16

RTOL, ATOL = 1e-5, 1e-5
# Parameter gradients of a training step flow back through every train-mode BatchNorm of the model; their fp32
# noise floor is above 1e-5 (vaezoo's own 1- vs 2-thread runs differ by up to 1.3e-5 on cifar_small's stem.weight
# gradient), so full gradient tensors, and the per-parameter norms made from them, get a larger absolute tolerance.
GRADIENT_ATOL = 5e-5

SECTIONS = ["forward", "loss", "sample", "iw", "bn_readjust", "train_step"]


def _fixture_params():
    dirs, problems = all_fixture_dirs()
    params = [pytest.param(d, section, id=f"{d.name}-{section}") for d in dirs for section in SECTIONS]
    params += [pytest.param(None, problem, id=f"bad-fixture-{i}") for i, problem in enumerate(problems)]
    return params or [pytest.param(None, "no fixture folder found", id="no-fixtures")]


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
    if fixture_dir is None:  # a missing or incomplete fixture folder
        pytest.fail(section)
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


#: bf16 (``trainer.precision: bf16``: the networks under bf16 autocast; densities, KL and likelihood in fp32) against
#: the official fp32 values, with the recorded noise: the largest difference of each quantity relative to its
#: largest magnitude over the batch (and the groups), on every shipped fixture. bf16 keeps 8 bits of mantissa, about
#: 2-3 significant digits per activation; through a whole network the per-example bound is within a few tenths of a
#: percent. These are the measured values rounded up to the next tolerance step, not a target.
BF16_TOLERANCES = {"forward/nelbo": 5e-4, "forward/log_iw": 5e-4, "forward/recon_loss": 5e-5, "forward/kl_all": 1e-2,
                   "forward/log_q": 5e-4, "forward/log_p": 5e-3}  # fmt: skip


@pytest.mark.parametrize("fixture_dir", all_fixture_dirs()[0], ids=lambda d: d.name)
def test_bf16_forward_meets_its_stated_tolerances(fixture_dir):
    assert set(BF16_TOLERANCES) == set(BF16_QUANTITIES)
    failures = []
    for name, (ours, reference) in replay_forward_bf16(fixture_dir).items():
        relative = float((ours.double() - reference.double()).abs().max() / reference.double().abs().max())
        if not relative <= BF16_TOLERANCES[name]:
            failures.append(f"{name}: {relative:.3g} of its scale > {BF16_TOLERANCES[name]}")
    assert not failures, f"{fixture_dir.name} in bf16: " + "; ".join(failures)


def _not_replayed(name: str) -> bool:
    """Recorded tensors that are inputs of the replay, or that vaezoo's NVAE components do not produce."""
    replay_inputs = (
        name == "input/x"
        or name.startswith(("loss/sr_u/", "loss/sr_v/"))
        or ("/eps/" in name and not name.startswith("train_step/"))
    )
    # the 3 training steps' batches are not recorded
    outside = name == "train/train_nelbo_avg"
    return replay_inputs or outside


def test_replay_covers_every_recorded_quantity():
    from safetensors import safe_open

    dirs, problems = all_fixture_dirs()
    assert dirs and not problems, problems
    for fixture_dir in dirs:
        with safe_open(str(fixture_dir / "reference.safetensors"), "pt") as handle:
            recorded = set(handle.keys())
        missing = sorted(k for k in recorded - set(_replay(fixture_dir)) if not _not_replayed(k))
        assert not missing, f"{fixture_dir.name}: recorded but not replayed: {missing[:10]}"


def test_fixture_folders_named_by_the_environment_are_checked(tmp_path):
    """``$VAEZOO_NVLABS_FIXTURES`` adds fixture folders; a missing, empty or incomplete one is a problem (a failing
    test), never silently skipped."""
    from .conftest import FIXTURE_FILES, FIXTURES_ENV, extra_fixture_dirs, fixtures_root

    assert extra_fixture_dirs({}) == ([], [])
    dirs, problems = extra_fixture_dirs({FIXTURES_ENV: str(tmp_path / "nowhere")})
    assert not dirs and "no such folder" in problems[0]
    dirs, problems = extra_fixture_dirs({FIXTURES_ENV: str(tmp_path)})
    assert not dirs and "holds no fixture folder" in problems[0]
    complete, incomplete = tmp_path / "complete", tmp_path / "incomplete"
    complete.mkdir()
    incomplete.mkdir()
    for name in FIXTURE_FILES:
        (complete / name).symlink_to(fixtures_root() / "mnist_small" / name)
    (incomplete / "reference.json").write_text("{}")
    dirs, problems = extra_fixture_dirs({FIXTURES_ENV: str(tmp_path)})
    assert dirs == [complete]
    assert problems == [f"{incomplete}: missing checkpoint.pt", f"{incomplete}: missing reference.safetensors"]
