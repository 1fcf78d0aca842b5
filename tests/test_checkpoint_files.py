"""Checkpoint files by themselves (``vaezoo.training.checkpoint``): the atomic write (its temporary file beside the
target, where the clean-up after a crash finds it), which checkpoints pruning keeps, which files the clean-up removes,
and loading: the values back, on the CPU, and one line for each way a file can fail to be a checkpoint."""

from __future__ import annotations

import os
import pickle

import pytest
import torch

from vaezoo.errors import CheckpointError
from vaezoo.training import checkpoint as ckpt
from vaezoo.training.checkpoint import (
    atomic_torch_save,
    checkpoint_path,
    list_checkpoints,
    load_checkpoint,
    prune_checkpoints,
    remove_stale_temporaries,
)


def _payload(step: int) -> dict:
    return {"model": {"w": torch.arange(6.0).view(2, 3) * step}, "step": step, "rng": {"torch": [torch.ones(3)]}}


def _steps(directory) -> list[int]:
    return [s for s, _ in list_checkpoints(directory)]


def test_a_checkpoint_is_written_into_new_folders_and_reads_back_equal(tmp_path):
    path = checkpoint_path(tmp_path / "run" / "nested" / "checkpoints", 12)
    assert path.name == "step_00000012.pt"
    atomic_torch_save(_payload(12), path)  # the folders do not exist yet
    state = load_checkpoint(path)
    assert state["step"] == 12 and torch.equal(state["model"]["w"], torch.arange(6.0).view(2, 3) * 12)
    assert state["model"]["w"].device.type == "cpu" and torch.equal(state["rng"]["torch"][0], torch.ones(3))
    assert sorted(p.name for p in path.parent.iterdir()) == ["step_00000012.pt"]  # no temporary file left


def test_the_write_goes_through_a_temporary_file_the_clean_up_finds(tmp_path, monkeypatch):
    """The bytes go to a temporary file in the target's folder, renamed over the target: a crash before the rename
    leaves the previous checkpoint whole and a temporary that ``remove_stale_temporaries`` (run at the next start)
    deletes; a failed write removes its temporary at once."""
    directory = tmp_path / "checkpoints"
    atomic_torch_save(_payload(2), checkpoint_path(directory, 2))
    renamed = []
    real_replace = os.replace

    def crash_before_rename(source, target):
        renamed.append((source, target))
        raise KeyboardInterrupt  # killed between the write and the rename

    monkeypatch.setattr(ckpt.os, "replace", crash_before_rename)
    with pytest.raises(KeyboardInterrupt):
        atomic_torch_save(_payload(4), checkpoint_path(directory, 4))
    monkeypatch.setattr(ckpt.os, "replace", real_replace)
    ((source, target),) = renamed
    assert os.path.dirname(source) == str(directory) and str(target) == str(checkpoint_path(directory, 4))
    name = os.path.basename(source)
    assert name.startswith(".step_00000004.pt.") and name.endswith(".tmp")
    assert not (directory / name).exists()  # an interrupted write removes its own temporary
    assert _steps(directory) == [2] and load_checkpoint(checkpoint_path(directory, 2))["step"] == 2

    # as a kill would leave it: the temporary file stays until the clean-up
    (directory / name).write_bytes(b"half a checkpoint")
    keep = ["step_00000002.pt", ".other.tmp", ".step_00000006.pt.TMP", "notes.tmp", ".step_00000006.pt"]
    for other in keep[1:]:
        (directory / other).write_bytes(b"not ours")
    assert remove_stale_temporaries(directory) == 1
    assert sorted(p.name for p in directory.iterdir()) == sorted(keep)
    assert remove_stale_temporaries(tmp_path / "missing") == 0


@pytest.mark.parametrize(
    "keep_last, kept", [(-1, [1, 2, 3, 4]), (0, [1, 2, 3, 4]), (1, [4]), (2, [3, 4]), (5, [1, 2, 3, 4])]
)
def test_pruning_keeps_the_last_checkpoints(tmp_path, keep_last, kept):
    """``keep_last`` newest checkpoints stay (by step, not by name or age); 0 (or less) keeps every one. Other files
    stay."""
    for step in (3, 1, 4, 2):
        atomic_torch_save(_payload(step), checkpoint_path(tmp_path, step))
    (tmp_path / "notes.txt").write_text("mine")
    prune_checkpoints(tmp_path, keep_last)
    assert _steps(tmp_path) == kept and (tmp_path / "notes.txt").read_text() == "mine"


def test_listing_takes_only_checkpoint_names_in_step_order(tmp_path):
    for name in ("step_00000010.pt", "step_00000002.pt", "step_2.pt", "step_00000003.pt.tmp", ".step_00000004.pt"):
        (tmp_path / name).write_bytes(b"")
    assert list_checkpoints(tmp_path) == [(2, tmp_path / "step_00000002.pt"), (10, tmp_path / "step_00000010.pt")]
    assert list_checkpoints(tmp_path / "missing") == []


class _Exploit:
    """Unpickled, it creates ``pwned.txt`` in the working directory."""

    def __reduce__(self):
        return (open, ("pwned.txt", "w"))


def _truncated(path) -> None:
    torch.save(_payload(3), path)
    path.write_bytes(path.read_bytes()[:200])


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "checkpoint not found: {path}"),
        (b"", "cannot read checkpoint {path}: EOFError (damaged or not a checkpoint)"),
        (_truncated, "cannot read checkpoint {path}: PytorchStreamReader failed reading zip archive"),
        (pickle.dumps({"model": _Exploit(), "step": 1}), "cannot read checkpoint {path}: it holds objects other than "
         "tensors and plain containers, refused as unsafe"),
        ({"step": 3}, "{path} is not a vaezoo training checkpoint"),
        ({"model": {}}, "{path} is not a vaezoo training checkpoint"),
        ([1, 2], "{path} is not a vaezoo training checkpoint"),
    ],
    ids=["missing", "empty", "truncated", "pickle-with-code", "no-model", "no-step", "not-a-dict"],
)  # fmt: skip
def test_a_file_that_is_no_checkpoint_is_one_line_naming_it(tmp_path, monkeypatch, content, message):
    """Also where the environment turns torch's safe loading off by default: a checkpoint is read weights-only."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    path = tmp_path / "step_00000003.pt"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif callable(content):
        content(path)
    elif content is not None:
        torch.save(content, path)
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(path)
    text = str(caught.value)
    assert text.startswith(message.format(path=path)) and "\n" not in text, text
    assert not (tmp_path / "pwned.txt").exists()
    if "PytorchStreamReader" in message:  # the first line of torch's error, then what it means
        assert text.endswith("(damaged or not a checkpoint)")
