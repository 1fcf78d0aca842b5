"""Multi-process training on CPU with gloo: global-batch BN, gradient all-reduce, rank-0 outputs."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from conftest import REPO_ROOT
from torch import nn

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
              "--trainer.progress", "false", "--trainer.eval_k", "0", "--trainer.max_steps", "12", "--trainer.log_every", "1",
              "--trainer.checkpoint_every", "6", "--trainer.keep_last", "5", "--trainer.tensorboard", "false", "--trainer.lr", "1e-2", "--trainer.warmup_steps", "0"]  # fmt: skip
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
    records, _ = _fit(["--data.init_args.batch_size", "100", "--trainer.max_steps", "15", "--resume", "true"], run_dir)
    assert [r["step"] for r in records][-3:] == [13, 14, 15]
