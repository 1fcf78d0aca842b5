"""Every output of a run carries one provenance record (vaezoo.provenance), checked against values computed here:
git's own answers for a temporary repository, importlib.metadata's versions, the sha256 of the written recipe."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from datetime import UTC, datetime
from importlib import metadata

import pytest
import torch
from conftest import REPO_ROOT

from vaezoo.cli import main
from vaezoo.hub import load
from vaezoo.provenance import git_state, provenance
from vaezoo.training.checkpoint import list_checkpoints, load_checkpoint

TINY = ["--model.init_args.latent_dim", "4", "--model.init_args.hidden_channels", "4", "--model.init_args.hidden_units", "16",
        "--data.init_args.batch_size", "50", "--data.init_args.test_size", "100", "--trainer.logging.progress", "false"]  # fmt: skip


def _git(repo, *args) -> str:
    command = ["git", "-c", "user.name=t", "-c", "user.email=t@example.org", "-C", str(repo), *args]
    return subprocess.run(command, check=True, capture_output=True, text=True, timeout=30).stdout.strip()


@pytest.fixture
def recipe_repo(tmp_path):
    """A git repository holding the quickstart recipe and a README, committed."""
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    shutil.copy(REPO_ROOT / "recipes" / "vae_mnist.yaml", repo / "vae_mnist.yaml")
    (repo / "README.md").write_text("recipes\n")
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "recipes")
    return repo


def test_git_state_is_gits_commit_and_flips_dirty_on_a_tracked_change(recipe_repo, tmp_path, monkeypatch):
    head = _git(recipe_repo, "rev-parse", "HEAD")
    state = git_state(recipe_repo)
    assert state == {"commit": head, "dirty": False, "root": str(recipe_repo.resolve())}
    (recipe_repo / "notes.txt").write_text("untracked\n")  # an untracked file is not a change of the commit
    assert git_state(recipe_repo)["dirty"] is False
    (recipe_repo / "README.md").write_text("recipes, edited\n")
    assert git_state(recipe_repo) == {"commit": head, "dirty": True, "root": str(recipe_repo.resolve())}
    _git(recipe_repo, "commit", "-q", "-am", "edit")
    assert git_state(recipe_repo) == {"commit": _git(recipe_repo, "rev-parse", "HEAD"), "dirty": False,
                                      "root": str(recipe_repo.resolve())}  # fmt: skip
    outside = tmp_path / "plain"
    outside.mkdir()
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))  # no repository above it either
    assert git_state(outside) is None
    assert provenance(recipe_file=outside / "r.yaml")["git"] is None
    monkeypatch.setenv("PATH", str(outside))  # no git at all
    assert git_state(recipe_repo) is None


def test_every_output_of_fit_carries_one_record(recipe_repo, tmp_path, capsys):
    run_dir = tmp_path / "run"
    recipe = str(recipe_repo / "vae_mnist.yaml")
    args = ["fit", recipe, *TINY, "--trainer.max_steps", "4", "--trainer.checkpoints.every", "2",
            "--trainer.checkpoints.keep_last", "5", "--trainer.evaluation.k", "2", "--run_dir", str(run_dir)]  # fmt: skip
    before = datetime.now(UTC)
    assert main(args) == 0
    after = datetime.now(UTC)
    capsys.readouterr()
    record = json.loads((run_dir / "provenance.json").read_text())

    assert record["git"] == {"commit": _git(recipe_repo, "rev-parse", "HEAD"), "dirty": False,
                             "root": str(recipe_repo.resolve())}  # fmt: skip
    assert record["recipe_file"] == recipe
    assert record["recipe_sha256"] == hashlib.sha256((run_dir / "config.yaml").read_bytes()).hexdigest()
    assert record["command"] == ["vaezoo", *args]
    assert record["vaezoo_version"] == metadata.version("vaezoo")
    builtin = {ep.name for ep in metadata.entry_points(group="vaezoo")} | {"core"}
    assert {p["name"] for p in record["plugins"]} == builtin
    for plugin in record["plugins"]:
        assert plugin["version"] == metadata.version(plugin["distribution"]), plugin
    assert record["torch"]["version"] == torch.__version__
    assert record["torch"]["build"] == (f"cuda {torch.version.cuda}" if torch.version.cuda else "cpu")
    assert record["threads"] == torch.get_num_threads() and f"{torch.get_num_threads()} threads" in record["machine"]
    started, ended = datetime.fromisoformat(record["started"]), datetime.fromisoformat(record["ended"])
    assert started.utcoffset().total_seconds() == 0 and before <= started <= ended <= after

    results = json.loads((run_dir / "results.json").read_text())
    assert results["provenance"] == record
    config = json.loads((run_dir / "model" / "config.json").read_text())
    assert config["metadata"]["provenance"] == record
    model = load(str(run_dir))
    assert model.card.provenance == record
    # the card carries what fit measured, with its protocol and data set
    metrics = {m["name"]: m for m in model.card.metrics}
    assert metrics["ELBO"]["value"] == results["elbo_nats"]
    assert metrics["IW-NLL (k=2)"]["value"] == results["iw_nll_nats"]
    assert {m["protocol"] for m in model.card.metrics} == {results["protocol"]}
    assert "k=2 importance samples" in results["protocol"] and "100 test" in results["protocol"]
    assert {m["unit"] for m in model.card.metrics} == {"nats"} and model.card.dataset.startswith("bundled MNIST")
    card = (run_dir / "model" / "README.md").read_text()
    assert "## Metrics" in card and f"- **Recipe commit:** {record['git']['commit']}\n" in card

    checkpoints = list_checkpoints(run_dir / "checkpoints")
    assert [s for s, _ in checkpoints] == [2, 4]
    written = []
    for _, path in checkpoints:
        saved = load_checkpoint(path)["provenance"]
        assert {**saved, "ended": None} == {**record, "ended": None}
        written.append(datetime.fromisoformat(saved["ended"]))
    assert started <= written[0] <= written[1] <= ended

    out = tmp_path / "eval.json"
    assert main(["evaluate", str(run_dir), "--k", "0", "--out", str(out)]) == 0
    capsys.readouterr()
    evaluation = json.loads(out.read_text())
    assert evaluation["model_provenance"] == record
    own = evaluation["provenance"]
    assert own["command"] == ["vaezoo", "evaluate", str(run_dir), "--k", "0", "--out", str(out)]
    assert own["vaezoo_version"] == metadata.version("vaezoo") and own["torch"]["version"] == torch.__version__
    assert record["ended"] <= own["started"] <= own["ended"]
