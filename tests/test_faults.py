"""Injected faults: kill -9 at chosen points of training (mid-step, on the checkpoint's rename, in the middle of the
checkpoint's bytes), then resume. Nothing is corrupted, the last complete checkpoint is the one resumed from, and the
resumed run ends bitwise identical to an uninterrupted one; for the ConvVAE recipe and for a tiny NVAE recipe, both
through the ``vaezoo fit`` CLI in a child process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import REPO_ROOT
from tiny_nvae import write_recipe

from vaezoo.errors import CheckpointError
from vaezoo.training.checkpoint import list_checkpoints, load_checkpoint

RECIPE = str(REPO_ROOT / "recipes" / "vae_mnist.yaml")
ARGS = ["--model.init_args.latent_dim", "4", "--model.init_args.hidden_channels", "4", "--model.init_args.hidden_units", "16",
        "--data.init_args.batch_size", "50", "--trainer.logging.progress", "false", "--trainer.evaluation.k", "0", "--trainer.logging.tensorboard", "false",
        "--trainer.max_steps", "10", "--trainer.checkpoints.every", "2", "--trainer.checkpoints.keep_last", "3", "--trainer.schedule.warmup_steps", "0",
        "--trainer.logging.log_every", "1"]  # fmt: skip

# Runs the CLI in a child process that SIGKILLs itself at the n-th event of a kind:
# - optimizer_step: the n-th Adamax step (mid-training);
# - checkpoint_rename: the n-th rename onto a checkpoint's own name (checkpoints/step_*.pt), temporary written;
# - checkpoint_write: the n-th checkpoint write, once part of torch.save's bytes reached the temporary.
# The checkpoint module gets its own `os` (the real one but for replace and fdopen), so no other rename or file of
# the process (config.yaml, metrics.jsonl) is touched. Before a kill, and whenever a run loads a checkpoint to resume,
# it appends what it saw to $VAEZOO_TEST_MARKER (fsync'ed: a kill cannot lose it).
KILLER = r"""
import json, os, re, signal, sys, types
import torch
import vaezoo.training.checkpoint as checkpoint
from vaezoo.training import Trainer

target, n = sys.argv[1], int(sys.argv[2])
marker = os.environ["VAEZOO_TEST_MARKER"]
calls = {"n": 0}
CHECKPOINT = re.compile(r"checkpoints[/\\]step_\d{8}\.pt$")


