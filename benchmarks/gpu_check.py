#!/usr/bin/env python3
"""One prepared GPU check, about 5 minutes on one modern GPU (each section is skipped once ``--budget-s`` is spent):

1. ``train``: a few training steps of the paper CIFAR-10 recipe (130.9M parameters) at ``--batch`` 32 in fp32, bf16
   and fp16 (with the gradient scaler), channels_last and the compiled depthwise weight gradient (the latter acts on
   CPUs only: on CUDA cuDNN's kernel is used, and the JSON says so): images/s, peak CUDA memory.
2. ``sample``: CelebA-HQ 256 (``nvae-celebahq256``) sampling at ``--sample-batch`` 36 under fp16 autocast:
   ms per image (the NVAE paper reports about 56 ms per image on a V100).
3. ``iw``: the importance-weighted NLL with ``--k`` 100 samples of the paper CIFAR-10 model, batched (one forward
   pass of k x B images) against sequential (k passes of B images, as the official evaluation loop runs them).
4. ``ddp``: a 1-process ``torchrun`` run that joins an nccl process group (``--backend``), all-reduces, and trains
   a DistributedDataParallel model for a few steps.

All results go to one JSON (``--out``). ``--device cpu --tiny --backend gloo`` runs the same code on a tiny
architecture (the ``cifar_small`` fixture's) in seconds: ``tests/test_gpu_check.py`` does that so the script
cannot rot between GPU sessions.

    python benchmarks/gpu_check.py --out runs/gpu_check.json
    python benchmarks/gpu_check.py --device cpu --tiny --backend gloo --out /tmp/gpu_check.json
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PAPER = [REPO / "recipes" / "nvae_cifar10.yaml", REPO / "benchmarks" / "recipes" / "random_cifar_data.yaml"]
TINY = [REPO / "benchmarks" / "recipes" / "nvae_cifar_small.yaml"]


def _recipe(paths: list[Path]) -> dict:
    import yaml

    recipe: dict = {}
    for path in paths:
        for key, value in yaml.safe_load(path.read_text()).items():
            recipe[key] = {**recipe.get(key, {}), **value} if key == "trainer" else value
    return recipe


def _reset_memory(device) -> None:
    import torch

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _peak_gib(device) -> float | None:
    import torch

    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def _timing(times: list[float], images: int, device) -> dict:
    """The median of ``times``, the images per second at that median, the times and the peak CUDA memory."""
    median = statistics.median(times)
    return {"median_s": median, "images_per_s": images / median, "times_s": times, "peak_cuda_gib": _peak_gib(device)}


def _images(batch: int, shape, device):
    import torch

    x = torch.rand(batch, *shape, generator=torch.Generator().manual_seed(0))
    return (torch.floor(x * 255) / 255).to(device)


def _build(recipe: dict):
    import torch

    import vaezoo

    torch.manual_seed(0)
    return vaezoo.build(recipe["model"]), vaezoo.build(recipe["objective"], kind="objective")


def _trainer(recipe: dict, device, **levers):
    from vaezoo.training import Trainer
    from vaezoo.training.settings import merge_settings, place_in_groups

    extra = place_in_groups({**levers, "progress": False, "tensorboard": False, "device": str(device)})
    args = merge_settings(recipe.get("trainer", {}), extra)
    args.pop("max_epochs", None)
    args.get("schedule", {}).pop("warmup_epochs", None)
    return Trainer(**args)


def check_train(a, device, recipe: dict) -> dict:
    import torch

    from vaezoo.benchmarking import timed
    from vaezoo.hardware import bf16_warning

    out = {}
    for precision in a.precisions.split(","):
        _reset_memory(device)
        model, objective = _build(recipe)
        trainer = _trainer(
            recipe,
            device,
            precision=precision,
            channels_last=True,
            depthwise_weight_grad=a.depthwise_weight_grad,
            bn_swish=a.bn_swish,
        )
        trainer.prepare(model, objective, a.batch, 50000)
        model.train()
        x, counter = _images(a.batch, model.image_shape, device), iter(range(10**9))
        applied = []

        def step(trainer=trainer, x=x, counter=counter, applied=applied):
            loss, _, _, ok = trainer.train_step([x], next(counter))
            applied.append(ok)
            return loss

        times = timed(step, a.warmup, a.steps, device)
        out[precision] = {
            **_timing(times, a.batch, device),
            "applied_steps": sum(applied),
            "steps": len(applied),
            "scaler_scale": float(trainer.scaler.get_scale()) if trainer.scaler.is_enabled() else None,
            "emulated_bf16": bf16_warning(precision, device) is not None,
            "bf16_supported": torch.cuda.is_bf16_supported() if device.type == "cuda" else None,
        }
        del model, objective, trainer
    out["batch_size"] = a.batch
    out["parameters"] = sum(p.numel() for p in _build(recipe)[0].parameters()) if a.tiny else 130_852_480
    out["levers"] = {"channels_last": True, "depthwise_weight_grad": a.depthwise_weight_grad, "bn_swish": a.bn_swish}
    out["depthwise_weight_grad_active"] = device.type == "cpu" and a.depthwise_weight_grad == "compiled"
    return out


def check_sample(a, device) -> dict:
    import torch

    import vaezoo
    from vaezoo.benchmarking import timed

    _reset_memory(device)
    torch.manual_seed(0)
    if a.tiny:
        model, name = _build(_recipe(TINY))[0], "nvae_cifar_small (tiny)"
    else:
        model, name = vaezoo.create("nvae-celebahq256"), "nvae-celebahq256"
    model = model.to(device).to(memory_format=torch.channels_last).eval()
    dtype = torch.float16 if a.sample_precision == "fp16" else torch.bfloat16

    def step():
        with torch.no_grad(), torch.autocast(device.type, dtype=dtype, enabled=a.sample_precision != "fp32"):
            return model.sample(a.sample_batch, temperature=a.temperature)

    times = timed(step, a.warmup, a.sample_repeats, device)
    images = step()
    median = statistics.median(times)
    return {
        "model": name,
        "image_shape": list(model.image_shape),
        "batch_size": a.sample_batch,
        "precision": a.sample_precision,
        "temperature": a.temperature,
        "median_s": median,
        "ms_per_image": 1000 * median / a.sample_batch,
        "paper_ms_per_image_v100": 56.0,
        "times_s": times,
        "finite": bool(torch.isfinite(images.float()).all()),
        "peak_cuda_gib": _peak_gib(device),
    }


def check_iw(a, device, recipe: dict) -> dict:
    import math

    import torch

    from vaezoo.benchmarking import timed
    from vaezoo.evaluation.metrics import importance_samples

    _reset_memory(device)
    model = _build(recipe)[0].to(device).eval()
    x = _images(a.iw_batch, model.image_shape, device)
    result = {"k": a.k, "batch_size": a.iw_batch}
    with torch.no_grad():
        for mode in ("batched", "sequential"):
            _reset_memory(device)
            estimate = {}

            def run(mode=mode, estimate=estimate):
                torch.manual_seed(1)
                if mode == "batched":  # all k samples of every example in one pass
                    log_w, _ = importance_samples(model, x, a.k, max_batch=a.k * a.iw_batch)
                else:  # k passes of the batch, as the official evaluation loop runs them
                    log_w = torch.cat([importance_samples(model, x, 1)[0] for _ in range(a.k)])
                estimate["nll"] = float(-(torch.logsumexp(log_w, dim=0) - math.log(a.k)).mean())

            times = timed(run, a.warmup, a.iw_repeats, device)
            result[mode] = {
                **_timing(times, a.iw_batch, device),
                "nll_nats": estimate["nll"],
            }
    result["speedup_batched"] = result["sequential"]["median_s"] / result["batched"]["median_s"]
    # the same noise in the same order: batching changes only float rounding
    result["nll_abs_difference"] = abs(result["batched"]["nll_nats"] - result["sequential"]["nll_nats"])
    return result


def check_ddp(a) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp, "ddp.json")
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1", __file__]
        cmd += ["--ddp-worker", "--backend", a.backend, "--device", a.device, "--out", str(out), "--steps", "3"]
        cmd += ["--threads", str(a.threads)] if a.threads else []
        start = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=a.ddp_timeout_s, cwd=REPO)
        elapsed = time.perf_counter() - start
        if proc.returncode != 0 or not out.exists():
            # torchrun's own summary comes last: the worker's exception is the last "[rank0]:" line
            lines = proc.stderr.strip().splitlines()
            worker = [line for line in lines if line.startswith("[rank0]:")] or lines or ["no output"]
            return {"ok": False, "returncode": proc.returncode, "error": worker[-1], "wall_s": elapsed}
        return {**json.loads(out.read_text()), "wall_s": elapsed}


def ddp_worker(a) -> int:
    """Run under torchrun: join the process group, all-reduce, train a DDP model (the tiny architecture)."""
    import torch
    import torch.distributed as dist

    from vaezoo.training.distributed import ModelView, init_from_environment

    ctx, device = init_from_environment(a.device)
    if not dist.is_initialized():  # world size 1: the trainer would not join a group; this check must
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend=a.backend)
    probe = torch.full((4,), float(dist.get_rank() + 1), device=device)
    dist.all_reduce(probe)
    recipe = _recipe(TINY)
    model, objective = _build(recipe)
    model, objective = model.to(device), objective.to(device)
    objective.set_total_steps(1000)
    ddp = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    optimizer = torch.optim.Adamax(model.parameters(), lr=1e-3)
    x = _images(4, model.image_shape, device)
    losses = []
    for step in range(a.steps):
        optimizer.zero_grad(set_to_none=True)
        loss, _ = objective(ModelView(ddp), x, step)
        loss.backward()
        optimizer.step()
        losses.append(float(loss))
    result = {
        "ok": bool(all(map(lambda v: v == v, losses))) and float(probe[0]) == dist.get_world_size(),
        "backend": dist.get_backend(),
        "world_size": dist.get_world_size(),
        "all_reduce": probe.tolist(),
        "losses": losses,
        "device": str(device),
    }
    if dist.get_rank() == 0:
        Path(a.out).write_text(json.dumps(result))
    dist.destroy_process_group()
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tiny", action="store_true", help="the cifar_small architecture everywhere (CPU test)")
    ap.add_argument("--sections", default="train,sample,iw,ddp")
    ap.add_argument("--precisions", default="fp32,bf16,fp16")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--depthwise-weight-grad", default="compiled", choices=["native", "compiled"])
    ap.add_argument("--bn-swish", default="native", choices=["native", "fused", "recompute"])
    ap.add_argument("--sample-batch", type=int, default=36)
    ap.add_argument("--sample-precision", default="fp16", choices=["fp32", "bf16", "fp16"])
    ap.add_argument("--sample-repeats", type=int, default=3)
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--iw-batch", type=int, default=4)
    ap.add_argument("--iw-repeats", type=int, default=2)
    ap.add_argument("--backend", default="nccl")
    ap.add_argument("--ddp-timeout-s", type=int, default=180)
    ap.add_argument("--budget-s", type=float, default=420.0, help="sections not started past this are skipped")
    ap.add_argument("--threads", type=int, default=None, help="CPU threads of torch (default: torch's)")
    ap.add_argument("--out", default="runs/gpu_check.json")
    ap.add_argument("--ddp-worker", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    sys.path.insert(0, str(REPO))
    import torch

    if a.threads:
        torch.set_num_threads(a.threads)
    if a.ddp_worker:
        return ddp_worker(a)

    from vaezoo.hardware import cpu_info

    device = torch.device(a.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("gpu_check: no CUDA device here (use --device cpu --tiny --backend gloo for the CPU dry run)")
        return 2
    recipe = _recipe(TINY if a.tiny else PAPER)
    report: dict = {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_info()["cpu_model"],
        "torch_version": torch.__version__,
        "cuda_version": torch.version.cuda,
        "cudnn_version": torch.backends.cudnn.version() if device.type == "cuda" else None,
        "machine": cpu_info(),
        "tiny": a.tiny,
        "settings": {k: v for k, v in vars(a).items() if k != "ddp_worker"},
        "sections": {},
    }
    start = time.perf_counter()
    checks = {
        "train": lambda: check_train(a, device, recipe),
        "sample": lambda: check_sample(a, device),
        "iw": lambda: check_iw(a, device, recipe),
        "ddp": lambda: check_ddp(a),
    }
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for name in a.sections.split(","):
        if time.perf_counter() - start > a.budget_s:
            report["sections"][name] = {"skipped": f"time budget of {a.budget_s:.0f} s spent"}
            continue
        section_start = time.perf_counter()
        try:
            result = checks[name]()
        except Exception as exc:  # one failing section must not lose the others' figures
            result = {"error": f"{type(exc).__name__}: {exc}".splitlines()[0], "traceback": traceback.format_exc()}
        result["section_wall_s"] = time.perf_counter() - section_start
        report["sections"][name] = result
        print(f"{name}: {json.dumps({k: v for k, v in result.items() if k != 'traceback'})[:400]}", flush=True)
        out.write_text(json.dumps(report, indent=2) + "\n")  # partial results survive a timeout
    report["wall_s"] = time.perf_counter() - start
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out} ({report['wall_s']:.0f} s)")
    return 0 if all("error" not in s for s in report["sections"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
