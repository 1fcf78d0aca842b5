"""``vaezoo plugins``: loaded plugins, their versions and what each registered."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from ..plugins import BLOCK_ENV, blocked_plugins, get_registry, plugin_infos

NAME = "plugins"
HELP = "List loaded plugins, their versions and what each registered."


def add_arguments(parser) -> None:
    parser.add_argument(
        "--components", type=bool, default=True, help="also list what each plugin registered (builds the registry)"
    )


def run(cfg) -> int:
    summary = get_registry().plugin_summary() if cfg.components else {}  # building it may report more failures
    table = Table(title="vaezoo plugins")
    for column in (
        "plugin",
        "distribution",
        "version",
        "built-in",
        "status",
        *(["registered"] if cfg.components else []),
    ):
        table.add_column(column)
    for info in plugin_infos(failed=True):
        registered = summary.get(info.name, {})
        text = "; ".join(f"{kind}: {', '.join(names)}" for kind, names in registered.items()) or "-"
        status = "loaded" if info.error is None else f"failed: {info.error}"
        row = [info.name, info.distribution or "-", info.version or "-", "yes" if info.builtin else "no", status]
        table.add_row(*row, *([text] if cfg.components else []))
    for name in sorted(blocked_plugins()):  # named in the environment: not loaded, on purpose
        table.add_row(name, "-", "-", "-", f"blocked ({BLOCK_ENV})", *(["-"] if cfg.components else []))
    Console(width=200).print(table)
    return 0
