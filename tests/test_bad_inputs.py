"""The bad-input corpus: every case gives one clear line, exit status 2, and no partial output.

Recipe overlays live in ``tests/bad_inputs/*.yaml``; each starts with ``# base: RECIPE`` (the recipe
it is applied to) and ``# expect: TEXT`` (what the one-line error must say).
"""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path

import pytest
import torch
from conftest import REPO_ROOT

from vaezoo.cli import main

CORPUS = sorted((Path(__file__).parent / "bad_inputs").glob("*.yaml"))


def _header(path: Path) -> dict:
    fields = {}
    for line in path.read_text().splitlines():
        if line.startswith("# ") and ":" in line:
            key, value = line[2:].split(":", 1)
            fields[key.strip()] = value.strip()
    return fields


def snapshot(folder: Path) -> dict[str, str | None]:
    """Every file and folder under ``folder`` with the sha256 of each file's content (None for a folder): equal
    snapshots mean nothing was added, removed or rewritten with other content."""
    return {
        str(p.relative_to(folder)): None if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
    }


def _assert_one_line_error(capsys, code, expected):
    captured = capsys.readouterr()
    assert code == 2, captured
    assert captured.err.startswith("error: ") and captured.err.count("\n") == 1, captured.err
    assert "Traceback" not in captured.err
    assert expected in captured.err, captured.err


@pytest.mark.parametrize("overlay", CORPUS, ids=lambda p: p.stem)
def test_bad_recipe(overlay, tmp_path, capsys):
    header = _header(overlay)
    run_dir = tmp_path / "run"
    base = REPO_ROOT / "recipes" / f"{header['base']}.yaml"
    code = main(["fit", str(base), "--config", str(overlay), "--run_dir", str(run_dir), "--trainer.max_steps", "1"]
                if "max_steps" not in overlay.read_text() else ["fit", str(base), "--config", str(overlay), "--run_dir", str(run_dir)])  # fmt: skip
    _assert_one_line_error(capsys, code, header["expect"])
    assert not run_dir.exists()  # nothing half-written


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["fit"], "required"),
        (["fit", "no_such_recipe.yaml"], "no_such_recipe.yaml"),
        (["frobnicate"], "frobnicate"),
        (["list", "widgets"], "unknown component kind 'widgets'"),
        (["evaluate", "no_such_model"], "unknown pretrained 'no_such_model'"),
        (["evaluate", "local-dir:/nonexistent/model"], "no such model folder"),
        (["sample", "hf-hub:"], "hf-hub"),
        (["convert", "nolabs", "x.pt", "out"], "unknown converter 'nolabs'"),
    ],
)
def test_bad_command_line(argv, expected, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _assert_one_line_error(capsys, main(argv), expected)
    assert snapshot(tmp_path) == {}  # nothing written where the command ran


class _Exploit:
    """A pickle that would run a shell command when unpickled."""

    def __reduce__(self):
        import os

        return (os.system, ("echo pwned > pwned.txt",))


@pytest.fixture
def trained_run(tmp_path):
    run_dir = tmp_path / "run"
    args = ["--model.init_args.latent_dim", "4", "--model.init_args.hidden_channels", "4", "--model.init_args.hidden_units", "16",
            "--data.init_args.batch_size", "50", "--trainer.logging.progress", "false", "--trainer.evaluation.k", "0", "--trainer.max_steps", "2",
            "--trainer.logging.tensorboard", "false", "--run_dir", str(run_dir)]  # fmt: skip
    assert main(["fit", str(REPO_ROOT / "recipes" / "vae_mnist.yaml"), *args]) == 0
    return run_dir, args


@pytest.mark.parametrize("damage", ["random_bytes", "truncated", "malicious_pickle", "empty"])
def test_damaged_checkpoint_on_resume(trained_run, damage, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run_dir, args = trained_run
    ckpt = sorted((run_dir / "checkpoints").iterdir())[-1]
    data = ckpt.read_bytes()
    damaged = {
        "random_bytes": bytes(range(256)) * 10,
        "truncated": data[: len(data) // 2],
        "malicious_pickle": pickle.dumps({"model": _Exploit(), "step": 1}),
        "empty": b"",
    }[damage]
    ckpt.write_bytes(damaged)
    before = snapshot(run_dir)
    capsys.readouterr()
    code = main(["fit", str(REPO_ROOT / "recipes" / "vae_mnist.yaml"), *args[:-2], "--run_dir", str(run_dir),
                 "--trainer.max_steps", "4", "--resume", "true"])  # fmt: skip
    _assert_one_line_error(capsys, code, "cannot read checkpoint")
    assert not (tmp_path / "pwned.txt").exists()
    assert snapshot(run_dir) == before  # config.yaml, metrics, checkpoints: same files, same bytes
    assert ckpt.read_bytes() == damaged  # the user's file is left as it was


def test_malicious_official_checkpoint_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    evil = tmp_path / "checkpoint.pt"
    torch.save({"state_dict": {}, "args": _Exploit()}, evil)
    before = snapshot(tmp_path)
    code = main(["convert", "nvlabs", str(evil), str(tmp_path / "out")])
    captured = capsys.readouterr()
    assert code == 2 and captured.err.count("\n") == 1, captured.err
    assert not (tmp_path / "pwned.txt").exists() and not (tmp_path / "out").exists()
    assert snapshot(tmp_path) == before  # the checkpoint is untouched and nothing else appeared
