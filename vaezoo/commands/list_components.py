"""``vaezoo list [KIND] [PATTERN]``: the registry as a table."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from ..plugins import get_registry
from ..registry import KINDS

NAME = "list"
HELP = "List registered components, optionally of one KIND and matching a wildcard PATTERN."


def add_arguments(parser) -> None:
    parser.add_argument("kind", nargs="?", default=None, help=f"one of: {', '.join(KINDS)}")
    parser.add_argument("pattern", nargs="?", default="*", help="fnmatch pattern, e.g. 'nvae-*'")


def run(cfg) -> int:
    registry = get_registry()
    entries = registry.entries(cfg.kind, cfg.pattern)
    table = Table(title=f"vaezoo components{' of kind ' + cfg.kind if cfg.kind else ''}")
    for column in ("kind", "name", "plugin", "description"):
        table.add_column(column)
    for entry in entries:
        table.add_row(entry.kind, entry.name, entry.plugin, entry.summary)
    Console(width=160).print(table)
    return 0
