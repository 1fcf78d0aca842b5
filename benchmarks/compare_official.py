#!/usr/bin/env python3
"""vaezoo against the official NVAE code, side by side: training step, sampling and importance-weighted NLL.

    python benchmarks/compare_official.py NVAE_CHECKOUT [--rows cifar_small,paper] [--phases train,sample,iw]
        [--pairs 3] [--paper-pairs 1] [--steps 5] [--paper-steps 2] [--threads 2] [--out runs/compare_official.json]

NVAE_CHECKOUT is a checkout of the public NVlabs/NVAE repository or a bare git directory of it (the search tool's
``fetch`` returns one; its HEAD is used). It is copied to a temporary folder and patched there to run on CPU (the
maths is unchanged: ``.cuda()`` calls become no-ops, the GPU-only check of SyncBatchNormSwish is dropped, and
``torch.distributed.get_world_size()`` answers 1 without a process group); nothing of it enters this repository.

Rows: ``cifar_small`` (the architecture of the ``cifar_small`` official fixture, 55,676 parameters) and ``paper``
(the official README's CIFAR-10 architecture, 130.9M parameters), both at batch 8 in fp32. Phases: ``train`` (one
optimiser step: forward, loss with the spectral and BN regularisers, backward, Adamax), ``sample`` (``--sample-batch``
images at ``--temperature``: the official ``model.sample`` and its likelihood's sample against vaezoo's
``model.sample``) and ``iw`` (log p(x) with ``--k`` importance samples: the official ``test()`` loop, which runs the
k forward passes one after the other, against vaezoo's batched ``iw_log_likelihood``).

Each training measurement ends with one profiled step, whose convolution time ("the conv floor": oneDNN's and
torch's convolution kernels forward and backward, the GEMMs of 1x1 convolutions, vaezoo's compiled depthwise weight
gradient) is reported as a share of that step: what is above it is the overhead left to remove.

Every measurement is its own subprocess (its own peak RSS, no allocator state carried over), and the
implementations alternate within each pair (official first in even pairs, last in odd ones), so that a machine
whose load drifts affects both alike: on a shared machine only the ratios of one invocation mean anything. The
table shows, per implementation, the median of the per-process medians and their range, and the median (range) of
the per-pair ratios official / vaezoo (above 1: vaezoo is faster).

vaezoo variants (``--variants``): ``base`` (every lever off: the recipe as it is), ``fast`` (channels_last, the
compiled depthwise weight gradient, fused BatchNorm-Swish), ``recompute`` (``fast`` with the BN-Swish that keeps
only its input and recomputes in the backward pass), ``memory`` (``fast`` with ``bn_swish: input_only``: the conv a
BN-Swish feeds does not keep its input either, the paper's memory mode), ``bf16`` and ``bf16_memory`` (``fast`` and
``memory`` under bf16 autocast; ``bf16`` is added where the CPU computes bf16 natively) and ``auto`` (``fast`` with
``precision: auto``; every vaezoo result records the precision it ran in and why). The official code has no CPU
bf16 mode: every speed-up, bf16 rows included, is against the official fp32 step.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import types
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RECIPES = {
    "cifar_small": [str(REPO / "benchmarks" / "recipes" / "nvae_cifar_small.yaml")],
    "paper": [
        str(REPO / "recipes" / "nvae_cifar10.yaml"),
        str(REPO / "benchmarks" / "recipes" / "random_cifar_data.yaml"),
    ],
}
OFFICIAL_ARGS = {
    "paper": "--dataset cifar10 --num_channels_enc 128 --num_channels_dec 128 --epochs 400 --num_postprocess_cells 2 "
    "--num_preprocess_cells 2 --num_latent_scales 1 --num_latent_per_group 20 --num_cell_per_cond_enc 2 "
    "--num_cell_per_cond_dec 2 --num_preprocess_blocks 1 --num_postprocess_blocks 1 --num_groups_per_scale 30 "
    "--weight_decay_norm 1e-2 --num_nf 1 --use_se --res_dist --fast_adamax",
    "cifar_small": "--dataset cifar10 --num_channels_enc 3 --num_channels_dec 3 --epochs 400 --num_postprocess_cells 2 "
    "--num_preprocess_cells 2 --num_latent_scales 2 --num_latent_per_group 2 --num_cell_per_cond_enc 2 "
    "--num_cell_per_cond_dec 1 --num_preprocess_blocks 1 --num_postprocess_blocks 1 --num_groups_per_scale 4 "
    "--ada_groups --weight_decay_norm 1e-2 --weight_decay_norm_anneal --weight_decay_norm_init 1.0 --num_nf 2 "
    "--use_se --res_dist --fast_adamax",
}
FAST = {"channels_last": True, "depthwise_weight_grad": "compiled", "bn_swish": "fused", "adamax_foreach": True}
VARIANTS = {
    "base": {},
    "fast": FAST,
    "recompute": {**FAST, "bn_swish": "recompute"},
    "memory": {**FAST, "bn_swish": "input_only"},
    "bf16": {**FAST, "precision": "bf16"},
    "bf16_memory": {**FAST, "bn_swish": "input_only", "precision": "bf16"},
    "auto": {**FAST, "precision": "auto"},
    "compiled_cells": {**FAST, "compile_cells": True},
    "checkpointing": {**FAST, "gradient_checkpointing": True},
}


# -- workers: one measurement each, in its own process ----------------------------------------------------------
def _inputs(batch: int):
    import torch

    x = torch.rand(batch, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    return torch.floor(x * 255) / 255  # 8-bit images, as both pipelines feed them


def _timed(fn, warmup: int, steps: int) -> list[float]:
    times = []
    for _ in range(warmup + steps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


#: the ops that are convolution work: oneDNN's and torch's im2col kernels, forward and backward, and the matrix
#: products of 1x1 convolutions run as GEMMs (``mm``/``addmm``; the SE blocks' linears, a few microseconds each, are
#: counted with them); vaezoo's compiled depthwise weight gradient is its ``vaezoo::depthwise_weight_grad`` range
CONV_OPS = (
    "aten::convolution_backward", "aten::mkldnn_convolution", "aten::_slow_conv2d_forward",
    "aten::_slow_conv2d_backward", "aten::mm", "aten::addmm", "aten::thnn_conv2d",
)  # fmt: skip
CONV_RANGES = ("vaezoo::depthwise_weight_grad",)


def _conv_floor(step) -> dict:
    """One profiled call of ``step``: the CPU time of its convolutions ("the conv floor") and of everything."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events) / 1e6
    conv = sum(e.self_cpu_time_total for e in events if e.key in CONV_OPS) / 1e6
    conv += sum(e.cpu_time_total for e in events if e.key in CONV_RANGES) / 1e6
    return {"conv_floor_s": conv, "profiled_step_s": total, "conv_share": conv / total if total else None}