def note(**event):
    with open(marker, "a") as handle:
        handle.write(json.dumps(event) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def due(kind):
    if kind != target:
        return False
    calls["n"] += 1
    return calls["n"] == n


def arm_optimizer():
    real = torch.optim.Adamax.step
    def step(*args, **kwargs):
        if due("optimizer_step"):
            os.kill(os.getpid(), signal.SIGKILL)
        return real(*args, **kwargs)
    torch.optim.Adamax.step = step


def replace(src, dst, *args, **kwargs):
    if CHECKPOINT.search(os.fspath(dst)) and due("checkpoint_rename"):
        src = os.fspath(src)
        note(event="kill", dest=os.path.basename(dst), tmp=src, tmp_existed=os.path.exists(src),
             tmp_size=os.path.getsize(src) if os.path.exists(src) else -1)
        os.kill(os.getpid(), signal.SIGKILL)
    return os.replace(src, dst, *args, **kwargs)


class TornFile:
    # the temporary of a checkpoint write: after 4096 bytes have reached the disk, the process dies
    def __init__(self, handle):
        self.handle, self.written = handle, 0

    def write(self, data):
        data = bytes(data)
        if self.written + len(data) >= 4096:
            self.handle.write(data[: 4096 - self.written])
            self.handle.flush()
            os.fsync(self.handle.fileno())
            path = os.readlink(f"/proc/self/fd/{self.handle.fileno()}")
            note(event="kill", tmp=path, tmp_existed=True, tmp_size=os.path.getsize(path))
            os.kill(os.getpid(), signal.SIGKILL)
        self.written += len(data)
        return self.handle.write(data)

    def __getattr__(self, name):
        return getattr(self.handle, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return self.handle.__exit__(*exc)


def fdopen(*args, **kwargs):
    handle = os.fdopen(*args, **kwargs)
    return TornFile(handle) if due("checkpoint_write") else handle


checkpoint.os = types.SimpleNamespace(**{**vars(os), "replace": replace, "fdopen": fdopen})
arm_optimizer()
real_restore = Trainer._restore


def restore(self, path):
    note(event="restore", checkpoint=os.path.basename(path))
    return real_restore(self, path)


Trainer._restore = restore
from vaezoo.cli import main
sys.exit(main(sys.argv[3:]))
"""


def _run(run_dir: Path, kill=None, recipe: str = RECIPE, args=ARGS) -> subprocess.CompletedProcess:
    # one thread: these tiny models gain nothing from more, and the runs being compared must use the same number
    env = {**os.environ, "OMP_NUM_THREADS": "1", "VAEZOO_TEST_MARKER": str(run_dir.parent / "marker.jsonl")}
    resume = "true" if list_checkpoints(run_dir / "checkpoints") else "false"
    prefix = [sys.executable, "-c", KILLER, *(kill or ("none", "0"))]
    command = [*prefix, "fit", recipe, *args, "--run_dir", str(run_dir), "--resume", resume]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)


def _events(run_dir: Path) -> list[dict]:
    marker = run_dir.parent / "marker.jsonl"
    return [json.loads(line) for line in marker.read_text().splitlines()] if marker.exists() else []


def _loss_steps(run_dir: Path) -> list[int]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line)["step"] for line in lines if '"loss"' in line]


def _kill_and_resume(run_dir: Path, kills, **run) -> dict:
    """Each kill in turn (resuming from the second on), then a run to the end; returns its final checkpoint."""
    for target, n in kills:
        result = _run(run_dir, (target, str(n)), **run)
        assert result.returncode == -signal.SIGKILL, result.stderr[-3000:]
        complete = list_checkpoints(run_dir / "checkpoints")
        for _, path in complete:
            load_checkpoint(path)  # every checkpoint that carries a final name is complete
        if target.startswith("checkpoint_"):
            kill = _events(run_dir)[-1]
            assert kill["event"] == "kill" and kill["tmp_existed"] and kill["tmp_size"] > 0, kill
            tmp = Path(kill["tmp"])
            # the temporary is still there, in the checkpoint folder, as the kill left it; no final name was given
            assert tmp.parent == run_dir / "checkpoints" and tmp.name.startswith(".step_") and tmp.name.endswith(".tmp")
            assert tmp.stat().st_size == kill["tmp_size"]
            if "dest" in kill:
                assert not (run_dir / "checkpoints" / kill["dest"]).exists()
            if target == "checkpoint_write":
                with pytest.raises(CheckpointError, match="damaged"):  # cut in the middle of the archive
                    load_checkpoint(tmp)
    last_complete = list_checkpoints(run_dir / "checkpoints")[-1][1].name
    result = _run(run_dir, **run)
    assert result.returncode == 0, result.stderr[-3000:]
    assert _events(run_dir)[-1] == {"event": "restore", "checkpoint": last_complete}  # resumed from the last complete
    assert not [p.name for p in (run_dir / "checkpoints").iterdir() if p.name.startswith(".")]  # temporaries cleaned
    return load_checkpoint(list_checkpoints(run_dir / "checkpoints")[-1][1])


def _assert_bitwise_equal(final: dict, reference: dict) -> None:
    assert final["step"] == reference["step"]
    for key, value in reference["model"].items():
        assert torch.equal(final["model"][key], value), key
    for key, value in reference["objective"].items():
        assert torch.equal(final["objective"][key], value), key
    assert final["optimizer"]["state"].keys() == reference["optimizer"]["state"].keys()
    for key, value in reference["optimizer"]["state"].items():
        for name, tensor in value.items():
            assert torch.equal(final["optimizer"]["state"][key][name], tensor), (key, name)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("ref") / "run"
    result = _run(run_dir)
    assert result.returncode == 0, result.stderr
    return load_checkpoint(list_checkpoints(run_dir / "checkpoints")[-1][1])


@pytest.mark.parametrize(
    "kills",
    [
        [("optimizer_step", 4)],  # mid-training, between checkpoints
        [("checkpoint_rename", 2)],  # step 4's temporary written, never renamed
        [("checkpoint_write", 3)],  # step 6's temporary cut after 4 kB: resumes from step 4, not 2
        [("optimizer_step", 3), ("checkpoint_rename", 1), ("optimizer_step", 2)],  # three crashes in a row
    ],
    ids=["mid-step", "mid-checkpoint-rename", "torn-checkpoint-write", "repeated"],
)
def test_kill_9_then_resume_is_exact(tmp_path, reference, kills):
    run_dir = tmp_path / "run"
    final = _kill_and_resume(run_dir, kills)
    assert reference["step"] == 10
    _assert_bitwise_equal(final, reference)
    assert _loss_steps(run_dir) == list(range(1, 11))  # each step's record once, whatever was replayed


@pytest.mark.parametrize("target", ["checkpoint_write", "checkpoint_rename"])
def test_kill_9_mid_save_with_keep_last_1_keeps_the_previous_checkpoint(tmp_path, reference, target):
    """With ``keep_last: 1`` the one checkpoint on disk is the only way back: a kill in the middle of writing the next
    one (its bytes half written, or written but not yet renamed) leaves it in place, complete, and the run resumes
    from it to the same end as an uninterrupted run."""
    args = [
        *ARGS[: ARGS.index("--trainer.checkpoints.keep_last")],
        "--trainer.checkpoints.keep_last",
        "1",
        *ARGS[ARGS.index("--trainer.checkpoints.keep_last") + 2 :],
    ]
    run_dir = tmp_path / "run"
    result = _run(run_dir, (target, "3"), args=args)  # killed while saving step 6
    assert result.returncode == -signal.SIGKILL, result.stderr[-3000:]
    assert [step for step, _ in list_checkpoints(run_dir / "checkpoints")] == [4]
    assert load_checkpoint(run_dir / "checkpoints" / "step_00000004.pt")["step"] == 4
    final = _kill_and_resume(run_dir, [], args=args)
    assert [step for step, _ in list_checkpoints(run_dir / "checkpoints")] == [10]
    _assert_bitwise_equal(final, reference)
    assert _loss_steps(run_dir) == list(range(1, 11))


def test_nvae_kill_9_mid_run_then_resume_is_exact(tmp_path):
    """The tiny NVAE recipe (BatchNorm, spectral regulariser state, KL schedule) through the CLI: killed at step 5,
    resumed from the checkpoint at step 3, it ends where an uninterrupted run does, bit for bit."""
    recipe = str(write_recipe(tmp_path / "tiny_nvae.yaml"))  # 6 steps, checkpoints at 3 and 6
    (tmp_path / "ref").mkdir()
    result = _run(tmp_path / "ref" / "run", recipe=recipe, args=[])
    assert result.returncode == 0, result.stderr[-3000:]
    reference = load_checkpoint(list_checkpoints(tmp_path / "ref" / "run" / "checkpoints")[-1][1])
    (tmp_path / "killed").mkdir()
    run_dir = tmp_path / "killed" / "run"
    final = _kill_and_resume(run_dir, [("optimizer_step", 5)], recipe=recipe, args=[])
    assert _events(run_dir) == [{"event": "restore", "checkpoint": "step_00000003.pt"}]
    assert reference["step"] == 6 and any(k.startswith("regularizers.0.u_") for k in reference["objective"])
    _assert_bitwise_equal(final, reference)
    assert _loss_steps(run_dir) == list(range(1, 7))
