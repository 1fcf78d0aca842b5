"""``vaezoo plugins``: loaded plugins, their versions and what each registered."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from ..plugins import get_registry, plugin_infos

NAME = "plugins"
HELP = "List loaded plugins, their versions and what each registered."


def add_arguments(parser) -> None:
    pass


def run(cfg) -> int:
    summary = get_registry().plugin_summary()
    table = Table(title="vaezoo plugins")
    for column in ("plugin", "version", "built-in", "registered"):
        table.add_column(column)
    for info in plugin_infos():
        registered = summary.get(info.name, {})
        text = "; ".join(f"{kind}: {', '.join(names)}" for kind, names in registered.items()) or "-"
        table.add_row(info.name, info.version or "-", "yes" if info.builtin else "no", text)
    Console(width=200).print(table)
    return 0
