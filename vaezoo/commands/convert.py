"""``vaezoo convert SOURCE CHECKPOINT OUT``: import a checkpoint of another implementation as a saved model."""

from __future__ import annotations

NAME = "convert"
HELP = "Convert a checkpoint of another implementation (SOURCE: a registered converter) into a saved model folder."


def add_arguments(parser) -> None:
    parser.add_argument("source", help="a registered converter (`vaezoo list converter`), e.g. nvlabs")
    parser.add_argument("checkpoint", help="the checkpoint file to convert")
    parser.add_argument("out", help="the folder to write (config.json, model.safetensors, README.md)")


def run(cfg) -> int:
    from pathlib import Path

    from ..errors import CheckpointError
    from ..hub import from_pretrained
    from ..plugins import get_registry

    converter = get_registry().get("converter", cfg.source).target  # unknown source: lists the choices
    if not Path(cfg.checkpoint).is_file():
        raise CheckpointError(f"checkpoint {cfg.checkpoint!r} not found")
    out = converter(cfg.checkpoint, cfg.out) or cfg.out
    model = from_pretrained(out)  # the result must load strictly, as users will load it
    params = sum(p.numel() for p in model.parameters())
    print(f"converted {cfg.checkpoint} ({cfg.source}) to {out}: {type(model).__name__}, {params:,} parameters")
    return 0
