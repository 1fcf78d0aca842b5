"""Bounds on the YAML a user hands the command line, checked before jsonargparse reads it.

jsonargparse parses recipes, overlays and argument values as YAML and copies what it parsed. Three kinds of input
would otherwise end in a traceback or exhaust the machine: bytes that are not UTF-8, nesting deeper than Python's
recursion limit (the YAML composer recurses), and aliases that expand exponentially (ten anchors of ten aliases each
are 10^10 nodes once expanded). The checks read the parser's event stream, which is iterative and never expands an
alias, so they cost time and memory linear in the text.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from ..errors import ConfigError

#: no recipe comes near these: the paper recipes nest 5 levels and hold a few hundred nodes
MAX_DEPTH = 64
MAX_EXPANDED_NODES = 100_000
MAX_BYTES = 10 * 2**20


def check_yaml_text(text: str, label: str) -> None:
    """Raise a one-line :class:`ConfigError` when ``text`` nests deeper than :data:`MAX_DEPTH` or expands (aliases
    included) to more than :data:`MAX_EXPANDED_NODES` nodes. Syntax errors are left to the parser that follows."""
    sizes: list[int] = []  # nodes counted so far in each open collection
    anchors: dict[str, int] = {}  # anchor -> expanded size of its node
    open_anchors: list[str | None] = []
    total = 0
    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
                sizes.append(0)
                open_anchors.append(event.anchor)
                if len(sizes) > MAX_DEPTH:
                    raise ConfigError(f"{label}: nested more than {MAX_DEPTH} levels deep")
                continue
            if isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                size = sizes.pop() + 1
                anchor = open_anchors.pop()
            elif isinstance(event, yaml.ScalarEvent):
                size, anchor = 1, event.anchor
            elif isinstance(event, yaml.AliasEvent):
                size, anchor = anchors.get(event.anchor, 1), None
            else:  # stream and document boundaries
                continue
            if anchor is not None:
                anchors[anchor] = size
            if sizes:
                sizes[-1] += size
            else:
                total += size
            if total + sum(sizes) > MAX_EXPANDED_NODES:
                raise ConfigError(f"{label}: expands to more than {MAX_EXPANDED_NODES:,} values (YAML aliases?)")
    except yaml.YAMLError:
        return  # reported, as one line, by jsonargparse's own parse


def check_yaml_file(path: str | Path) -> None:
    """A recipe or overlay file: readable, at most :data:`MAX_BYTES`, UTF-8, and within the YAML bounds."""
    path = Path(path)
    try:
        if not path.is_file():
            return  # a missing file is reported by the parser, with its name
        if path.stat().st_size > MAX_BYTES:
            raise ConfigError(f"{path}: larger than {MAX_BYTES // 2**20} MiB, not a recipe")
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}); recipes are YAML files") from exc
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if "\x00" in text:
        raise ConfigError(f"{path}: holds NUL bytes; recipes are YAML text files")
    check_yaml_text(text, str(path))


def check_argv(argv: list[str]) -> None:
    """Every ``--config`` file of a command line, and every argument value (jsonargparse parses values as YAML)."""
    for i, arg in enumerate(argv):
        if arg == "--config" and i + 1 < len(argv):
            check_yaml_file(argv[i + 1])
        elif arg.startswith("--config="):
            check_yaml_file(arg.split("=", 1)[1])
        elif any(c in arg for c in "[{&*"):
            check_yaml_text(arg.split("=", 1)[1] if arg.startswith("--") and "=" in arg else arg, "argument")
