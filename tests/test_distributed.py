"""Multi-process training on CPU with gloo: global-batch BN, gradient all-reduce, rank-0 outputs.

The ConvVAE runs check the launcher path (torchrun) and the loss trajectory; the NVAE runs (BatchNorm, the spectral
regulariser's state) check that every rank ends with the same parameters, BN statistics, optimiser and objective
state, that these match a single process on the same global batch, and that a run resumes on another number of
processes.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from conftest import REPO_ROOT
from tiny_nvae import write_recipe
from torch import nn

from vaezoo.training.checkpoint import list_checkpoints
from vaezoo.training.distributed import synchronise_batch_norm

RECIPE = str(REPO_ROOT / "recipes" / "vae_mnist.yaml")


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4, momentum=0.05), nn.SiLU(), nn.Conv2d(4, 1, 1))


def _batch() -> torch.Tensor:
    return torch.randn(8, 2, 5, 5, generator=torch.Generator().manual_seed(1))


def _worker(rank: int, world: int, store: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    torch.set_num_threads(1)
    net = _net()
    synchronise_batch_norm(net)
    ddp = nn.parallel.DistributedDataParallel(net)
    shard = _batch().chunk(world)[rank]
    out = ddp(shard)
    (out * out).mean().backward()
    torch.save(
        {
            "out": out.detach(),
            "grads": [p.grad for p in net.parameters()],
            "running": [net[1].running_mean, net[1].running_var],
        },
        os.path.join(out_dir, f"rank{rank}.pt"),
    )
    # both ranks leave together: a rank tearing the group down while the other still talks to it aborts that one
    # ("terminate called without an active exception"), as vaezoo's own shutdown(together=True) avoids
    dist.barrier()
    dist.destroy_process_group()


def test_global_batch_norm_and_gradients_match_one_process(tmp_path):
    net = _net()
    out = net(_batch())
    (out * out).mean().backward()
    mp.spawn(_worker, args=(2, str(tmp_path / "store"), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    torch.testing.assert_close(torch.cat([r["out"] for r in ranks]), out.detach(), rtol=1e-5, atol=1e-6)
    for rank in ranks:  # DDP averaged the per-rank gradients of the two half-batch means
        for got, expected in zip(rank["grads"], [p.grad for p in net.parameters()], strict=False):
            torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(rank["running"][0], net[1].running_mean, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(rank["running"][1], net[1].running_var, rtol=1e-5, atol=1e-6)


def _fit(args, run_dir, nproc=None):
    common = ["--model.init_args.latent_dim", "4", "--model.init_args.hidden_channels", "4", "--model.init_args.hidden_units", "16",
              "--trainer.logging.progress", "false", "--trainer.evaluation.k", "0", "--trainer.max_steps", "12", "--trainer.logging.log_every", "1",
              "--trainer.checkpoints.every", "6", "--trainer.checkpoints.keep_last", "5", "--trainer.logging.tensorboard", "false", "--trainer.optimizer.lr", "1e-2", "--trainer.schedule.warmup_steps", "0"]  # fmt: skip
    launcher = (
        [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
        if nproc
        else [sys.executable]
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([*launcher, "-m", "vaezoo", "fit", RECIPE, *common, *args, "--run_dir", str(run_dir)],
                            capture_output=True, text=True, env=env, timeout=600)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return [
        json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if '"loss"' in line
    ], result


def test_two_processes_follow_the_single_process_trajectory(tmp_path):
    single, _ = _fit(["--data.init_args.batch_size", "100"], tmp_path / "single")
    double, result = _fit(["--data.init_args.batch_size", "50"], tmp_path / "double", nproc=2)
    assert "global batch 100 (50 x 2 processes x 1 accumulated)" in result.stdout
    assert [r["global_batch"] for r in double] == [100] * 12
    first, last = single[0]["loss"], single[-1]["loss"]
    assert last < first - 5  # it trains
    for a, b in zip(single, double, strict=False):
        assert abs(a["loss"] - b["loss"]) <= 0.01 * a["loss"], (a["step"], a["loss"], b["loss"])
    # rank 0 alone wrote: one file per checkpoint step, one metrics line per step
    assert sorted(p.name for p in (tmp_path / "double" / "checkpoints").iterdir()) == [
        "step_00000006.pt",
        "step_00000012.pt",
    ]
    assert [r["step"] for r in double] == list(range(1, 13))
    ckpt = torch.load(tmp_path / "double" / "checkpoints" / "step_00000012.pt", weights_only=True)
    assert ckpt["rng"]["world_size"] == 2 and len(ckpt["rng"]["torch"]) == 2


def test_resume_with_another_world_size(tmp_path):
    run_dir = tmp_path / "run"
    _fit(["--data.init_args.batch_size", "50"], run_dir, nproc=2)
    more = ["--trainer.max_steps", "15", "--allow_changed_schedule", "true"]  # 12 steps, then 3 more
    records, _ = _fit(["--data.init_args.batch_size", "100", *more, "--resume", "true"], run_dir)
    assert [r["step"] for r in records][-3:] == [13, 14, 15]


# -- NVAE through `vaezoo fit` on 2 processes -------------------------------------------------------------------------

# The child of every NVAE run: `vaezoo fit` (the CLI's main) with two test-only hooks. (1) Fixed latent noise: each
# rank draws its own noise by design, so without this a 2-process run could not be compared with a single process
# beyond statistics; the pattern depends on the position inside an example only, so any split of the global batch
# sees the same noise. (2) Dumps of each rank's state: after fit (model with BN buffers, optimiser, objective), and
# right after a resume's checkpoint load (the model as loaded).
HOOKED_FIT = """
import os, sys
import torch
from vaezoo import distributions
from vaezoo.training import Trainer

