"""``vaezoo convert SOURCE CHECKPOINT OUT`` and ``vaezoo convert SOURCE CHECKPOINT --pretrained NAME``.

The first imports a checkpoint of another implementation as a saved-model folder. The second installs it in the
local model store under a registered pretrained name (checked against that entry's preset, with its card
metadata), after which ``vaezoo.load(NAME)`` works offline. SOURCE is any registered converter.
"""

from __future__ import annotations

NAME = "convert"
HELP = (
    "Convert a checkpoint of another implementation (SOURCE: a registered converter) into a saved model folder, "
    "or install it under a pretrained name (--pretrained NAME)."
)


def add_arguments(parser) -> None:
    parser.add_argument("source", help="a registered converter (`vaezoo list converter`), e.g. nvlabs")
    parser.add_argument("checkpoint", help="the checkpoint file to convert")
    parser.add_argument(
        "out", nargs="?", default=None, help="the folder to write (config.json, model.safetensors, README.md)"
    )
    parser.add_argument(
        "--pretrained",
        default=None,
        help="install in the local model store under this pretrained name (`vaezoo list pretrained`) instead",
    )


def run(cfg) -> int:
    from pathlib import Path

    from ..errors import CheckpointError, VaezooError
    from ..hub import from_pretrained, install_pretrained
    from ..plugins import get_registry
    from ..progress import new_progress

    converter = get_registry().get("converter", cfg.source).target  # unknown source: lists the choices
    if (cfg.out is None) == (cfg.pretrained is None):
        raise VaezooError("vaezoo convert needs either an OUT folder or --pretrained NAME (not both)")
    if cfg.pretrained is not None:
        get_registry().get("pretrained", cfg.pretrained)  # unknown name: close matches, before reading anything
    if not Path(cfg.checkpoint).is_file():
        raise CheckpointError(f"checkpoint {cfg.checkpoint!r} not found")
    with new_progress() as progress:
        if cfg.pretrained is not None:
            folder = install_pretrained(cfg.source, cfg.checkpoint, cfg.pretrained, progress=progress)
            model = from_pretrained(str(folder))
        else:
            task = progress.add_task(f"converting {Path(cfg.checkpoint).name} ({cfg.source})", total=2)
            folder = converter(cfg.checkpoint, cfg.out) or cfg.out
            progress.update(task, advance=1, description=f"verifying {folder}")
            model = from_pretrained(folder)  # the result must load strictly, as users will load it
            progress.update(task, advance=1, description=f"converted to {folder}")
    params = sum(p.numel() for p in model.parameters())
    if cfg.pretrained is not None:
        print(
            f"installed {cfg.checkpoint} ({cfg.source}) as {cfg.pretrained} in {folder}: {type(model).__name__}, "
            f'{params:,} parameters; vaezoo.load("{cfg.pretrained}") now loads it offline'
        )
    else:
        print(f"converted {cfg.checkpoint} ({cfg.source}) to {folder}: {type(model).__name__}, {params:,} parameters")
    return 0
