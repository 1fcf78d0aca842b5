"""Injected faults: kill -9 at chosen points of training (mid-step and mid-checkpoint-write),
then resume. Nothing is corrupted and the resumed run ends bitwise identical to an uninterrupted one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
import torch
from conftest import REPO_ROOT

from vaezoo.training.checkpoint import list_checkpoints, load_checkpoint

RECIPE = str(REPO_ROOT / "recipes" / "vae_mnist.yaml")
ARGS = ["--model.init_args.latent_dim", "4", "--model.init_args.hidden_channels", "4", "--model.init_args.hidden_units", "16",
        "--data.init_args.batch_size", "50", "--trainer.progress", "false", "--trainer.eval_k", "0", "--trainer.tensorboard", "false",
        "--trainer.max_steps", "10", "--trainer.checkpoint_every", "2", "--trainer.keep_last", "3", "--trainer.warmup_steps", "0"]  # fmt: skip

# Runs the CLI in a child process that SIGKILLs itself at the n-th call of a function.
KILLER = """
import os, signal, sys
import torch
target, n = sys.argv[1], int(sys.argv[2])
calls = {"n": 0}
def arm(owner, name):
    real = getattr(owner, name)
    def wrapper(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == n:
            os.kill(os.getpid(), signal.SIGKILL)
        return real(*args, **kwargs)
    setattr(owner, name, wrapper)
if target == "optimizer_step":
    arm(torch.optim.Adamax, "step")
elif target == "checkpoint_rename":
    import vaezoo.training.checkpoint as checkpoint
    arm(checkpoint.os, "replace")
from vaezoo.cli import main
sys.exit(main(sys.argv[3:]))
"""


def _run(args, kill=None):
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    prefix = [sys.executable, "-c", KILLER, *(kill or ("none", "0"))]
    return subprocess.run([*prefix, "fit", RECIPE, *ARGS, *args], capture_output=True, text=True, env=env, timeout=300)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("ref") / "run"
    result = _run(["--run_dir", str(run_dir)])
    assert result.returncode == 0, result.stderr
    return load_checkpoint(list_checkpoints(run_dir / "checkpoints")[-1][1])


@pytest.mark.parametrize(
    "kills",
    [
        [("optimizer_step", 4)],  # mid-training, between checkpoints
        [("checkpoint_rename", 2)],  # temp file written, never renamed
        [("optimizer_step", 3), ("checkpoint_rename", 1), ("optimizer_step", 2)],  # three crashes in a row
    ],
    ids=["mid-step", "mid-checkpoint-write", "repeated"],
)
def test_kill_9_then_resume_is_exact(tmp_path, reference, kills):
    run_dir = tmp_path / "run"
    for target, n in kills:
        result = _run(
            ["--run_dir", str(run_dir), "--resume", "true" if list_checkpoints(run_dir / "checkpoints") else "false"],
            (target, str(n)),
        )
        assert result.returncode == -signal.SIGKILL
        for _, path in list_checkpoints(run_dir / "checkpoints"):
            load_checkpoint(path)  # every checkpoint that carries a final name is complete
    result = _run(
        ["--run_dir", str(run_dir), "--resume", "true" if list_checkpoints(run_dir / "checkpoints") else "false"]
    )
    assert result.returncode == 0, result.stderr
    final = load_checkpoint(list_checkpoints(run_dir / "checkpoints")[-1][1])
    assert not [p.name for p in (run_dir / "checkpoints").iterdir() if p.name.startswith(".")]  # temporaries cleaned
    assert final["step"] == reference["step"] == 10
    for key, value in reference["model"].items():
        assert torch.equal(final["model"][key], value), key
    for key, value in reference["optimizer"]["state"].items():
        assert all(torch.equal(final["optimizer"]["state"][key][k], v) for k, v in value.items())
