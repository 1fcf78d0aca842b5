"""One provenance record for every output of a run: what produced it, with what, on what, from which recipe, when.

:func:`provenance` builds the record that ``vaezoo fit`` writes into ``provenance.json`` (beside the run's
``config.yaml``, which stays a loadable recipe), ``results.json``, every checkpoint and the saved model's
``config.json`` metadata, and that ``vaezoo evaluate --out`` writes into its JSON:

- ``vaezoo_version``, ``python`` and ``plugins`` (each loaded plugin with its distribution and version);
- ``torch``: its version and build (``cuda 12.8``, ``rocm ...`` or ``cpu``), and the accelerators it sees;
- ``machine`` (the CPU model, its vector extensions, native bf16, torch and threads, as the benchmarks print it),
  ``platform`` and ``threads``;
- ``command``: the command line;
- ``recipe_sha256``: the sha256 of the resolved recipe's text as written to the run's ``config.yaml`` (so that
  ``sha256sum config.yaml`` checks it), ``recipe_file`` and ``git``: the commit and dirty flag (tracked files changed,
  as ``git describe --dirty`` counts them) of the repository the recipe file lies in, or null when there is no recipe
  file, no repository or no git;
- ``started`` and ``ended``: ISO times in UTC (``ended`` is null until the output is complete).

Nothing here may fail a run: an unreadable fact is recorded as null.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import platform
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ._version import __version__

#: seconds each git command may take (a repository on a slow network share must not hold up a run)
GIT_TIMEOUT = 5.0

_command: list[str] | None = None


def now() -> str:
    """The current time, ISO 8601 in UTC with milliseconds."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")


@contextlib.contextmanager
def command_line(argv: list[str]) -> Iterator[None]:
    """Record ``argv`` as the command line of the records built inside the block (the CLI passes what it parses;
    outside the block the command is ``sys.argv``)."""
    global _command
    previous, _command = _command, list(argv)
    try:
        yield
    finally:
        _command = previous


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def provenance(
    *, recipe_text: str | None = None, recipe_file: str | Path | None = None, started: str | None = None
) -> dict[str, Any]:
    """The provenance record of the current process (see the module's docstring). ``recipe_text``: the resolved
    recipe as written to ``config.yaml``; ``recipe_file``: the recipe file the run was started from (its repository's
    commit is recorded); ``started``: the start time (default: now)."""
    import torch

    from .hardware import machine_line
    from .plugins import plugin_infos

    folder = Path(recipe_file).expanduser().absolute().parent if recipe_file is not None else None
    record = {
        "vaezoo_version": __version__,
        "python": platform.python_version(),
        "plugins": [
            {"name": i.name, "distribution": i.distribution, "version": i.version, "builtin": i.builtin}
            for i in plugin_infos()
        ],
        "torch": {"version": torch.__version__, "build": torch_build(), "accelerators": _accelerators()},
        "machine": machine_line(),
        "platform": platform.platform(),
        "threads": torch.get_num_threads(),
        "command": list(_command if _command is not None else sys.argv),
        "recipe_sha256": sha256_text(recipe_text) if recipe_text is not None else None,
        "recipe_file": str(Path(recipe_file).expanduser().absolute()) if recipe_file is not None else None,
        "git": git_state(folder) if folder is not None else None,
        "started": started or now(),
        "ended": None,
    }
    # plain JSON types only (torch.__version__ is a str subclass): checkpoints load with weights_only=True
    return json.loads(json.dumps(record))


def finished(record: dict[str, Any], ended: str | None = None) -> dict[str, Any]:
    """A copy of ``record`` whose ``ended`` is ``ended`` (default: now)."""
    return {**record, "ended": ended or now()}


def torch_build() -> str:
    """``cuda X.Y``, ``rocm X.Y`` or ``cpu``: what this torch was built for."""
    import torch

    if torch.version.cuda:
        return f"cuda {torch.version.cuda}"
    if getattr(torch.version, "hip", None):
        return f"rocm {torch.version.hip}"
    return "cpu"


def _accelerators() -> list[str]:
    import torch

    try:
        if torch.cuda.is_available():
            return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    except Exception:  # a broken driver: the record stays writable
        return []
    return []


def git_state(folder: str | Path) -> dict[str, Any] | None:
    """``{"commit", "dirty", "root"}`` of the git repository ``folder`` lies in; None without git, outside a
    repository, in a repository without commits, or when git does not answer within :data:`GIT_TIMEOUT` seconds.
    ``dirty``: a tracked file differs from the commit (staged or not); untracked files do not count."""
    head = _git(folder, "rev-parse", "HEAD", "--show-toplevel")
    if head is None or len(head.splitlines()) != 2:
        return None
    commit, root = head.splitlines()
    status = _git(folder, "status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": None if status is None else bool(status.strip()), "root": root}


def _git(folder: str | Path, *args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", "-C", str(folder), *args],
            capture_output=True,
            text=True,
            timeout=GIT_TIMEOUT,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None
