"""Loggers (the ``logger`` component kind) and the validation during training.

- Every ``trainer.evaluation.val_every`` steps rank 0 writes the test ELBO of a fixed subset to metrics.jsonl: the
  value equals an evaluation of the checkpoint of that step on the same examples with the same seed, made here
  independently; with an EMA it is the averaged weights'; training is the same with or without validation.
- The TensorBoard logger writes the numbers metrics.jsonl holds (the KL per group as ``kl/group_i``, the learning
  rate, the KL coefficient, the validation) and the image grids, read back with tensorboard's own reader.
- The example plugin ``examples/plugin-csv-logger``, found as an installed distribution, is listed, passes
  vaezoo.testing, and a run naming it writes each metric's rows, dropping the replayed ones on resume.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO_ROOT, fake_distribution
from PIL import Image
from trainers import make_trainer
from vaezoo_datasets import RandomImages

from vaezoo.components import ELBO
from vaezoo.evaluation import evaluate
from vaezoo.models import HierarchicalVAE
from vaezoo.plots import plot_run, read_metrics
from vaezoo.testing.doubles import hierarchical_arguments
from vaezoo.training.checkpoint import checkpoint_path, load_checkpoint
from vaezoo.training.reporting import Loggers

EXAMPLE = REPO_ROOT / "examples" / "plugin-csv-logger"
SEED, VAL_EXAMPLES, VAL_BATCH = 5, 24, 10


class ModeRecordingELBO(ELBO):
    """The ELBO, remembering whether the model was in train mode at each training step."""

    def __init__(self) -> None:
        super().__init__()
        self.modes: list[bool] = []

    def forward(self, model, x, step, noise=None):
        self.modes.append(model.training)
        return super().forward(model, x, step, noise)


def _model() -> HierarchicalVAE:
    torch.manual_seed(0)
    return HierarchicalVAE(**hierarchical_arguments())  # 3 latent groups on 1x8x8 images


def _data() -> RandomImages:
    return RandomImages(image_shape=(1, 8, 8), num_examples=40, batch_size=8, binary=True)


def _fit(run_dir: Path, **settings):
    objective = ModeRecordingELBO()
    defaults = dict(max_steps=6, lr=1e-2, progress=False, log_every=1, checkpoint_every=2, keep_last=10, eval_k=0,
                    tensorboard=False, device="cpu")  # fmt: skip
    trainer = make_trainer(**{**defaults, **settings})
    summary = trainer.fit(_model(), objective, _data(), run_dir, seed=SEED)
    return summary, objective, [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _independent_validation(state: dict) -> float:
    """The test ELBO of the first VAL_EXAMPLES test images, of a fresh model given ``state``."""
    model = HierarchicalVAE(**hierarchical_arguments())
    model.load_state_dict(state)
    subset = torch.utils.data.Subset(_data().test_dataset(), range(VAL_EXAMPLES))
    return evaluate(model, subset, k=0, batch_size=VAL_BATCH, seed=SEED).elbo_nats


VALIDATION = {"evaluation": {"val_every": 2, "val_examples": VAL_EXAMPLES, "batch_size": VAL_BATCH}}


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    """The same run without validation, loggers or images."""
    run_dir = tmp_path_factory.mktemp("reference")
    _fit(run_dir)
    return run_dir


@pytest.fixture(scope="module")
def logged_run(tmp_path_factory):
    """A 6-step run validated every 2 steps, with TensorBoard and image grids every 2 steps (PNGs at the same steps)."""
    if not _tensorboard_installed():
        pytest.fail('the test environment installs tensorboard (pip install -e ".[test]")')
    run_dir = tmp_path_factory.mktemp("logged")
    logging = {"tensorboard": True, "image_every": 2, "sample_every": 2, "num_samples": 4}
    summary, objective, records = _fit(run_dir, logging=logging, **VALIDATION)
    return run_dir, summary, objective, records


def _tensorboard_installed() -> bool:
    from vaezoo.loggers import tensorboard_installed

    return tensorboard_installed()


def test_validation_equals_an_independent_evaluation_of_each_checkpoint(logged_run, reference_run):
    run_dir, summary, objective, records = logged_run
    validations = [r for r in records if "val_elbo_nats" in r]
    assert [r["step"] for r in validations] == [2, 4, 6]
    for record in validations:
        state = load_checkpoint(checkpoint_path(run_dir / "checkpoints", record["step"]))["model"]
        assert record["val_elbo_nats"] == _independent_validation(state), record["step"]
        assert record["val_examples"] == VAL_EXAMPLES and record["val_unit"] == "nats"
        assert math.isclose(record["val_nelbo_bpd"], -record["val_elbo_nats"] / (64 * math.log(2)), rel_tol=1e-12)
    values = [r["val_elbo_nats"] for r in validations]
    assert len(set(values)) == 3  # the model changes between validations: three different values
    best = max(validations, key=lambda r: (r["val_elbo_nats"], -r["step"]))
    assert summary["validation"] == {
        "metric": "val_elbo_nats",
        "examples": VAL_EXAMPLES,
        "last": {"step": 6, "value": values[-1]},
        "best": {"step": best["step"], "value": best["val_elbo_nats"]},
        "seed": SEED,
        "weights": "model",
    }
    # training is untouched: every step in train mode, and the weights bitwise those of the run without validation
    assert objective.modes == [True] * 6
    trained = load_checkpoint(checkpoint_path(run_dir / "checkpoints", 6))["model"]
    reference = load_checkpoint(checkpoint_path(reference_run / "checkpoints", 6))["model"]
    assert all(torch.equal(trained[key], reference[key]) for key in reference)
    # the curves: a validation panel, and the step records of the validated steps are still there
    assert "Validation ELBO (nats), 24 test examples" in plot_run(run_dir).panels
    kept = read_metrics(run_dir / "metrics.jsonl")
    assert sum(1 for r in kept if r["step"] == 6 and "loss" in r) == 1
    assert sum(1 for r in kept if r["step"] == 6 and "val_elbo_nats" in r) == 1


def test_validation_with_an_ema_measures_the_averaged_weights_and_leaves_the_model_s(tmp_path, reference_run):
    summary, _, records = _fit(tmp_path, ema_decay=0.5, **VALIDATION)
    assert summary["validation"]["weights"] == "ema"
    for record in (r for r in records if "val_elbo_nats" in r):
        checkpoint = load_checkpoint(checkpoint_path(tmp_path / "checkpoints", record["step"]))
        assert record["val_elbo_nats"] == _independent_validation({**checkpoint["model"], **checkpoint["ema"]})
        assert record["val_elbo_nats"] != _independent_validation(checkpoint["model"])
    # the model's own weights were put back after each validation: they trained as without an EMA
    trained = load_checkpoint(checkpoint_path(tmp_path / "checkpoints", 6))["model"]
    reference = load_checkpoint(checkpoint_path(reference_run / "checkpoints", 6))["model"]
    assert all(torch.equal(trained[key], reference[key]) for key in reference)


def _events(directory: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(directory), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    return events


def _scalars(events, tag: str) -> dict[int, float]:
    return {event.step: event.value for event in events.Scalars(tag)}


def test_tensorboard_holds_the_records_numbers_per_group_and_the_image_grids(logged_run):
    run_dir, _, _, records = logged_run
    events = _events(run_dir / "tensorboard")
    steps = [r for r in records if "loss" in r]
    assert len(steps) == 6 and all(len(r["kl_per_group"]) == 3 for r in steps)
    for group in range(3):  # float32 in the event file
        expected = {r["step"]: float(np.float32(r["kl_per_group"][group])) for r in steps}
        assert _scalars(events, f"kl/group_{group}") == expected, group
    for key in ("lr", "kl_coeff", "loss"):
        assert _scalars(events, key) == {r["step"]: float(np.float32(r[key])) for r in steps}, key
    validations = {r["step"]: float(np.float32(r["val_elbo_nats"])) for r in records if "val_elbo_nats" in r}
    assert _scalars(events, "val_elbo_nats") == validations
    # grids every 2 steps: 4 samples of 8x8 two to a row, 8 test images over their reconstructions, 2-pixel gaps
    for tag, (height, width) in {
        "samples": (2 + 2 * 10, 2 + 2 * 10),
        "reconstructions": (2 + 2 * 10, 2 + 8 * 10),
    }.items():
        images = events.Images(tag)
        assert [image.step for image in images] == [2, 4, 6], tag
        for image in images:
            decoded = np.asarray(Image.open(io.BytesIO(image.encoded_image_string)).convert("RGB"), dtype=np.int16)
            assert decoded.shape == (height, width, 3), tag
            # the PNG the run wrote at that step holds the same grid (8 bits each; tensorboard truncates, PNGs round)
            png = np.asarray(Image.open(run_dir / f"{tag}_step_{image.step:08d}.png").convert("RGB"), dtype=np.int16)
            assert np.abs(decoded - png).max() <= 1, (tag, image.step)


def test_tensorboard_drops_the_events_of_replayed_steps_after_a_rewind(tmp_path):
    from vaezoo.loggers import TensorBoard

    logger = TensorBoard(tmp_path)
    for step in (1, 2, 3, 4):
        logger.log_scalars(step, {"loss": float(step)})
    logger.rewind(2)  # resumed from the checkpoint of step 2: steps 3 and 4 are logged again
    for step in (3, 4):
        logger.log_scalars(step, {"loss": 10.0 * step})
    logger.close()
    events = _events(tmp_path / "tensorboard")
    assert [(e.step, e.value) for e in events.Scalars("loss")] == [(1, 1.0), (2, 2.0), (3, 30.0), (4, 40.0)]


class _Recording:
    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def log_scalars(self, step, scalars):
        self.calls.append((step, scalars))

    def close(self):
        self.calls.append(("closed",))


class _Failing(_Recording):
    def log_scalars(self, step, scalars):
        raise OSError("disk full")


def test_a_failing_logger_is_dropped_with_one_line_and_the_others_go_on():
    from rich.console import Console

    console = Console(file=io.StringIO(), width=300)
    good, bad = _Recording(), _Failing()
    loggers = Loggers([bad, good], console)
    record = {"step": 3, "loss": 2.5, "kl_vals": [0.5, 0.25], "val_unit": "nats", "event": "x", "flag": True}
    loggers.record(record)
    loggers.record({**record, "step": 4})
    assert bad.calls == [("closed",)]  # closed once, when dropped, and never called again
    expected = {"loss": 2.5, "kl/group_0": 0.5, "kl/group_1": 0.25}
    assert good.calls == [(3, expected), (4, expected)]
    assert console.file.getvalue() == "warning: logger _Failing stopped: OSError: disk full\n"
    # one that cannot start is left out the same way
    from vaezoo.training.reporting import LoggerSpec

    class _Unreachable:
        def __init__(self, run_dir):
            raise ConnectionError("no answer from the tracker")

    started = Loggers.open(
        [LoggerSpec(_Unreachable, {}, "x"), LoggerSpec(lambda run_dir: good, {}, "y")], Path("."), console
    )
    assert started.loggers == [good]
    assert console.file.getvalue().splitlines()[-1] == (
        "warning: logger _Unreachable could not start: ConnectionError: no answer from the tracker"
    )


# -- the example plugin ------------------------------------------------------------------------------------------
SCRIPT = """
import sys
from vaezoo import get_registry
from vaezoo.cli import main
from vaezoo.testing import check_entry
from vaezoo.training.checkpoint import checkpoint_path

