"""Speed and memory measurements of a recipe: training steps, sampling, importance-weighted NLL.

Each phase times ``repeats`` calls after ``warmup`` untimed ones and reports the median. Peak memory
is the process's peak resident set size (each phase runs in its own process unless told otherwise,
so the number belongs to that phase) and, on CUDA, the peak of allocated device memory.
"""

from __future__ import annotations

import resource
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import torch

from .evaluation.metrics import iw_log_likelihood
from .interfaces import DataModule, GenerativeModel, Objective
from .training import Trainer


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op on CPUs), so that a timer measures it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], warmup: int, repeats: int, device: torch.device) -> list[float]:
    """Seconds of each of ``repeats`` calls of ``fn`` after ``warmup`` untimed ones, the device synchronised."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return times


def peak_memory(device: torch.device) -> dict:
    rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    if sys.platform == "darwin":
        rss_kib /= 1024
    out = {"peak_rss_gib": rss_kib / 2**20}
    if device.type == "cuda":
        out["peak_cuda_allocated_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    return out


def benchmark_phase(
    phase: str,
    model: GenerativeModel,
    objective: Objective,
    data: DataModule,
    trainer: Trainer,
    batch_size: int,
    warmup: int,
    repeats: int,
    k: int,
    temperature: float,
) -> dict:
    device = trainer.device
    dataset = data.train_dataset()
    x = torch.stack([dataset[i][0] for i in range(batch_size)])
    x = data.train_transform(x, torch.Generator().manual_seed(0)).to(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    if phase == "train":
        trainer.prepare(model, objective, batch_size, len(dataset))
        model.train()
        step = iter(range(10**9))
        times = timed(lambda: trainer.train_step([x], next(step)), warmup, repeats, device)
        unit = batch_size
    elif phase == "sample":
        model.to(device).eval()
        with torch.no_grad():
            times = timed(lambda: model.sample(batch_size, temperature=temperature), warmup, repeats, device)
        unit = batch_size
    elif phase == "iw":
        model.to(device).eval()
        with torch.no_grad():
            times = timed(lambda: iw_log_likelihood(model, x, k), warmup, repeats, device)
        unit = batch_size
    else:
        raise ValueError(f"unknown phase {phase!r}")
    median = statistics.median(times)
    return {
        "median_s": median,
        "images_per_s": unit / median,
        "times_s": times,
        "batch_size": batch_size,
        **({"k": k} if phase == "iw" else {}),
        # the precision the step ran in (what ``precision: auto`` chose, and why)
        **({"precision": trainer.precision, "precision_note": trainer.precision_note} if phase == "train" else {}),
        **peak_memory(device),
    }
