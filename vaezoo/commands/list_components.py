"""``vaezoo list [KIND] [PATTERN]``: the registry as a table.

``vaezoo list pretrained`` shows, for each pretrained name, where :func:`vaezoo.load` would take it from
(installed in the local store, bundled with its package, cached by Hugging Face, on the Hub, or nowhere: then how to
install it) and its licence; the Hub is asked with one quick request per name, in parallel, unless HF_HUB_OFFLINE
is set.
"""

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
    if cfg.kind == "pretrained":
        return _list_pretrained(entries)
    table = Table(title=f"vaezoo components{' of kind ' + cfg.kind if cfg.kind else ''}")
    for column in ("kind", "name", "plugin", "description"):
        table.add_column(column)
    for entry in entries:
        table.add_row(entry.kind, entry.name, entry.plugin, entry.summary)
    Console(width=160).print(table)
    return 0


def _list_pretrained(entries) -> int:
    from ..hub import locate_all

    found = locate_all([e.name for e in entries])
    table = Table(title="vaezoo pretrained models (vaezoo.load looks in this order: installed, bundled, cached, Hub)")
    for column in ("name", "preset", "available", "from", "license", "plugin"):
        table.add_column(column, overflow="fold")  # URLs and commands stay whole, to copy
    for entry in entries:
        meta, location = entry.target, found[entry.name]
        detail = location.detail
        if location.kind == "nowhere" and meta.get("converter"):
            detail = f"{detail}; vaezoo convert {meta['converter']} CHECKPOINT.pt --pretrained {entry.name}"
            if meta.get("checkpoint_url"):
                detail += f" (checkpoint: {meta['checkpoint_url']})"
        table.add_row(
            entry.name,
            meta.get("preset") or "-",
            location.kind,
            detail,
            _short_license(meta.get("license")),
            entry.plugin,
        )
    Console(width=200).print(table)
    return 0


def _short_license(text: str | None) -> str:
    return text.split(";")[0].strip() if text else "-"
