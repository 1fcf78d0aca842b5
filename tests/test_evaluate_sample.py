"""``vaezoo evaluate`` and ``vaezoo sample``, and the batched importance-weighted estimate."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from by_hand import evaluation_by_hand, iw_log_likelihoods
from conftest import REPO_ROOT
from PIL import Image
from vaezoo_datasets import BundledMNIST

import vaezoo
from vaezoo.cli import main
from vaezoo.evaluation.metrics import iw_log_likelihood

RECIPE = str(REPO_ROOT / "recipes" / "vae_mnist.yaml")
TINY = ["--model.init_args.latent_dim", "4", "--model.init_args.hidden_channels", "4", "--model.init_args.hidden_units", "16",
        "--data.init_args.batch_size", "50", "--trainer.logging.progress", "false", "--trainer.evaluation.k", "0", "--trainer.logging.tensorboard", "false"]  # fmt: skip


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("run") / "run"
    assert main(["fit", RECIPE, *TINY, "--trainer.max_steps", "20", "--run_dir", str(path)]) == 0
    return path


def test_batched_iw_equals_sequential():
    torch.manual_seed(0)
    model = vaezoo.create("vae-mnist", latent_dim=4, hidden_channels=4, hidden_units=16).eval()
    x = BundledMNIST().test_dataset().tensors[0][:6]
    with torch.no_grad():
        torch.manual_seed(3)
        sequential = iw_log_likelihood(model, x, k=10, max_batch=6)  # one importance sample per pass
        torch.manual_seed(3)
        batched = iw_log_likelihood(model, x, k=10, max_batch=60)  # all ten in one pass
        torch.manual_seed(3)
        chunked = iw_log_likelihood(model, x, k=10, max_batch=24)  # chunks of 4, 4, 2
    torch.testing.assert_close(batched, sequential, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(chunked, sequential, rtol=1e-5, atol=1e-4)
    # ... and all three are the value: log (1/k sum_j p(x, z_j) / q(z_j | x)), one pass per draw of the same noise
    torch.manual_seed(3)
    draws = [[torch.randn(s) for s in model.latent_shapes(6)] for _ in range(10)]
    torch.testing.assert_close(sequential.double(), iw_log_likelihoods(model, x, draws), rtol=0, atol=1e-4)


def test_evaluate_run_matches_fit_and_labels_protocol(run_dir, capsys, tmp_path):
    fit_results = json.loads((run_dir / "results.json").read_text())
    out = tmp_path / "eval.json"
    assert main(["evaluate", str(run_dir), "--k", "8", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "test ELBO" in printed and "IW-NLL (k=8)" in printed and "nats" in printed
    assert "fixed-seed binarised test" in printed and "k=8 importance samples, batched" in printed
    result = json.loads(out.read_text())
    # same seed, same ELBO (evaluate runs channels_last by default: float rounding only)
    assert result["elbo_nats"] == pytest.approx(fit_results["elbo_nats"], rel=1e-7)
    assert "rows per forward pass" in printed
    assert main(["evaluate", str(run_dir), "--k", "0", "--channels_last", "false", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["elbo_nats"] == pytest.approx(fit_results["elbo_nats"], abs=1e-9)
    assert main(["evaluate", str(run_dir), "--max_batch", "0"]) == 2
    assert "--max_batch must be positive" in capsys.readouterr().err
    assert result["k"] == 8 and result["unit"] == "nats" and result["num_examples"] == 500
    # the values: the documented protocol computed by hand, one forward pass per importance sample
    recipe = yaml.safe_load((run_dir / "config.yaml").read_text())
    dataset = vaezoo.build(recipe["data"], kind="dataset").test_dataset()
    elbo, iw_nll = evaluation_by_hand(vaezoo.load(run_dir / "model"), dataset, k=8, seed=0)
    assert result["elbo_nats"] == pytest.approx(elbo, rel=1e-6)
    assert result["iw_nll_nats"] == pytest.approx(iw_nll, rel=1e-6)


def test_evaluate_model_folder_needs_data(run_dir, capsys):
    assert main(["evaluate", str(run_dir / "model"), "--k", "0"]) == 2
    assert "pass --data" in capsys.readouterr().err
    assert main(["evaluate", str(run_dir / "model"), "--k", "0", "--data", "BundledMNIST"]) == 0


def test_sample_writes_grid(run_dir, tmp_path, capsys):
    out = tmp_path / "grid.png"
    assert main(["sample", str(run_dir), "--n", "9", "--temperature", "0.7", "--out", str(out)]) == 0
    image = Image.open(out)
    assert image.size[0] == image.size[1] > 28 * 3
    assert main(["sample", str(run_dir), "--n", "0", "--out", str(out)]) == 2
    assert main(["sample", str(run_dir), "--temperature", "-1", "--out", str(out)]) == 2
    assert main(["sample", str(run_dir), "--out", str(tmp_path / "x.txt")]) == 2


def test_python_api_reconstruct_interpolate(run_dir):
    model = vaezoo.load(f"local-dir:{run_dir / 'model'}")
    assert not model.training
    x = BundledMNIST().test_dataset().tensors[0][:2]
    with torch.no_grad():
        assert model.reconstruct(x).shape == x.shape
        frames = model.interpolate(x[0], x[1], steps=5)
        latents = model.encode(x)
        ends = model.decode(latents)
    assert frames.shape == (5, 1, 28, 28)
    torch.testing.assert_close(frames[0], ends[0])
    torch.testing.assert_close(frames[-1], ends[1])
    assert float(frames.min()) >= 0 and float(frames.max()) <= 1


def test_evaluation_follows_the_model_memory_format_and_device():
    from vaezoo.evaluation.metrics import default_max_batch, is_channels_last

    model = vaezoo.create("test-nvae")
    assert not is_channels_last(model)
    assert is_channels_last(model.to(memory_format=torch.channels_last))
    assert default_max_batch(torch.device("cpu")) == 200 and default_max_batch(torch.device("cuda")) == 2000


def test_evaluate_lowers_k_to_the_models_limit_with_a_note(tmp_path, capsys, monkeypatch):
    """A model whose evaluation protocol caps k (``max_k``, e.g. an ODE per importance sample) is evaluated at that k,
    with a note naming both values and the model's reason; a smaller --k is kept as given."""
    from vaezoo_baselines import ConvVAE

    folder = vaezoo.create("vae-mnist", latent_dim=2, hidden_channels=2, hidden_units=8).save_pretrained(tmp_path / "m")
    monkeypatch.setattr(ConvVAE, "evaluation_protocol", lambda self: {"max_k": 3, "why": "each sample is costly"})
    data = json.dumps({"class_path": "RandomImages", "init_args": {"image_shape": [1, 28, 28], "num_examples": 4,
                                                                   "batch_size": 4, "binary": True}})  # fmt: skip
    out = tmp_path / "eval.json"
    assert main(["evaluate", str(folder), "--k", "50", "--data", data, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "note: --k 50 lowered to 3 for this model: each sample is costly" in printed
    assert "IW-NLL (k=3)" in printed and json.loads(out.read_text())["k"] == 3
    assert main(["evaluate", str(folder), "--k", "2", "--data", data, "--out", str(out)]) == 0
    assert "lowered" not in capsys.readouterr().out and json.loads(out.read_text())["k"] == 2
