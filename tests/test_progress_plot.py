"""Progress bars (drawn on a terminal, silent in pipes and logs) and ``vaezoo plot RUN_DIR``."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import shutil
import subprocess
import sys

import pytest
import torch
from conftest import REPO_ROOT
from PIL import Image

import vaezoo
from vaezoo import hub
from vaezoo.cli import main
from vaezoo.errors import VaezooError
from vaezoo.plots import read_metrics

RECIPE = str(REPO_ROOT / "recipes" / "vae_mnist.yaml")
SMALL = ["--model.init_args.latent_dim", "4", "--model.init_args.hidden_channels", "4", "--model.init_args.hidden_units",
         "16", "--data.init_args.batch_size", "50", "--trainer.logging.progress", "false", "--trainer.evaluation.k", "0",
         "--trainer.logging.tensorboard", "false"]  # fmt: skip
BAR = "━"  # rich's bar character
MNIST_CKPT = REPO_ROOT / "tests" / "fixtures" / "nvae_official" / "mnist_small" / "checkpoint.pt"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    torch.manual_seed(0)
    model = vaezoo.create("vae-mnist", latent_dim=4, hidden_channels=4, hidden_units=16)
    return hub.save_pretrained(model, tmp_path_factory.mktemp("model") / "tiny")


@pytest.fixture(scope="module")
def nvae_dir(tmp_path_factory):
    """A model with BatchNorm layers, for the re-adjustment's bar."""
    torch.manual_seed(0)
    return hub.save_pretrained(vaezoo.create("test-nvae"), tmp_path_factory.mktemp("model") / "tiny-nvae")


def _run_on_terminal(args: list[str], env: dict) -> tuple[int, str]:
    """Run ``python -m vaezoo ARGS`` with stdout and stderr on a pseudo-terminal; returns (status, all output)."""
    master, slave = pty.openpty()
    process = subprocess.Popen([sys.executable, "-m", "vaezoo", *args], stdout=slave, stderr=slave, env=env)
    os.close(slave)
    chunks = []
    while True:
        ready, _, _ = select.select([master], [], [], 120)
        if not ready:
            process.kill()
            break
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the terminal closed with the process
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    text = b"".join(chunks).decode("utf-8", "replace")
    return process.wait(timeout=60), re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)  # without colours and cursor moves


def test_evaluate_draws_a_bar_on_a_terminal_and_nothing_in_a_pipe(model_dir):
    args = ["evaluate", f"local-dir:{model_dir}", "--data", "BundledMNIST", "--k", "3", "--batch_size", "250"]
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "120"}
    env.pop("VAEZOO_PROGRESS", None)
    status, terminal = _run_on_terminal(args, env)
    assert status == 0, terminal[-2000:]
    piped = subprocess.run(
        [sys.executable, "-m", "vaezoo", *args], env=env, capture_output=True, text=True, timeout=300
    )
    assert piped.returncode == 0, piped.stderr[-2000:]
    assert "test IW-NLL (k=3)" in terminal and "test IW-NLL (k=3)" in piped.stdout  # the same result either way
    assert BAR in terminal and "test IW-NLL, k=3 (samples)" in terminal and "1500/1500" in terminal
    assert BAR not in piped.stdout + piped.stderr and "(samples)" not in piped.stdout + piped.stderr
    assert piped.stderr == ""


@pytest.mark.parametrize("value", ["0", "off", "false"])
def test_vaezoo_progress_0_silences_the_bars_on_a_terminal(monkeypatch, value):
    """On a terminal the bars draw; ``VAEZOO_PROGRESS=0`` (or off, false) turns them off there too: nothing written."""
    import io

    from rich.console import Console

    from vaezoo.progress import new_progress, progress_enabled

    def drawn() -> str:
        out = io.StringIO()
        terminal = Console(file=out, force_terminal=True, width=100)
        with new_progress(console=terminal) as bars:
            task = bars.add_task("scoring", total=3)
            bars.advance(task, 3)
        return out.getvalue()

    monkeypatch.delenv("VAEZOO_PROGRESS", raising=False)
    assert BAR in drawn() and "3/3" in drawn()  # a terminal: drawn
    monkeypatch.setenv("VAEZOO_PROGRESS", value)
    assert not progress_enabled(Console(file=io.StringIO(), force_terminal=True)) and drawn() == ""


