"""Quality of the zoo's models at an equal CPU budget on the bundled MNIST digits.

    python benchmarks/quality.py                                  # 2 CPU-minutes per model, IW-NLL with k = 1000
    python benchmarks/quality.py --minutes 2 --k 100 --jobs 2     # what docs/zoo.md reports
    python benchmarks/quality.py --steps 300 --only vae,lvae      # an equal number of steps instead
    python benchmarks/quality.py --no-ablations --out runs/quality_models
    python benchmarks/quality.py --from-json runs/quality/quality.json --out runs/quality   # re-render only

Trains every model recipe (VAE, beta-VAE, IWAE, IAF-VAE, Ladder VAE, VDVAE, small NVAE) and the small NVAE with
each overlay of ``recipes/ablations/`` for the same CPU time, then reports the test ELBO and the importance-weighted
NLL (both in nats on the 500 fixed-seed binarised test digits), the parameter count and the CPU and wall minutes.

The budget is CPU time, not wall time, so that runs on a shared machine stay comparable: each run first times a
few training steps (``time.process_time`` of its own process, after two warm-up steps) and then trains for
``budget / seconds per step`` steps, so every schedule (learning-rate cosine, KL warm-up given as a portion of the
run) completes. The learning-rate warm-up is capped at 5% of those steps. Each run uses ``--threads`` threads
(default 1: one thread per run keeps CPU time honest and runs in parallel with ``--jobs``).

Writes ``quality.md`` (markdown table), ``quality.json`` (all numbers), ``quality.png`` (plot) and ``runs/<name>/``
(each run's metrics, checkpoint, samples) under ``--out`` (default ``runs/quality``), and prints the table.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
RECIPES = REPO_ROOT / "recipes"

#: (name, recipe) of every model, in the order of the table
MODELS = [
    ("VAE", "vae_mnist.yaml"),
    ("beta-VAE (beta=4)", "beta_vae_mnist.yaml"),
    ("IWAE (k=5)", "iwae_mnist.yaml"),
    ("IAF-VAE", "iaf_vae_mnist.yaml"),
    ("Ladder VAE", "lvae_mnist.yaml"),
    ("VDVAE", "vdvae_mnist.yaml"),
    ("NVAE small", "nvae_mnist_small.yaml"),
]
NVAE_RECIPE = "nvae_mnist_small.yaml"


@dataclass
class Entry:
    name: str
    recipe: str
    overlays: list[str] = field(default_factory=list)


@dataclass
class Result:
    name: str
    recipe: str
    overlays: list[str]
    parameters: int
    steps: int
    seconds_per_step: float
    train_cpu_minutes: float
    train_wall_minutes: float
    nelbo_nats: float
    iw_nll_nats: float | None
    k: int
    test_examples: int
    grad_skips: int = 0
    error: str | None = None


def entries(include_ablations: bool = True) -> list[Entry]:
    out = [Entry(name, recipe) for name, recipe in MODELS]
    if include_ablations:
        for overlay in sorted((RECIPES / "ablations").glob("*.yaml")):
            out.append(Entry(f"NVAE small - {overlay.stem}", NVAE_RECIPE, [f"ablations/{overlay.name}"]))
    return out


def resolved_recipe(entry: Entry) -> dict:
    """The recipe with its overlays applied, exactly as ``vaezoo fit`` resolves it."""
    import yaml

    from vaezoo.cli import main

    argv = ["fit", str(RECIPES / entry.recipe)]
    for overlay in entry.overlays:
        argv += ["--config", str(RECIPES / overlay)]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([*argv, "--print_config"])
    if code != 0:
        raise RuntimeError(f"{entry.recipe} {entry.overlays}: {err.getvalue().strip()}")
    return yaml.safe_load(out.getvalue())


def _build(cfg: dict, seed: int):
    import torch

    import vaezoo

    torch.manual_seed(seed)
    model = vaezoo.build(cfg["model"])
    objective = vaezoo.build(cfg["objective"], kind="objective")
    data = vaezoo.build(cfg["data"], kind="dataset")
    return model, objective, data


def _trainer_args(cfg: dict, steps: int) -> dict:
    from vaezoo.training.settings import merge_settings, place_in_groups

    warmup = int((cfg["trainer"].get("schedule") or {}).get("warmup_steps") or 0)
    overrides = dict(max_steps=steps, warmup_steps=min(warmup, int(0.05 * steps)), checkpoint_every=0, sample_every=0,
                     progress=False, tensorboard=False, eval_k=0, device="cpu")  # fmt: skip
    return merge_settings(cfg["trainer"], place_in_groups(overrides))


def seconds_per_step(cfg: dict, seed: int, measured_steps: int = 5, warmup: int = 2) -> float:
    """CPU seconds of one training step of this recipe (this process's own CPU time)."""
    import torch

    from vaezoo.training import Trainer

    model, objective, data = _build(cfg, seed)
    trainer = Trainer(**_trainer_args(cfg, 1000))
    train_set = data.train_dataset()
    trainer.prepare(model, objective, data_batch_size=data.batch_size, num_examples=len(train_set), seed=seed)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    started = None
    for step in range(warmup + measured_steps):
        if step == warmup:
            started = time.process_time()
        batches = []
        for _ in range(trainer.accumulate):
            index = torch.randint(len(train_set), (data.batch_size,), generator=generator)
            batches.append(data.train_transform(torch.stack([train_set[int(i)][0] for i in index]), generator))
        trainer.train_step(batches, step)
    return (time.process_time() - started) / measured_steps


def run_entry(
    entry: Entry, out_dir: Path, minutes: float | None, steps: int | None, k: int, threads: int, seed: int = 0
) -> Result:
    """Calibrate, train and evaluate one entry (in this process, with ``threads`` threads)."""
    import torch

    from vaezoo.evaluation import evaluate
    from vaezoo.training import Trainer

    torch.set_num_threads(threads)
    try:
        cfg = resolved_recipe(entry)
        per_step = seconds_per_step(cfg, seed)
        if steps is None:
            steps_here = max(10, int(minutes * 60 / per_step))
        else:
            steps_here = steps
        model, objective, data = _build(cfg, seed)
        run_dir = out_dir / "runs" / _slug(entry.name)
        shutil.rmtree(run_dir, ignore_errors=True)
        trainer = Trainer(**_trainer_args(cfg, steps_here))
        cpu, wall = time.process_time(), time.perf_counter()
        trainer.fit(model, objective, data, run_dir, seed=cfg.get("seed", seed))
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        result = evaluate(model, data.test_dataset(), k=k, batch_size=100, seed=seed)
        skips = int(objective.state_dict().get("skipped_updates", 0))
        return Result(
            name=entry.name,
            recipe=entry.recipe,
            overlays=entry.overlays,
            parameters=sum(p.numel() for p in model.parameters()),
            steps=steps_here,
            seconds_per_step=per_step,
            train_cpu_minutes=cpu / 60,
            train_wall_minutes=wall / 60,
            nelbo_nats=-result.elbo_nats,
            iw_nll_nats=result.iw_nll_nats,
            k=k,
            test_examples=result.num_examples,
            grad_skips=skips,
        )
    except Exception as exc:  # one failing entry must not lose the others' results
        return Result(
            entry.name, entry.recipe, entry.overlays, 0, 0, math.nan, 0.0, 0.0, math.nan, None, k, 0, error=repr(exc)
        )


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name.lower()).strip("_")


