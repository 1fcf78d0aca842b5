"""The ``vaezoo`` command line (jsonargparse). ``python -m vaezoo`` is the same program.

Subcommands live in :mod:`vaezoo.commands` (one module each, discovered here). Bad input never
produces a traceback: it is one line on stderr and exit status 2.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from types import ModuleType

from jsonargparse import ArgumentParser

from . import commands
from ._version import __version__
from .commands._recipe import check_recipe_argv
from .commands._yaml_limits import check_argv
from .config import describe_parse_error, register_recipe_mode
from .errors import VaezooError
from .provenance import command_line

#: order in --help (others follow alphabetically)
_ORDER = ["fit", "evaluate", "sample", "list", "plugins", "convert", "push", "download"]


def command_modules() -> dict[str, ModuleType]:
    found = {}
    for info in pkgutil.iter_modules(commands.__path__):
        module = importlib.import_module(f"{commands.__name__}.{info.name}")
        if hasattr(module, "NAME") and hasattr(module, "run"):
            found[module.NAME] = module
    return dict(sorted(found.items(), key=lambda kv: (_ORDER.index(kv[0]) if kv[0] in _ORDER else 99, kv[0])))


class _OneLineParser(ArgumentParser):
    """Reports argument errors as one line and exit status 2 (jsonargparse prints usage + details)."""

    argv: list[str] = []

    def error(self, message, *args, **kwargs):  # noqa: D401 - argparse API
        raise VaezooError(describe_parse_error(str(message), _OneLineParser.argv))


def build_parser(modules: dict[str, ModuleType] | None = None, only: str | None = None) -> ArgumentParser:
    """The command line's parser. ``only``: add the arguments of that subcommand alone (the others are listed by
    ``--help`` but left empty), so that ``vaezoo --version``, ``--help`` and a light subcommand never build the parsers
    that load every plugin's components."""
    modules = modules or command_modules()
    mode = register_recipe_mode()
    parser = _OneLineParser(
        prog="vaezoo",
        description="A plugin-based zoo of deep hierarchical VAEs.",
        exit_on_error=False,
        parser_mode=mode,
    )
    parser.add_argument("--version", action="version", version=f"vaezoo {__version__}")
    sub = parser.add_subcommands(dest="command", required=True)
    for name, module in modules.items():
        sub_parser = _OneLineParser(
            prog=f"vaezoo {name}", description=module.HELP, exit_on_error=False, parser_mode=mode
        )
        if only is None or name == only:
            module.add_arguments(sub_parser)
        sub.add_subcommand(name, sub_parser, help=module.HELP)
    return parser


def _normalise_argv(argv: list[str], modules: dict[str, ModuleType]) -> list[str]:
    """``vaezoo fit RECIPE.yaml ...`` -> ``vaezoo fit --config RECIPE.yaml ...`` for commands that take a recipe."""
    if len(argv) >= 2 and argv[0] in modules and getattr(modules[argv[0]], "RECIPE_POSITIONAL", False):
        if not argv[1].startswith("-"):
            return [argv[0], "--config", argv[1], *argv[2:]]
    return argv


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    given = ["vaezoo", *argv]
    try:
        modules = command_modules()
        invoked = next((arg for arg in argv if not arg.startswith("-")), None)
        parser = build_parser(modules, only=invoked if invoked in modules else "")
        argv = _normalise_argv(argv, modules)
        check_argv(argv)  # undecodable, too deep or alias-bombed YAML: one line, before jsonargparse reads it
        _OneLineParser.argv = argv
        if argv and getattr(modules.get(argv[0]), "RECIPE_POSITIONAL", False):
            # sections of the wrong shape and misspelt keys at any depth: one line with the key path
            check_recipe_argv(argv[1:], parser._subcommands_action._name_parser_map[argv[0]])
        cfg = parser.parse_args(argv)
        name = cfg.command
        with command_line(given):  # the command line every provenance record names
            return int(modules[name].run(cfg[name]) or 0)
    except VaezooError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except SystemExit as exc:  # --help, --version and --print_config exit from inside the parser
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
