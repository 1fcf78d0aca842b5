"""``vaezoo plot RUN_DIR [--out curves.png]``: the training curves of a run (finished, running or resumed) as a PNG."""

from __future__ import annotations

NAME = "plot"
HELP = "Plot a run's training curves (loss, KL per group, active units, learning rate, KL coefficient) to a PNG."


def add_arguments(parser) -> None:
    parser.add_argument("run_dir", help="a run directory written by vaezoo fit (it holds metrics.jsonl)")
    parser.add_argument("--out", type=str | None, default=None, help="the PNG to write (default: RUN_DIR/curves.png)")


def run(cfg) -> int:
    from ..plots import plot_run

    result = plot_run(cfg.run_dir, cfg.out)
    print(
        f"wrote {result.path}: {', '.join(result.panels)} ({result.steps} logged steps, up to step {result.last_step})"
    )
    return 0