def _peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def _result(times: list[float], warmup: int, unit: int, peak_rss_gib: float | None = None, **extra) -> dict:
    """``peak_rss_gib``: the peak of the timed calls, read before the profiled one (the profiler's own records would
    count otherwise); by default, the peak so far."""
    import torch

    median = statistics.median(times[warmup:])
    return {
        "times_s": times,
        "warmup": warmup,
        "median_s": median,
        "images_per_s": unit / median,
        "peak_rss_gib": _peak_rss_gib() if peak_rss_gib is None else peak_rss_gib,
        "torch_threads": torch.get_num_threads(),
        **extra,
    }


def _patched_copy(src: str) -> str:
    """A CPU-patched copy of a checkout, or of the HEAD of a git directory such as the one fetch returns."""
    dst = tempfile.mkdtemp(prefix="nvae_cpu_")
    if os.path.isfile(os.path.join(src, "model.py")):
        shutil.copytree(src, dst, dirs_exist_ok=True, ignore=shutil.ignore_patterns(".git"))
    else:
        archive = subprocess.run(["git", "--git-dir", src, "archive", "HEAD"], check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", dst], input=archive, check=True)
    for name in ["model.py", "neural_ar_operations.py", "distributions.py", "utils.py", "train.py"]:
        path = os.path.join(dst, name)
        text = Path(path).read_text().replace(".cuda()", "")
        Path(path).write_text(text)
    path = os.path.join(dst, "thirdparty", "inplaced_sync_batchnorm.py")
    text = re.sub(r"\n\s*if not input\.is_cuda:\n\s*raise ValueError\([^\n]*\)\n", "\n", Path(path).read_text())
    Path(path).write_text(text)
    return dst


def official_worker(a) -> dict:
    src = _patched_copy(a.nvae)
    try:
        sys.path.insert(0, src)
        # imports that play no part in the maths
        for name in ["tensorboardX", "datasets", "fid", "fid.fid_score", "fid.inception"]:
            sys.modules[name] = types.ModuleType(name)
        sys.modules["tensorboardX"].SummaryWriter = object
        for fn in ["compute_statistics_of_generator", "load_statistics", "calculate_frechet_distance"]:
            setattr(sys.modules["fid.fid_score"], fn, None)
        sys.modules["fid.inception"].InceptionV3 = None
        warnings.filterwarnings("ignore")
        import torch
        import torch.distributed as dist

        torch.set_num_threads(a.threads)
        world_size = dist.get_world_size
        dist.get_world_size = lambda group=None: world_size(group) if dist.is_initialized() else 1
        import train as official_train
        import utils
        from model import AutoEncoder
        from thirdparty.adamax import Adamax

        text = Path(src, "train.py").read_text()
        block = text[text.index("    parser = argparse.ArgumentParser") : text.index("    args = parser.parse_args()")]
        scope = {"argparse": argparse}
        definitions = "\n".join(line[4:] for line in block.splitlines())
        exec(definitions, scope)  # security: allow -- runs the official train.py argument definitions
        args = scope["parser"].parse_args(OFFICIAL_ARGS[a.row].split() + ["--batch_size", str(a.batch)])
        args.distributed, args.num_total_iter = False, 100000
        official_train.args = args
        torch.manual_seed(0)
        model = AutoEncoder(args, None, utils.get_arch_cells(args.arch_instance))
        parameters = sum(p.numel() for p in model.parameters())

        class Quiet:
            def __getattr__(self, _):
                return lambda *args, **kwargs: None

        if a.phase == "train":
            optimizer = Adamax(model.parameters(), args.learning_rate, weight_decay=args.weight_decay, eps=1e-3)
            scaler = torch.amp.GradScaler("cpu", init_scale=2**10)
            queue, state = [(_inputs(a.batch), None)], {"step": 1000}

            def step():
                _, state["step"] = official_train.train(
                    queue, model, optimizer, scaler, state["step"], 0, Quiet(), None
                )

            times, unit = _timed(step, a.warmup, a.steps), a.batch
            peak = _peak_rss_gib()
            floor = _conv_floor(step)
        elif a.phase == "sample":
            model.eval()

            def step():
                with torch.no_grad():
                    output = model.decoder_output(model.sample(a.sample_batch, a.temperature))
                    output.sample()

            times, unit = _timed(step, a.warmup, a.steps), a.sample_batch
        else:
            queue = [(_inputs(a.iw_batch), None)]
            times = _timed(lambda: official_train.test(queue, model, a.k, args, Quiet()), a.warmup, a.steps)
            unit = a.iw_batch
        extra = {**floor, "peak_rss_gib": peak} if a.phase == "train" else {}
        return _result(times, a.warmup, unit, parameters=parameters, torch_version=torch.__version__, **extra)
    finally:
        shutil.rmtree(src, ignore_errors=True)


def vaezoo_worker(a) -> dict:
    import torch
    import yaml

    torch.set_num_threads(a.threads)
    import vaezoo
    from vaezoo.evaluation.metrics import iw_log_likelihood
    from vaezoo.hardware import bf16_warning
    from vaezoo.training import Trainer
    from vaezoo.training.settings import merge_settings, place_in_groups

    recipe: dict = {}
    for path in RECIPES[a.row]:
        for key, value in yaml.safe_load(Path(path).read_text()).items():
            recipe[key] = merge_settings(recipe.get(key, {}), value) if key == "trainer" else value
    torch.manual_seed(0)
    model = vaezoo.build(recipe["model"])
    objective = vaezoo.build(recipe["objective"], kind="objective")
    levers = {"precision": "fp32", **VARIANTS[a.variant]}
    extra = place_in_groups({**levers, "progress": False, "tensorboard": False, "device": "cpu"})
    trainer_args = merge_settings(recipe.get("trainer", {}), extra)
    trainer_args.pop("max_epochs", None)  # the step count plays no part in a step's time
    trainer_args.get("schedule", {}).pop("warmup_epochs", None)
    trainer = Trainer(**trainer_args)
    parameters = sum(p.numel() for p in model.parameters())
    if a.phase == "train":
        trainer.prepare(model, objective, a.batch, 50000)
        model.train()
        x, counter = _inputs(a.batch), iter(range(10**9))
        times, unit = _timed(lambda: trainer.train_step([x], next(counter)), a.warmup, a.steps), a.batch
        peak = _peak_rss_gib()
        floor = _conv_floor(lambda: trainer.train_step([x], next(counter)))
    else:
        if levers.get("channels_last"):
            model.to(memory_format=torch.channels_last)
        model.eval()
        if a.phase == "sample":

            def step():
                with torch.no_grad(), trainer._autocast():
                    model.sample(a.sample_batch, temperature=a.temperature)

            unit = a.sample_batch
        else:
            x = _inputs(a.iw_batch)
            if levers.get("channels_last"):
                x = x.contiguous(memory_format=torch.channels_last)

            def step():
                with torch.no_grad(), trainer._autocast():
                    iw_log_likelihood(model, x, a.k)

            unit = a.iw_batch
        times = _timed(step, a.warmup, a.steps)
    emulated = bf16_warning(levers["precision"], torch.device("cpu")) is not None
    extra = {**floor, "peak_rss_gib": peak} if a.phase == "train" else {}
    # the precision the step ran in: what ``precision: auto`` chose on this machine for this model, and why
    chosen = {"precision_used": trainer.precision, "precision_note": trainer.precision_note}
    return _result(
        times, a.warmup, unit, parameters=parameters, levers=levers, emulated_bf16=emulated, **chosen, **extra
    )


# -- the driver ---------------------------------------------------------------------------------------------------
def _run_worker(a, impl: str, row: str, phase: str, variant: str | None, steps: int) -> dict:
    cmd = [sys.executable, __file__, a.nvae, "--worker", impl, "--row", row, "--phase", phase, "--steps", str(steps)]
    cmd += ["--warmup", str(a.warmup), "--threads", str(a.threads), "--batch", str(a.batch), "--k", str(a.k)]
    cmd += ["--sample-batch", str(a.sample_batch), "--iw-batch", str(a.iw_batch), "--temperature", str(a.temperature)]
    if variant:
        cmd += ["--variant", variant]
    env = {**os.environ, "OMP_NUM_THREADS": str(a.threads)}
    result = subprocess.run(cmd, capture_output=True, text=True, env=env)
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    if result.returncode != 0 or not lines:
        tail = (result.stderr.strip().splitlines() or ["(no output)"])[-1]
        return {"error": f"exit {result.returncode}: {tail}"}
    return json.loads(lines[-1])


def _summary(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def _fmt(s: dict | None, digits: int = 3) -> str:
    if not s:
        return "-"
    return f"{s['median']:.{digits}f} ({s['min']:.{digits}f}-{s['max']:.{digits}f})"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("nvae", help="NVlabs/NVAE checkout or bare git directory")
    ap.add_argument("--rows", default="cifar_small,paper")
    ap.add_argument("--phases", default="train,sample,iw", help="phases of the cifar_small row")
    ap.add_argument("--paper-phases", default="train", help="phases of the paper row")
    ap.add_argument("--variants", default="base,fast,recompute", help=f"vaezoo variants: {', '.join(VARIANTS)}")
    ap.add_argument("--paper-variants", default="fast,recompute")
    ap.add_argument("--eval-variants", default="base,fast,bf16", help="vaezoo variants of the sample and iw phases")
    ap.add_argument("--no-auto-bf16", dest="auto_bf16", action="store_false", help="no bf16 row on native-bf16 CPUs")
    ap.add_argument("--pairs", type=int, default=3, help="interleaved pairs per cifar_small measurement")
    ap.add_argument("--paper-pairs", type=int, default=1)
    ap.add_argument("--steps", type=int, default=5, help="timed calls per process (cifar_small)")
    ap.add_argument("--paper-steps", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=1, help="untimed calls per process")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=8, help="training batch")
    ap.add_argument("--sample-batch", type=int, default=36)
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--k", type=int, default=100, help="importance samples")
    ap.add_argument("--iw-batch", type=int, default=4)
    ap.add_argument("--out", default="runs/compare_official.json")
    ap.add_argument("--worker", choices=["official", "vaezoo"], help=argparse.SUPPRESS)
    ap.add_argument("--row", help=argparse.SUPPRESS)
    ap.add_argument("--phase", help=argparse.SUPPRESS)
    ap.add_argument("--variant", default="base", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.worker:
        result = official_worker(a) if a.worker == "official" else vaezoo_worker(a)
        print(json.dumps(result))
        return 0

    sys.path.insert(0, str(REPO))
    import torch

    from vaezoo.hardware import cpu_info, machine_line, native_bf16

    torch.set_num_threads(a.threads)
    machine = cpu_info()
    print(machine_line(machine), flush=True)
    report: dict = {"machine": machine, "settings": vars(a).copy(), "rows": []}
    for key in ("worker", "row", "phase", "variant"):
        report["settings"].pop(key)
    for row in a.rows.split(","):
        paper = row == "paper"
        phases = (a.paper_phases if paper else a.phases).split(",")
        variants = [v for v in (a.paper_variants if paper else a.variants).split(",") if v]
        if a.auto_bf16 and native_bf16() and "bf16" not in variants and not paper:
            variants.append("bf16")
        pairs, steps = (a.paper_pairs, a.paper_steps) if paper else (a.pairs, a.steps)
        for phase in phases:
            # sampling and IW-NLL run in eval mode: only channels_last and the precision act there
            eval_variants = [v for v in a.eval_variants.split(",") if v in variants or v == "base"]
            phase_variants = variants if phase == "train" else eval_variants
            impls = [("official", None)] + [("vaezoo", v) for v in phase_variants]
            runs: dict[str, list[dict]] = {("official" if v is None else v): [] for _, v in impls}
            for pair in range(pairs):
                order = impls if pair % 2 == 0 else impls[::-1]
                for impl, variant in order:
                    name = "official" if variant is None else variant
                    result = _run_worker(a, impl, row, phase, variant, steps)
                    runs[name].append(result)
                    shown = result.get("error") or f"{result['median_s']:.3f} s, {result['peak_rss_gib']:.2f} GiB"
                    print(f"  {row} {phase} pair {pair + 1}/{pairs} {name}: {shown}", flush=True)
            entry = {"row": row, "phase": phase, "implementations": {}}
            official_ok = [r for r in runs["official"] if "error" not in r]
            for name, results in runs.items():
                ok = [r for r in results if "error" not in r]
                summary: dict = {"runs": results}
                if ok:
                    summary["median_s"] = _summary([r["median_s"] for r in ok])
                    summary["images_per_s"] = _summary([r["images_per_s"] for r in ok])
                    summary["peak_rss_gib"] = _summary([r["peak_rss_gib"] for r in ok])
                    if all(r.get("conv_share") is not None for r in ok):
                        summary["conv_share"] = _summary([r["conv_share"] for r in ok])
                if name != "official" and ok and official_ok:
                    pairs_ok = [
                        (o, r)
                        for o, r in zip(runs["official"], results, strict=True)
                        if "error" not in o and "error" not in r
                    ]
                    if pairs_ok:
                        summary["speedup_vs_official"] = _summary([o["median_s"] / r["median_s"] for o, r in pairs_ok])
                        summary["memory_vs_official"] = _summary(
                            [r["peak_rss_gib"] / o["peak_rss_gib"] for o, r in pairs_ok]
                        )
                entry["implementations"][name] = summary
            report["rows"].append(entry)
    _print_table(report)
    print("(the official code has no CPU bf16 mode: bf16 rows are against the official fp32 step)")
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


def _print_table(report: dict) -> None:
    from vaezoo.hardware import machine_line

    print()
    print(machine_line(report["machine"]))
    header = f"{'row':12s} {'phase':7s} {'impl':15s} {'s per call: median (range)':30s} {'images/s':>9s} "
    header += f"{'peak RSS GiB':>13s} {'speed-up vs official':>24s} {'memory vs official':>20s} {'conv floor':>11s}"
    print(header)
    for entry in report["rows"]:
        for name, s in entry["implementations"].items():
            if "median_s" not in s:
                print(f"{entry['row']:12s} {entry['phase']:7s} {name:15s} {s['runs'][0].get('error', 'failed')}")
                continue
            print(
                f"{entry['row']:12s} {entry['phase']:7s} {name:15s} {_fmt(s['median_s']):30s} "
                f"{s['images_per_s']['median']:9.1f} {s['peak_rss_gib']['median']:13.2f} "
                f"{_fmt(s.get('speedup_vs_official'), 2):>24s} {_fmt(s.get('memory_vs_official'), 2):>20s} "
                f"{(format(s['conv_share']['median'], '.0%') if 'conv_share' in s else '-'):>11s}"
            )


if __name__ == "__main__":
    sys.exit(main())
