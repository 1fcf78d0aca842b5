"""``vaezoo benchmark RECIPE [--bench.batch_size 8] [--bench.phases [train,sample,iw]] --bench.out bench.json``.

Training-step throughput (images/s), peak memory, sampling and IW-NLL throughput of a recipe at a
given batch size: the median of repeated runs after warm-up, written as JSON. Every speed switch of
the trainer (``precision``, and the ``speed`` group: channels_last, compile_cells, gradient_checkpointing,
adamax_foreach, bn_swish, ...) is a recipe key, so ``--trainer.speed.channels_last true`` measures that lever; the JSON carries the machine
line (:func:`vaezoo.hardware.cpu_info`) and whether bf16 would be emulated on this CPU.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from ..config import namespace_to_dict
from ..errors import VaezooError
from ..training import Trainer
from ._recipe import add_recipe_arguments, instantiate_recipe

NAME = "benchmark"
HELP = "Measure training, sampling and IW-NLL throughput and peak memory of a recipe."
RECIPE_POSITIONAL = True
PHASES = ("train", "sample", "iw")
_parser = None


def add_arguments(parser) -> None:
    global _parser
    add_recipe_arguments(parser)
    parser.add_argument("--bench.batch_size", type=int, default=8, help="images per measured batch")
    parser.add_argument("--bench.warmup", type=int, default=2, help="unmeasured repeats first")
    parser.add_argument("--bench.repeats", type=int, default=5, help="measured repeats (the median is reported)")
    parser.add_argument("--bench.phases", type=list[str], default=list(PHASES), help="of train, sample and iw")
    parser.add_argument("--bench.k", type=int, default=100, help="importance samples of the iw phase")
    parser.add_argument("--bench.temperature", type=float, default=1.0, help="temperature of the sample phase")
    parser.add_argument("--bench.threads", type=int | None, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--bench.isolate", type=bool, default=True, help="one process per phase (separate peak memory)")
    parser.add_argument("--bench.out", type=str | None, default=None, help="also write the results as JSON here")
    _parser = parser


def run(cfg) -> int:
    from rich.console import Console
    from rich.table import Table

    from ..benchmarking import benchmark_phase
    from ..hardware import bf16_warning, cpu_info

    bench = cfg.bench
    unknown = [p for p in bench.phases if p not in PHASES]
    if unknown:
        raise VaezooError(f"--bench.phases: unknown phase {unknown[0]!r} (choices: {', '.join(PHASES)})")
    if bench.batch_size < 1 or bench.repeats < 1 or bench.warmup < 0:
        raise VaezooError("--bench.batch_size and --bench.repeats must be positive and --bench.warmup not negative")
    if bench.threads:
        torch.set_num_threads(bench.threads)
    results: dict = {}
    if bench.isolate and len(bench.phases) > 1:
        for phase in bench.phases:
            results[phase] = _run_isolated(phase)
    else:
        torch.manual_seed(cfg.seed)
        model, objective, data = instantiate_recipe(_parser, cfg)
        trainer = Trainer(**namespace_to_dict(cfg.trainer))
        for phase in bench.phases:
            results[phase] = benchmark_phase(
                phase,
                model,
                objective,
                data,
                trainer,
                bench.batch_size,
                bench.warmup,
                bench.repeats,
                bench.k,
                bench.temperature,
            )
    trainer_cfg = namespace_to_dict(cfg.trainer)
    report = {
        "model_parameters": _count_parameters(cfg),
        "torch_threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
        "machine": cpu_info(),
        "emulated_bf16": bf16_warning(trainer_cfg.get("precision", "fp32"), torch.device("cpu")) is not None,
        "device": trainer_cfg.get("device"),
        "levers": {
            "precision": trainer_cfg.get("precision"),
            **{
                k: (trainer_cfg.get("speed") or {}).get(k)
                for k in (
                    "channels_last",
                    "compile_cells",
                    "gradient_checkpointing",
                    "adamax_foreach",
                    "depthwise_weight_grad",
                    "keep_freed_memory",
                    "bn_swish",
                )
            },
        },
        **results,
    }
    table = Table(title="vaezoo benchmark (median of repeats)")
    for column in ("phase", "batch", "median s", "images/s", "peak RSS GiB"):
        table.add_column(column)
    for phase, r in results.items():
        table.add_row(
            phase, str(r["batch_size"]), f"{r['median_s']:.4f}", f"{r['images_per_s']:.1f}", f"{r['peak_rss_gib']:.2f}"
        )
    Console(soft_wrap=True).print(table)
    if bench.out:
        out = Path(bench.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.tmp")
        tmp.write_text(json.dumps(report, indent=2) + "\n")
        tmp.replace(out)
    return 0


def _count_parameters(cfg) -> int:
    from ..config import build

    with torch.device("meta"):
        model = build(namespace_to_dict(cfg.model))
    return sum(p.numel() for p in model.parameters())


def _run_isolated(phase: str) -> dict:
    """Re-run this command for one phase in a fresh process (its own peak memory)."""
    argv = [a for a in sys.argv[1:]]
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "phase.json")
        cmd = [
            sys.executable,
            "-m",
            "vaezoo",
            *argv,
            "--bench.phases",
            f"[{phase}]",
            "--bench.isolate",
            "false",
            "--bench.out",
            out,
        ]
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0:
            raise VaezooError(
                f"benchmark phase {phase} failed: {result.stderr.strip().splitlines()[-1] if result.stderr.strip() else result.returncode}"
            )
        return json.loads(Path(out).read_text())[phase]