def test_bn_readjustment_convert_and_prepare_bars_follow_the_switch(nvae_dir, tmp_path, monkeypatch, capfd):
    from vaezoo_datasets.testing import write_image_files

    write_image_files(tmp_path / "images", 6, (8, 8))

    def commands(tag: str) -> None:
        out = str(tmp_path / "s.png")
        assert main(["sample", f"local-dir:{nvae_dir}", "--n", "4", "--readjust_bn", "3", "--out", out]) == 0
        assert main(["convert", "nvlabs", str(MNIST_CKPT), str(tmp_path / "converted")]) == 0
        prepare = ["data", "prepare", "image-folder", str(tmp_path / "images"), str(tmp_path / tag), "--test_size", "2"]
        assert main(prepare) == 0

    # in a pytest capture stderr is no terminal: silent; VAEZOO_PROGRESS=1 draws as on a terminal
    commands("quiet")
    quiet = capfd.readouterr()
    assert BAR not in quiet.err + quiet.out and quiet.err == ""
    monkeypatch.setenv("VAEZOO_PROGRESS", "1")
    commands("drawn")
    drawn = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", capfd.readouterr().err)
    assert "BN re-adjustment at temperature 1.0" in drawn and "3/3" in drawn
    assert "converted to" in drawn and BAR in drawn
    assert "image-folder train" in drawn and "4/4" in drawn and "image-folder test" in drawn and "2/2" in drawn


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("plot") / "run"
    args = ["fit", RECIPE, *SMALL, "--trainer.max_steps", "30", "--trainer.logging.log_every", "5"]
    assert main([*args, "--trainer.checkpoints.every", "10", "--run_dir", str(path)]) == 0
    return path


ALL_PANELS = [
    "Loss, reconstruction and KL",
    "KL per latent group",
    "Active units per latent group",
    "Learning rate",
    "KL coefficient",
]


def test_plot_a_real_run(run_dir, capsys):
    assert main(["plot", str(run_dir)]) == 0
    assert (
        capsys.readouterr().out.strip()
        == f"wrote {run_dir / 'curves.png'}: {', '.join(ALL_PANELS)} (6 logged steps, up to step 30)"
    )
    with Image.open(run_dir / "curves.png") as image:
        assert image.format == "PNG" and image.size == (1200, 1050)  # 2 columns x 3 rows of 600x350 panels
    assert not [p.name for p in run_dir.iterdir() if p.name.endswith(".tmp.png")]


def test_plot_shows_only_present_metrics_and_the_last_record_of_each_step(run_dir, tmp_path):
    from vaezoo.plots import plot_run

    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    # a resumed run that replayed step 10 with another loss, and a line still being written
    replayed = {**next(r for r in records if r["step"] == 10 and "loss" in r), "loss": 12345.0}
    with open(run / "metrics.jsonl", "a") as f:
        f.write(json.dumps(replayed) + "\n" + '{"step": 35, "loss": 4')
    kept = read_metrics(run / "metrics.jsonl")
    steps = [r["step"] for r in kept if "loss" in r]
    assert steps == [5, 10, 15, 20, 25, 30] and kept[[r.get("loss") for r in kept].index(12345.0)]["step"] == 10
    assert [r["step"] for r in kept if "active_units" in r] == [10, 20, 30]
    assert plot_run(run).panels == ALL_PANELS

    # an objective without per-group KL or coefficient, before any checkpoint: two panels, one row
    (run / "metrics.jsonl").write_text(
        "".join(json.dumps({"step": s, "loss": 10.0 / s, "lr": 1e-3}) + "\n" for s in (1, 2))
    )
    result = plot_run(run, tmp_path / "two.png")
    assert result.panels == ["Loss, reconstruction and KL", "Learning rate"]
    with Image.open(result.path) as image:
        assert image.size == (1200, 350)

    (run / "metrics.jsonl").write_text("")
    with pytest.raises(VaezooError, match="no step records to plot yet"):
        plot_run(run)
    with pytest.raises(VaezooError, match="has no metrics.jsonl"):
        plot_run(tmp_path)


def test_fit_bar_shows_blanks_until_the_first_logged_step(tmp_path, monkeypatch, capsys):
    """The bar of a real fit, rendered when its task is added and at each logged step: "…" for the loss, KL and
    speed until there is a value (not "nan"), then the values of metrics.jsonl's records."""
    from io import StringIO

    from rich.console import Console
    from rich.progress import Progress

    from vaezoo.training import reporting, trainer

    frames = []

    def text(bar) -> str:
        console = Console(file=StringIO(), width=200, color_system=None)
        console.print(bar.make_tasks_table(bar.tasks))
        return console.file.getvalue()

    def spy(enabled, console):
        bar = reporting.progress_bar(True, Console(file=StringIO()))
        add, update = bar.add_task, bar.update

        def add_task(*args, **fields):
            task = add(*args, **fields)
            frames.append(text(bar))
            return task

        def update_task(task, **fields):
            update(task, **fields)
            if "loss" in fields:
                frames.append(text(bar))

        bar.add_task, bar.update = add_task, update_task
        assert isinstance(bar, Progress)
        return bar

    monkeypatch.setattr(trainer, "progress_bar", spy)
    run = tmp_path / "run"
    assert (
        main(
            [
                "fit",
                RECIPE,
                *SMALL,
                "--trainer.max_steps",
                "4",
                "--trainer.logging.log_every",
                "2",
                "--run_dir",
                str(run),
            ]
        )
        == 0
    )
    capsys.readouterr()
    logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged] == [2, 4] and len(frames) == 3
    assert "0/4" in frames[0] and "loss … kl … … steps/s" in frames[0] and "nan" not in frames[0]
    for frame, record in zip(frames[1:], logged, strict=True):
        assert f"loss {record['loss']:.2f} kl {record['kl']:.2f} " in frame
        assert re.search(r"kl \S+ \d+\.\d steps/s", frame)