check_entry(get_registry().get("logger", "CSVLogger"))
assert main(["list", "logger"]) == 0
run, fit = sys.argv[1], sys.argv[2:]
assert main([*fit, "--run_dir", run]) == 0
checkpoint_path(run + "/checkpoints", 4).unlink()  # as if stopped after the checkpoint of step 2
assert main([*fit, "--run_dir", run, "--resume", "true"]) == 0
"""


def test_the_example_csv_logger_plugin_writes_each_metric_and_forgets_replayed_steps(tmp_path):
    (tmp_path / "site").mkdir()
    site = fake_distribution(tmp_path / "site", "vaezoo-csv-logger", "0.1.0", {"csvlog": "vaezoo_csv_logger"})
    env = {k: v for k, v in os.environ.items() if not k.startswith("VAEZOO_")}
    # one thread: the convolutions are tiny, and two threads on shared cores wait for each other
    env.update(PYTHONPATH=os.pathsep.join([str(site), str(EXAMPLE), env.get("PYTHONPATH", "")]), COLUMNS="200",
               VAEZOO_PROGRESS="0", OMP_NUM_THREADS="1")  # fmt: skip
    run = tmp_path / "run"
    fit = ["fit", str(REPO_ROOT / "recipes" / "vae_mnist.yaml"), "--config", str(EXAMPLE / "overlay.yaml"),
           "--model.init_args.latent_dim", "4", "--model.init_args.hidden_channels", "4",
           "--model.init_args.hidden_units", "16", "--data.init_args.batch_size", "16",
           "--data.init_args.test_size", "60", "--trainer.max_steps", "4", "--trainer.logging.log_every", "1",
           "--trainer.logging.image_every", "2", "--trainer.logging.num_samples", "4",
           "--trainer.logging.tensorboard", "false", "--trainer.logging.progress", "false",
           "--trainer.checkpoints.every", "2", "--trainer.evaluation.k", "0",
           "--trainer.evaluation.val_every", "2", "--trainer.evaluation.val_examples", "50"]  # fmt: skip
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(run), *fit], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    listed = [line.split("│")[1:4] for line in done.stdout.splitlines() if "│ CSVLogger" in line]
    assert [[cell.strip() for cell in row] for row in listed] == [["logger", "CSVLogger", "csvlog"]], done.stdout
    assert "logs: metrics.jsonl and one CSV file per metric (CSVLogger)" in done.stdout

    records = read_metrics(run / "metrics.jsonl")
    steps = [r for r in records if "loss" in r]
    assert [r["step"] for r in steps] == [1, 2, 3, 4]
    # results.json: the last and the best validation, over both invocations of the resumed run
    validations = [r for r in records if "val_elbo_nats" in r]
    assert [r["step"] for r in validations] == [2, 4] and all(r["val_examples"] == 50 for r in validations)
    best = max(validations, key=lambda r: (r["val_elbo_nats"], -r["step"]))
    summary = json.loads((run / "results.json").read_text())["validation"]
    assert summary["last"] == {"step": 4, "value": validations[-1]["val_elbo_nats"]}
    assert summary["best"] == {"step": best["step"], "value": best["val_elbo_nats"]}
    assert summary["metric"] == "val_elbo_nats" and summary["examples"] == 50

    def rows(name: str) -> list[tuple[int, float]]:
        with (run / "csv" / f"{name}.csv").open(newline="") as handle:
            header, *body = list(csv.reader(handle))
        assert header == ["step", "value"]
        return [(int(step), float(value)) for step, value in body]

    # steps 3 and 4 ran twice (before the stop and after the resume): each row is there once, as the record holds it
    assert rows("loss") == [(r["step"], r["loss"]) for r in steps]
    assert rows("kl/group_0") == [(r["step"], r["kl_per_group"][0]) for r in steps]
    assert rows("lr") == [(r["step"], r["lr"]) for r in steps]
    assert rows("val_elbo_nats") == [(r["step"], r["val_elbo_nats"]) for r in validations]
    images = sorted(p.name for p in (run / "csv" / "images").iterdir())
    assert images == [f"{name}_step_{s:08d}.png" for name in ("reconstructions", "samples") for s in (2, 4)]
    assert Image.open(run / "csv" / "images" / "samples_step_00000004.png").size == (2 + 2 * 30, 2 + 2 * 30)


def test_the_example_mlflow_logger_plugin_sends_each_metric_at_its_step(tmp_path, monkeypatch, capsys):
    """examples/plugin-mlflow-logger: MLflow's client calls as a logger. Read back from an MLflow file store, each metric
    has the values metrics.jsonl records at their steps, the image grids are artifacts, and the run is finished."""
    import importlib

    from mlflow import MlflowClient

    from vaezoo.cli import main
    from vaezoo.plugins import plugin

    monkeypatch.syspath_prepend(str(REPO_ROOT / "examples" / "plugin-mlflow-logger"))
    store = f"file://{tmp_path / 'mlruns'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow's local store, for this test
    run = tmp_path / "run"
    with plugin(importlib.import_module("vaezoo_mlflow_logger"), name="mlflowlog"):
        code = main(["fit", str(REPO_ROOT / "recipes" / "vae_mnist.yaml"), "--model.init_args.latent_dim", "4",
                     "--model.init_args.hidden_channels", "4", "--model.init_args.hidden_units", "16",
                     "--data.init_args.batch_size", "16", "--data.init_args.test_size", "60", "--trainer.max_steps", "4",
                     "--trainer.logging.log_every", "1", "--trainer.logging.image_every", "2",
                     "--trainer.logging.num_samples", "4", "--trainer.logging.tensorboard", "false",
                     "--trainer.logging.progress", "false", "--trainer.evaluation.k", "0",
                     "--trainer.logging.loggers", "[MLflowLogger]", "--run_dir", str(run)])  # fmt: skip
    assert code == 0 and "logs: metrics.jsonl and MLflow (MLflowLogger)" in capsys.readouterr().out
    client = MlflowClient(tracking_uri=store)
    run_id = (run / "mlflow_run_id.txt").read_text().strip()
    steps = [r for r in read_metrics(run / "metrics.jsonl") if "loss" in r]

    def history(name: str) -> list[tuple[int, float]]:
        return sorted((m.step, m.value) for m in client.get_metric_history(run_id, name))

    assert history("loss") == [(r["step"], r["loss"]) for r in steps] and len(steps) == 4
    assert history("kl.group_0") == [(r["step"], r["kl_per_group"][0]) for r in steps]
    assert history("lr") == [(r["step"], r["lr"]) for r in steps]
    images = sorted(a.path for a in client.list_artifacts(run_id, "images"))
    assert images == [f"images/{name}_step_{s:08d}.png" for name in ("reconstructions", "samples") for s in (2, 4)]
    assert client.get_run(run_id).info.status == "FINISHED"
