"""``vaezoo fit`` end to end on the bundled digits: run directory, errors, overlays, exact resume."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
import yaml
from by_hand import evaluation_by_hand
from conftest import REPO_ROOT

import vaezoo
from vaezoo.cli import main
from vaezoo.training.checkpoint import list_checkpoints, load_checkpoint

RECIPE = str(REPO_ROOT / "recipes" / "vae_mnist.yaml")
TINY = ["--model.init_args.latent_dim", "4", "--model.init_args.hidden_channels", "4", "--model.init_args.hidden_units", "16",
        "--data.init_args.batch_size", "50", "--trainer.logging.progress", "false", "--trainer.evaluation.k", "5"]  # fmt: skip


def test_fit_fills_run_directory(tmp_path, capsys):
    run_dir = tmp_path / "run"
    code = main(["fit", RECIPE, *TINY, "--trainer.max_steps", "12", "--trainer.logging.log_every", "4",
                 "--trainer.checkpoints.every", "5", "--trainer.checkpoints.keep_last", "2", "--run_dir", str(run_dir)])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    assert "test ELBO" in out and "nats" in out and "IW-NLL (k=5)" in out
    recipe = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert recipe["trainer"]["max_steps"] == 12 and recipe["model"]["init_args"]["latent_dim"] == 4
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    records = [r for r in lines if "loss" in r]
    assert [r["step"] for r in records] == [4, 8, 12]
    units = [r for r in lines if "active_units" in r]
    assert [r["step"] for r in units] == [5, 10] and 0 <= units[-1]["active_units"][0] <= 4
    for key in ("loss", "recon", "kl", "kl_per_group", "grad_norm", "lr", "skipped_steps", "images_per_s"):
        assert key in records[-1]
    steps = [s for s, _ in list_checkpoints(run_dir / "checkpoints")]
    assert steps == [10, 12]  # kept the last two
    assert (run_dir / "samples.png").stat().st_size > 0 and (run_dir / "reconstructions.png").stat().st_size > 0
    assert (run_dir / "model" / "model.safetensors").is_file() and (run_dir / "model" / "config.json").is_file()
    from PIL import Image

    with Image.open(run_dir / "curves.png") as curves:  # the end of fit plots the training curves
        assert curves.format == "PNG" and min(curves.size) > 100
    assert "training curves:" in out and "KL per latent group" in out
    results = json.loads((run_dir / "results.json").read_text())
    assert results["unit"] == "nats" and results["k"] == 5 and results["num_examples"] == 500
    # the values: the documented evaluation protocol computed by hand on the saved model, one pass per sample
    dataset = vaezoo.build(recipe["data"], kind="dataset").test_dataset()
    elbo, iw_nll = evaluation_by_hand(vaezoo.load(run_dir / "model"), dataset, k=5, seed=0)
    assert results["elbo_nats"] == pytest.approx(elbo, rel=1e-6)
    assert results["iw_nll_nats"] == pytest.approx(iw_nll, rel=1e-6)


def test_recipe_overlays_compose_left_to_right(tmp_path, capsys):
    first, second = tmp_path / "a.yaml", tmp_path / "b.yaml"
    first.write_text("trainer:\n  max_steps: 7\n  optimizer: {lr: 0.5}\n")
    second.write_text("trainer:\n  max_steps: 9\n")
    assert (
        main(
            [
                "fit",
                RECIPE,
                "--config",
                str(first),
                "--config",
                str(second),
                "--trainer.optimizer.lr",
                "0.25",
                "--print_config",
            ]
        )
        == 0
    )
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["trainer"]["max_steps"] == 9 and printed["trainer"]["optimizer"]["lr"] == 0.25
    assert printed["objective"]["class_path"].endswith("ELBO")


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--trainer.max_stepz", "3"], "max_stepz"),
        (["--trainer.max_steps", "many"], "trainer.max_steps: expected int, got 'many'"),
        (["--model.init_args.prior", "NoSuchPrior"], "model.init_args.prior: unknown prior 'NoSuchPrior'"),
        (["--objective", "ELBOO"], "did you mean ELBO"),
        (["--data.init_args.batch_size", "0"], "data.batch_size must be positive"),
        (["--model.init_args.image_shape", "[1, 30, 30]"], "divisible by 4"),
        (
            ["--model.init_args.image_shape", "[1, 32, 32]"],
            "the model takes 1x32x32 images, BundledMNIST gives 1x28x28; set pad: 2",
        ),
    ],
)
def test_bad_recipe_is_one_line_exit_2(tmp_path, capsys, args, expected):
    run_dir = tmp_path / "run"
    code = main(["fit", RECIPE, *TINY, "--trainer.max_steps", "2", "--run_dir", str(run_dir), *args])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert expected in err
    assert not list_checkpoints(run_dir / "checkpoints")


def test_bad_class_path_in_recipe_file_is_refused(tmp_path, capsys):
    overlay = tmp_path / "evil.yaml"
    overlay.write_text("model:\n  init_args:\n    prior:\n      class_path: os.system\n")
    assert main(["fit", RECIPE, "--config", str(overlay), "--run_dir", str(tmp_path / "r")]) == 2
    assert "unknown prior 'os.system'" in capsys.readouterr().err


def test_python_m_vaezoo_is_the_same_program(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "vaezoo", "list", "dataset"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0 and "BundledMNIST" in result.stdout
    result = subprocess.run(
        [sys.executable, "-m", "vaezoo", "fit", "missing.yaml"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert result.returncode == 2 and "missing.yaml" in result.stderr and "Traceback" not in result.stderr


#: an objective with state (gradient skipping counts skipped updates and keeps the last norm) around the recipe's
SKIPPING = json.dumps({"class_path": "GradientSkipping", "init_args": {"max_grad_norm": 258.0, "objective": {
    "class_path": "ELBO", "init_args": {"kl_warmup_portion": 0.15}}}})  # fmt: skip


def test_resume_is_bitwise_exact(tmp_path, capsys):
    """With state in every part a checkpoint holds: Adamax moments, an EMA of the weights, the fp16 gradient scaler
    (scale and growth tracker), the objective's buffers (skipped updates, last gradient norm), both random streams."""
    common = [*TINY, "--trainer.evaluation.k", "0", "--trainer.checkpoints.every", "4", "--trainer.checkpoints.keep_last", "5",
              "--trainer.optimizer.ema_decay", "0.9", "--objective", SKIPPING]  # fmt: skip
    full, part = tmp_path / "full", tmp_path / "part"
    assert main(["fit", RECIPE, *common, "--trainer.max_steps", "10", "--run_dir", str(full)]) == 0
    # the same run, stopped at step 4 (as if killed after the checkpoint), then resumed to 10
    assert (
        main(
            [
                "fit",
                RECIPE,
                *common,
                "--trainer.max_steps",
                "10",
                "--run_dir",
                str(part),
                "--trainer.checkpoints.every",
                "4",
            ]
        )
        == 0
    )
    for _, path in list_checkpoints(part / "checkpoints")[1:]:
        path.unlink()  # keep only step 4
    assert [s for s, _ in list_checkpoints(part / "checkpoints")] == [4]
    assert main(["fit", RECIPE, *common, "--trainer.max_steps", "10", "--run_dir", str(part), "--resume", "true"]) == 0
    capsys.readouterr()
    a = load_checkpoint(list_checkpoints(full / "checkpoints")[-1][1])
    b = load_checkpoint(list_checkpoints(part / "checkpoints")[-1][1])
    assert a["step"] == b["step"] == 10
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    assert torch.equal(a["rng"]["torch"][0], b["rng"]["torch"][0])
    # everything a checkpoint holds, not only the weights: optimiser moments and step counts, scaler, EMA, objective
    # state, both random streams and the loop's counters
    assert a["optimizer"]["state"] and a["optimizer"]["state"].keys() == b["optimizer"]["state"].keys()
    assert a["ema"] and a["objective"]["skipped_updates"] > 0 and a["objective"]["last_grad_norm"] > 0
    # (but the provenance record, which says which command wrote each checkpoint, and when)
    assert a["provenance"]["command"] != b["provenance"]["command"] and b["provenance"]["resumed_from_step"] == 4
    earlier = b["provenance"]["earlier"]  # the interrupted invocation's record, read from provenance.json
    assert len(earlier) == 1 and earlier[0]["command"][-2:] == ["--trainer.checkpoints.every", "4"]
    _assert_same_state({**a, "provenance": None}, {**b, "provenance": None})


def _assert_same_state(a, b, where="checkpoint"):
    """Equal nested containers, tensors bit for bit."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for key in a:
            _assert_same_state(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_same_state(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def test_refuses_to_overwrite_a_run(tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert (
        main(
            ["fit", RECIPE, *TINY, "--trainer.max_steps", "2", "--trainer.evaluation.k", "0", "--run_dir", str(run_dir)]
        )
        == 0
    )
    before = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert main(["fit", RECIPE, *TINY, "--trainer.max_steps", "2", "--run_dir", str(run_dir)]) == 2
    assert "already has checkpoints" in capsys.readouterr().err
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == before
