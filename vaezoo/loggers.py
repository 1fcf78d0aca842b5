"""The built-in logger (:class:`vaezoo.interfaces.Logger`): TensorBoard event files in ``RUN_DIR/tensorboard``.

Registered by the core plugin like any component; ``trainer.logging.tensorboard`` is its switch (null: on when the
``tensorboard`` package is installed, true: required, false: off), and ``trainer.logging.loggers`` names any other.
The package is optional (``pip install "vaezoo[tensorboard]"``) and imported only when a run writes events.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from torch import Tensor

from .interfaces import Logger


def tensorboard_installed() -> bool:
    """Whether the optional tensorboard package is importable (found without importing it)."""
    return importlib.util.find_spec("tensorboard") is not None


class TensorBoard(Logger):
    """TensorBoard event files: every metric, the KL per group, samples and reconstructions (RUN_DIR/tensorboard)."""

    #: the folder of the event files, inside the run's folder
    SUBDIRECTORY = "tensorboard"

    def __init__(self, run_dir: str | Path) -> None:
        self.directory = Path(run_dir) / self.SUBDIRECTORY
        self._writer = None
        #: events of steps from this one on, written by an earlier process of the run, are dropped (a resume)
        self._purge_step: int | None = None

    @classmethod
    def missing(cls) -> str | None:
        if tensorboard_installed():
            return None
        return 'the tensorboard package is not installed (pip install "vaezoo[tensorboard]")'

    @classmethod
    def describe(cls, run_dir: Path) -> str:
        return f"TensorBoard events in {Path(run_dir) / cls.SUBDIRECTORY}"

    def _open(self):
        if self._writer is None:  # opened at the first event: a rewind before it sets where to purge from
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(self.directory), purge_step=self._purge_step)
            self._purge_step = None
        return self._writer

    def log_scalars(self, step: int, scalars: dict[str, float]) -> None:
        writer = self._open()
        for name, value in scalars.items():
            writer.add_scalar(name, value, step)

    def log_images(self, step: int, name: str, grid: Tensor) -> None:
        self._open().add_image(name, grid, step)

    def rewind(self, step: int) -> None:
        """TensorBoard drops the events of later steps when a writer opens with ``purge_step``: the next event opens a
        new writer that does so."""
        self.close()
        self._purge_step = step + 1

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