def _fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def markdown_table(results: list[Result], budget: str) -> str:
    lines = [
        f"Budget: {budget}. Test set: {results[0].test_examples if results else 0} fixed-seed binarised digits; "
        f"IW-NLL with k = {results[0].k if results else 0}. Lower is better for -ELBO and IW-NLL.",
        "",
        "| model | -ELBO (nats) | IW-NLL (nats) | parameters | steps | CPU s/step | train CPU min | train wall min |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        name = r.name + (f" (failed: {r.error})" if r.error else "")
        lines.append(
            f"| {name} | {_fmt(r.nelbo_nats)} | {_fmt(r.iw_nll_nats)} | {r.parameters:,} | {r.steps} | "
            f"{_fmt(r.seconds_per_step, 3)} | {_fmt(r.train_cpu_minutes)} | {_fmt(r.train_wall_minutes)} |"
        )
    return "\n".join(lines) + "\n"


def print_table(results: list[Result], budget: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"vaezoo quality on bundled MNIST ({budget})")
    for column in ("model", "-ELBO (nats)", "IW-NLL (nats)", "parameters", "steps", "CPU s/step", "train CPU min"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for r in results:
        table.add_row(
            r.name + (" [red](failed)[/]" if r.error else ""),
            _fmt(r.nelbo_nats),
            _fmt(r.iw_nll_nats),
            f"{r.parameters:,}",
            str(r.steps),
            _fmt(r.seconds_per_step, 3),
            _fmt(r.train_cpu_minutes),
        )
    Console(width=150).print(table)


def plot(results: list[Result], path: Path, budget: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in results if not r.error]
    names = [r.name for r in ok][::-1]
    nelbo = [r.nelbo_nats for r in ok][::-1]
    iw = [r.iw_nll_nats if r.iw_nll_nats is not None else math.nan for r in ok][::-1]
    fig, ax = plt.subplots(figsize=(9, 0.42 * len(ok) + 1.6))
    positions = range(len(ok))
    ax.barh([p + 0.2 for p in positions], nelbo, height=0.4, label="-ELBO", color="#9ecae1")
    ax.barh([p - 0.2 for p in positions], iw, height=0.4, label=f"IW-NLL (k={ok[0].k if ok else 0})", color="#3182bd")
    ax.set_yticks(list(positions), names)
    finite = [v for v in nelbo + iw if math.isfinite(v)]
    if finite:
        ax.set_xlim(min(finite) * 0.95, max(finite) * 1.02)
    ax.set_xlabel("nats per test digit (lower is better)")
    ax.set_title(f"Test -ELBO and IW-NLL at an equal budget ({budget})", pad=28)
    ax.legend(loc="lower left", bbox_to_anchor=(0.0, 1.06), ncol=2, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--minutes", type=float, default=2.0, help="CPU minutes of training per model (default 2)")
    budget.add_argument("--steps", type=int, default=None, help="train every model for this many steps instead")
    parser.add_argument("--k", type=int, default=1000, help="importance samples of the IW-NLL (default 1000)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run (default 1)")
    parser.add_argument("--jobs", type=int, default=1, help="runs in parallel, one process each (default 1)")
    parser.add_argument("--only", type=str, default=None, help="comma-separated substrings of entry names to run")
    parser.add_argument("--no-ablations", action="store_true", help="skip the small NVAE's ablation overlays")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "runs" / "quality", help="output folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--from-json", type=Path, default=None, help="re-render the table and plot of a quality.json")
    args = parser.parse_args(argv)

    if args.from_json is not None:
        results = [Result(**r) for r in json.loads(args.from_json.read_text())]
        steps = {r.steps for r in results}
        budget_text = (
            f"{steps.pop()} steps per model"
            if args.steps is not None and len(steps) == 1
            else f"{args.minutes:g} CPU-minutes per model"
        )
        args.out.mkdir(parents=True, exist_ok=True)
        print_table(results, budget_text)
        (args.out / "quality.md").write_text(markdown_table(results, budget_text))
        plot(results, args.out / "quality.png", budget_text)
        return 0

    todo = entries(include_ablations=not args.no_ablations)
    if args.only:
        wanted = [w.strip().lower() for w in args.only.split(",") if w.strip()]
        todo = [e for e in todo if any(w in e.name.lower() or w in e.recipe for w in wanted)]
    if not todo:
        print("nothing to run", file=sys.stderr)
        return 2
    minutes = None if args.steps is not None else args.minutes
    budget_text = (
        f"{args.steps} steps per model" if args.steps is not None else f"{args.minutes:g} CPU-minutes per model"
    )
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    jobs = [(e, args.out, minutes, args.steps, args.k, args.threads, args.seed) for e in todo]
    if args.jobs > 1:
        with ProcessPoolExecutor(max_workers=args.jobs, mp_context=get_context("spawn")) as pool:
            results = list(pool.map(run_entry, *zip(*jobs, strict=True)))
    else:
        results = [run_entry(*job) for job in jobs]
    print_table(results, budget_text)
    (args.out / "quality.md").write_text(markdown_table(results, budget_text))
    (args.out / "quality.json").write_text(json.dumps([asdict(r) for r in results], indent=2) + "\n")
    plot(results, args.out / "quality.png", budget_text)
    print(
        f"wrote {args.out / 'quality.md'}, quality.json and quality.png in {(time.perf_counter() - started) / 60:.1f} min"
    )
    return 1 if any(r.error for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
