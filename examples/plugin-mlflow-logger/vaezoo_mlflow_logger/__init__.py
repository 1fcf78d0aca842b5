"""vaezoo-mlflow-logger: a logger that sends a run's metrics and image grids to an MLflow tracking server or store.

An example of a third-party vaezoo plugin adding a component of the ``logger`` kind (see docs/plugin-tutorial.md of
vaezoo): the logger is MLflow's client calls and nothing else. A recipe names it in ``trainer.logging.loggers``:

    trainer:
      logging: {loggers: [{class_path: MLflowLogger, init_args: {experiment: digits}}]}

The tracking URI is MLflow's own setting (``MLFLOW_TRACKING_URI``, or ``tracking_uri``). The MLflow run id is kept in
the vaezoo run folder, so a resumed vaezoo run logs into the same MLflow run.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from vaezoo import hookimpl
from vaezoo.interfaces import Logger

__all__ = ["MLflowLogger"]

#: the file in the vaezoo run folder that holds the MLflow run's id
RUN_ID_FILE = "mlflow_run_id.txt"


class MLflowLogger(Logger):
    """Each metric as an MLflow metric at its step (``kl/group_0`` as ``kl.group_0``: a store may keep metrics as files,
    where ``kl`` and ``kl/group_0`` cannot both exist), each image grid as an MLflow image (step in the key)."""

    def __init__(self, run_dir: str | Path, experiment: str = "vaezoo", tracking_uri: str | None = None) -> None:
        import mlflow

        self.client = mlflow.MlflowClient(tracking_uri=tracking_uri)
        found = self.client.get_experiment_by_name(experiment)
        experiment_id = found.experiment_id if found is not None else self.client.create_experiment(experiment)
        id_file = Path(run_dir) / RUN_ID_FILE
        if id_file.is_file():  # a resumed vaezoo run continues its MLflow run
            self.run_id = id_file.read_text().strip()
            self.client.update_run(self.run_id, status="RUNNING")
        else:
            self.run_id = self.client.create_run(experiment_id, run_name=Path(run_dir).name).info.run_id
            id_file.parent.mkdir(parents=True, exist_ok=True)
            id_file.write_text(self.run_id + "\n")

    @classmethod
    def missing(cls) -> str | None:
        return None if importlib.util.find_spec("mlflow") else "MLflowLogger needs mlflow: pip install mlflow-skinny"

    @classmethod
    def describe(cls, run_dir: Path) -> str:
        return "MLflow (MLflowLogger)"

    def log_scalars(self, step: int, scalars: dict[str, float]) -> None:
        from mlflow.entities import Metric

        metrics = [Metric(name.replace("/", "."), float(value), 0, step) for name, value in scalars.items()]
        self.client.log_batch(self.run_id, metrics=metrics)

    def log_images(self, step: int, name: str, grid) -> None:
        image = (grid.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
        self.client.log_image(self.run_id, image, artifact_file=f"images/{name}_step_{step:08d}.png")

    def close(self) -> None:
        self.client.set_terminated(self.run_id)


@hookimpl
def register_components(register):
    register("logger", MLflowLogger)
