"""CLI subcommands, one module each, discovered by :mod:`vaezoo.cli`.

A command module defines::

    NAME = "list"                 # the subcommand
    HELP = "one line for --help"
    def add_arguments(parser): ...   # a jsonargparse.ArgumentParser
    def run(cfg) -> int: ...         # cfg: the parsed jsonargparse Namespace of this subcommand

Raise :class:`vaezoo.errors.VaezooError` for bad input: the CLI prints its one-line message and
exits with status 2.
"""
