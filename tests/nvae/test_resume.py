"""Exact resume of NVAE training: weights, optimiser, KL schedule and the spectral power-iteration vectors."""

from __future__ import annotations

import torch
from trainers import make_trainer
from vaezoo_datasets import RandomImages

import vaezoo
from vaezoo.training.checkpoint import list_checkpoints, load_checkpoint


def _parts():
    torch.manual_seed(0)
    model = vaezoo.create("test-nvae")
    objective = vaezoo.build({"class_path": "NVAEObjective"}, kind="objective")
    data = RandomImages(image_shape=model.image_shape, num_examples=64, batch_size=8, binary=True)
    return model, objective, data


def _trainer():
    return make_trainer(
        max_steps=6,
        lr=1e-2,
        warmup_steps=2,
        checkpoint_every=3,
        keep_last=5,
        progress=False,
        tensorboard=False,
        log_every=1,
    )


def test_stop_and_resume_equals_uninterrupted(tmp_path):
    model, objective, data = _parts()
    _trainer().fit(model, objective, data, tmp_path / "full", seed=3)

    model, objective, data = _parts()
    _trainer().fit(model, objective, data, tmp_path / "part", seed=3)
    for step, path in list_checkpoints(tmp_path / "part" / "checkpoints"):
        if step > 3:
            path.unlink()
    model, objective, data = _parts()  # a fresh process would start from a fresh model
    _trainer().fit(model, objective, data, tmp_path / "part", seed=3, resume=True)

    a = load_checkpoint(list_checkpoints(tmp_path / "full" / "checkpoints")[-1][1])
    b = load_checkpoint(list_checkpoints(tmp_path / "part" / "checkpoints")[-1][1])
    assert a["step"] == b["step"] == 6
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    vectors = [k for k in a["objective"] if "u_" in k or "v_" in k]
    assert vectors, "the spectral regulariser's u/v vectors are part of the checkpoint"
    for key, value in a["objective"].items():
        assert torch.equal(value, b["objective"][key]), key
