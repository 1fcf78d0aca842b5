"""Progress bars for long operations (evaluate, BN re-adjustment, data prepare, download, convert).

A bar is drawn with rich on stderr when stderr is a terminal, and nothing at all is written otherwise: logs, CI
and pipes get the commands' result lines only. ``VAEZOO_PROGRESS=0`` turns bars off on a terminal too, ``=1``
forces them on (e.g. under a pager that is not a tty).

Operations take an optional ``progress`` (a :class:`rich.progress.Progress`) so that a command can show several
steps in one display; without one they open their own with :func:`progress_bar`.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

PROGRESS_ENV = "VAEZOO_PROGRESS"


def _setting() -> bool | None:
    value = os.environ.get(PROGRESS_ENV, "").strip().lower()
    return False if value in ("0", "false", "no", "off") else True if value in ("1", "true", "yes", "on") else None


def progress_enabled(console: Console | None = None) -> bool:
    """Whether bars are drawn: on a terminal, unless VAEZOO_PROGRESS says otherwise."""
    setting = _setting()
    return setting if setting is not None else (console or Console(stderr=True)).is_terminal


def new_progress(*, transfer: bool = False, console: Console | None = None) -> Progress:
    """A rich Progress on stderr, disabled (it writes nothing) unless :func:`progress_enabled`.

    ``transfer``: byte columns (size, speed) instead of counts.
    """
    console = console or Console(stderr=True, force_terminal=True if _setting() else None)
    counts = [DownloadColumn(), TransferSpeedColumn()] if transfer else [MofNCompleteColumn(), TimeElapsedColumn()]
    return Progress(
        SpinnerColumn(),
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        *counts,
        TimeRemainingColumn(),
        console=console,
        disable=not progress_enabled(console),
        transient=False,
    )


@contextlib.contextmanager
def progress_bar(progress: Progress | None = None, **kwargs: Any) -> Iterator[Progress]:
    """``progress`` itself when given (the caller's display), else a new one started for the ``with`` block."""
    if progress is not None:
        yield progress
        return
    with new_progress(**kwargs) as own:
        yield own


def tqdm_class(progress: Progress) -> type:
    """A tqdm look-alike that draws huggingface_hub's download bars as tasks of ``progress``.

    huggingface_hub calls ``cls(unit=..., unit_scale=..., total=..., initial=..., desc=...)`` for a class that is
    not its own tqdm subclass, then ``update(n)`` per chunk and ``close()``; that is all this implements.
    """

    class RichTqdm:
        def __init__(self, *args: Any, total: float | None = None, initial: float = 0, desc: str | None = None, **_):
            self.total, self.n, self.disable = total, initial, progress.disable
            self._task = progress.add_task(desc or "download", total=total, completed=initial)

        def update(self, n: float = 1) -> None:
            self.n += n
            progress.update(self._task, completed=self.n)

        def set_description(self, desc: str | None = None, refresh: bool = True) -> None:
            progress.update(self._task, description=desc or "")

        def refresh(self) -> None:
            pass

        def close(self) -> None:
            progress.update(self._task, total=self.total if self.total is not None else self.n)

        def __enter__(self) -> RichTqdm:
            return self

        def __exit__(self, *exc: Any) -> None:
            self.close()

    return RichTqdm