DUMP = os.environ["VAEZOO_TEST_DUMP"]


def fixed_noise(like):
    pattern = torch.sin(torch.arange(like[0].numel(), dtype=like.dtype) * 1.7 + 0.3).reshape(like.shape[1:])
    return pattern.expand_as(like).contiguous()


for cls in (distributions.DiagonalNormal, distributions.SoftClampedNormal):
    def sample(self, noise=None, _real=cls.sample):
        return _real(self, fixed_noise(self.mu) if noise is None else noise)
    cls.sample = sample

real_fit, real_restore = Trainer.fit, Trainer._restore


def fit(self, model, objective, *args, **kwargs):
    summary = real_fit(self, model, objective, *args, **kwargs)
    state = {"model": model.state_dict(), "objective": objective.state_dict(), "optimizer": self.optimizer.state_dict()}
    torch.save(state, os.path.join(DUMP, f"final_rank{self.ctx.rank}.pt"))
    return summary


def restore(self, path):
    real_restore(self, path)
    state = {"model": self.model.state_dict(), "path": str(path), "step": self.state["step"]}
    torch.save(state, os.path.join(DUMP, f"restored_rank{self.ctx.rank}.pt"))


Trainer.fit, Trainer._restore = fit, restore
from vaezoo.cli import main
sys.exit(main(sys.argv[1:]))
"""

# Same global batch of 16 everywhere: 16 x 1 process or 8 x 2 processes.
BATCH = {1: "16", 2: "8"}
# 2 processes vs 1, per tensor: max |difference| <= TOLERANCE x max |value| + FLOOR. Measured after 4 steps: 3e-6 of
# the scale for the weights, 2e-6 for Adamax's moments, 7e-7 for the spectral vectors, i.e. float rounding (global BN
# statistics from all-reduced sums instead of torch's own reduction, gradients averaged over two half-batches instead
# of one mean over the batch); and up to 1.3e-7 absolute for quantities that are zero up to rounding (running means
# of zero-mean BN inputs, biases in front of a BN, and their Adamax moments), hence the floor. Both leave 8-30x
# margin; BN statistics of each rank's half-batch instead of the global one (measured) make 3e-2 in the weights and
# 0.15 in the running means.
TOLERANCE, FLOOR = 1e-4, 1e-6


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _launch(hook: Path, recipe: Path, run_dir: Path, dump: Path, processes: int, *args: str) -> list[tuple]:
    """`vaezoo fit` on ``processes`` processes, each with the environment torchrun would give it (gloo on CPU);
    returns (process, log file) pairs."""
    dump.mkdir(parents=True, exist_ok=True)
    port = str(_free_port())
    command = [sys.executable, str(hook), "fit", str(recipe), "--data.init_args.batch_size", BATCH[processes],
               "--run_dir", str(run_dir), *args]  # fmt: skip
    procs = []
    for rank in range(processes):
        env = {**os.environ, "OMP_NUM_THREADS": "1", "VAEZOO_TEST_DUMP": str(dump)}
        if processes > 1:
            env.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(processes), MASTER_ADDR="127.0.0.1",
                       MASTER_PORT=port)  # fmt: skip
        log = dump / f"rank{rank}.log"
        with log.open("w") as out:
            procs.append((subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT), log))
    return procs


def _wait(launched: list[tuple], timeout: float = 600) -> None:
    """Wait for every process; once one fails (or time is up) the others, blocked in a collective, are killed."""
    procs = [proc for proc, _ in launched]
    deadline = time.monotonic() + timeout
    try:
        while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
            if any(p.returncode not in (None, 0) for p in procs):
                break
            time.sleep(0.2)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    for proc, log in launched:
        assert proc.returncode == 0, log.read_text()[-3000:]


def _tensors(state, prefix: str = ""):
    """(name, tensor) of every tensor in a nested state dict."""
    if isinstance(state, dict):
        for key, value in state.items():
            yield from _tensors(value, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(state, (list, tuple)):
        for i, value in enumerate(state):
            yield from _tensors(value, f"{prefix}[{i}]")
    elif isinstance(state, torch.Tensor):
        yield prefix, state


def _assert_equal(a: dict, b: dict) -> None:
    named_a, named_b = dict(_tensors(a)), dict(_tensors(b))
    assert named_a.keys() == named_b.keys()
    different = [name for name, value in named_a.items() if not torch.equal(value, named_b[name])]
    assert not different, different[:10]


def _assert_close(a: dict, b: dict) -> None:
    named_a, named_b = dict(_tensors(a)), dict(_tensors(b))
    assert named_a.keys() == named_b.keys()
    for name, value in named_a.items():
        expected = named_b[name]
        if not value.is_floating_point():  # step counters, num_batches_tracked
            assert torch.equal(value, expected), name
            continue
        atol = TOLERANCE * float(expected.abs().max()) + FLOOR if expected.numel() else 0.0
        torch.testing.assert_close(value, expected, rtol=0.0, atol=atol, msg=lambda m, name=name: f"{name}: {m}")


def _load(path: Path) -> dict:
    return torch.load(path, weights_only=True)


def _loss_lines(run_dir: Path) -> list[str]:
    return [line for line in (run_dir / "metrics.jsonl").read_text().splitlines() if '"loss"' in line]


@pytest.fixture(scope="module")
def nvae_runs(tmp_path_factory):
    """The same 4-step NVAE run (checkpoints at 2 and 4) on 1 process and on 2, launched side by side."""
    root = tmp_path_factory.mktemp("nvae_runs")
    hook = root / "hooked_fit.py"
    hook.write_text(HOOKED_FIT)
    # KL balancing weighs each group by its batch-mean KL over each rank's own half (as NVAE does); it is turned off
    # so that 2 processes compute the single-process loss. The spectral vectors' first draw (from each rank's own RNG)
    # gets enough power iterations to converge, so that any start gives the same gradient up to rounding.
    recipe = write_recipe(
        root / "tiny_nvae.yaml",
        objective={
            "kl_balance": False,
            "regularizers": [
                {"class_path": "SpectralRegularizer", "init_args": {"first_call_multiplier": 100}},
                {"class_path": "BatchNormScaleRegularizer"},
            ],
        },
        max_steps=4,
        checkpoint_every=2,
    )
    runs = {n: (root / f"run{n}", root / f"dump{n}") for n in (1, 2)}
    _wait([p for n, (run_dir, dump) in runs.items() for p in _launch(hook, recipe, run_dir, dump, n)])
    return {"hook": hook, "recipe": recipe, **runs}


def test_nvae_ranks_agree_with_each_other_and_with_one_process(nvae_runs):
    (single_dir, single_dump), (double_dir, double_dump) = nvae_runs[1], nvae_runs[2]
    single = _load(single_dump / "final_rank0.pt")
    rank0, rank1 = _load(double_dump / "final_rank0.pt"), _load(double_dump / "final_rank1.pt")
    running = [k for k in single["model"] if k.endswith("running_mean") or k.endswith("running_var")]
    assert len(running) == 2 * 26  # the model does have its BatchNorm layers, and they have run
    assert all(int(single["model"][k.replace("running_mean", "num_batches_tracked")]) == 4 for k in running[::2])
    assert {float(state["step"]) for state in rank0["optimizer"]["state"].values()} == {4.0}
    assert any(k.startswith("regularizers.0.u_") for k in rank0["objective"])
    # every rank holds the same state, bit for bit: DDP's averaged gradients, global BN statistics, and the objective
    # state broadcast from rank 0 (only rank 0's is checkpointed)
    for part in ("model", "optimizer", "objective"):
        _assert_equal(rank1[part], rank0[part])
    # and it is the single-process state, up to float rounding
    for part in ("model", "optimizer", "objective"):
        _assert_close(rank0[part], single[part])
    assert [json.loads(line)["global_batch"] for line in _loss_lines(double_dir)] == [16] * 4
    assert [json.loads(line)["step"] for line in _loss_lines(single_dir)] == [1, 2, 3, 4]


def test_nvae_resumes_on_another_number_of_processes(nvae_runs, tmp_path):
    """2 processes to step 2, then 1 to the end; and 1 process to step 2, then 2 to the end, side by side."""
    resumed = {}
    procs = []
    for before, after in ((2, 1), (1, 2)):
        run_dir, dump = tmp_path / f"{before}to{after}", tmp_path / f"dump{before}to{after}"
        shutil.copytree(nvae_runs[before][0], run_dir)
        (run_dir / "checkpoints" / "step_00000004.pt").unlink()  # as if killed between the checkpoints at 2 and 4
        lines = _loss_lines(run_dir)
        resumed[before, after] = run_dir, dump, lines
        procs += _launch(nvae_runs["hook"], nvae_runs["recipe"], run_dir, dump, after, "--resume", "true")
    _wait(procs)
    for (_, after), (run_dir, dump, lines) in resumed.items():
        checkpoint = _load(run_dir / "checkpoints" / "step_00000002.pt")
        for rank in range(after):
            restored = _load(dump / f"restored_rank{rank}.pt")
            assert Path(restored["path"]).name == "step_00000002.pt" and restored["step"] == 2
            _assert_equal(restored["model"], checkpoint["model"])  # the weights it went on from are the checkpoint's
        # each step once, in order; steps 1-2 are the first run's own records (no restart from step 0 rewrote them)
        after_lines = _loss_lines(run_dir)
        assert [json.loads(line)["step"] for line in after_lines] == [1, 2, 3, 4]
        assert after_lines[:2] == lines[:2]
        assert [json.loads(line)["global_batch"] for line in after_lines] == [16] * 4
        assert [s for s, _ in list_checkpoints(run_dir / "checkpoints")] == [2, 4]
        # with the noise fixed, the resumed run ends where the uninterrupted ones do
        final = _load(dump / "final_rank0.pt")
        for processes in (1, 2):
            uninterrupted = _load(nvae_runs[processes][1] / "final_rank0.pt")
            for part in ("model", "optimizer", "objective"):
                _assert_close(final[part], uninterrupted[part])
