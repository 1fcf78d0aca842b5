"""vaezoo-csv-logger: a logger that writes one CSV file per metric (``step,value``) and a PNG per image grid.

An example of a third-party vaezoo plugin adding a component of the ``logger`` kind (see docs/plugin-tutorial.md of
vaezoo). vaezoo finds it through the ``vaezoo`` entry point in pyproject.toml and calls the hook below; a recipe
names it in ``trainer.logging.loggers``.
"""

from __future__ import annotations

import csv
from pathlib import Path

from torchvision.utils import save_image

from vaezoo import hookimpl
from vaezoo.interfaces import Logger

__all__ = ["CSVLogger"]


class CSVLogger(Logger):
    """One CSV file per metric (RUN_DIR/csv/METRIC.csv: step,value) and a PNG per image grid."""

    def __init__(self, run_dir: str | Path, folder: str = "csv") -> None:
        self.directory = Path(run_dir) / folder

    @classmethod
    def describe(cls, run_dir: Path) -> str:
        return "one CSV file per metric (CSVLogger)"

    def _file(self, name: str) -> Path:
        path = self.directory / f"{name}.csv"  # kl/group_0 -> csv/kl/group_0.csv
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def log_scalars(self, step: int, scalars: dict[str, float]) -> None:
        for name, value in scalars.items():
            path = self._file(name)
            new = not path.exists()
            with path.open("a", newline="") as handle:
                writer = csv.writer(handle)
                if new:
                    writer.writerow(["step", "value"])
                writer.writerow([step, repr(float(value))])  # repr: the float exactly, read back by float()

    def log_images(self, step: int, name: str, grid) -> None:
        path = self.directory / "images" / f"{name}_step_{step:08d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        save_image(grid, path)

    def rewind(self, step: int) -> None:
        """Drop the rows of the steps after ``step``: the run is about to log them again."""
        for path in self.directory.rglob("*.csv") if self.directory.exists() else []:
            with path.open(newline="") as handle:
                rows = list(csv.reader(handle))
            kept = [rows[0], *(row for row in rows[1:] if int(row[0]) <= step)]
            with path.open("w", newline="") as handle:
                csv.writer(handle).writerows(kept)


@hookimpl
def register_components(register):
    register("logger", CSVLogger)
