"""``vaezoo benchmark``: JSON with the median step time, throughput and peak memory of each phase."""

from __future__ import annotations

import json

from conftest import REPO_ROOT

from vaezoo.cli import main

RECIPE = str(REPO_ROOT / "recipes" / "vae_mnist.yaml")
TINY = [
    "--model.init_args.latent_dim",
    "4",
    "--model.init_args.hidden_channels",
    "4",
    "--model.init_args.hidden_units",
    "16",
]


def test_benchmark_writes_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    args = ["benchmark", RECIPE, *TINY, "--bench.batch_size", "4", "--bench.repeats", "3", "--bench.warmup", "1",
            "--bench.k", "3", "--bench.isolate", "false", "--trainer.speed.channels_last", "true", "--bench.out", str(out)]  # fmt: skip
    assert main(args) == 0
    report = json.loads(out.read_text())
    assert report["levers"]["channels_last"] is True and report["model_parameters"] > 0
    for phase in ("train", "sample", "iw"):
        result = report[phase]
        assert len(result["times_s"]) == 3 and result["median_s"] > 0
        assert abs(result["images_per_s"] - 4 / result["median_s"]) < 1e-6 * result["images_per_s"]
        assert result["peak_rss_gib"] > 0.05
    assert report["iw"]["k"] == 3
    assert "images/s" in capsys.readouterr().out


def test_benchmark_rejects_unknown_phase(capsys):
    assert main(["benchmark", RECIPE, "--bench.phases", "[train,fly]"]) == 2
    assert "unknown phase 'fly'" in capsys.readouterr().err
