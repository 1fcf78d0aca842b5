"""The fit loop's policies: NaN/inf guard with rollback, gradient accumulation, EMA, schedules."""

from __future__ import annotations

import io
import json
import math

import pytest
import torch
from rich.console import Console
from trainers import make_trainer
from vaezoo_datasets import BundledMNIST

import vaezoo
from vaezoo.components import ELBO
from vaezoo.training import Trainer
from vaezoo.training.trainer import TrainingDiverged


class FaultyELBO(ELBO):
    """An ELBO that returns a non-finite loss on chosen calls (counted over the whole run)."""

    def __init__(self, bad_calls=(), bad_from_call=None, value=float("nan")) -> None:
        super().__init__()
        self.bad_calls, self.bad_from_call, self.value, self.calls = set(bad_calls), bad_from_call, value, 0

    def forward(self, model, x, step, noise=None):
        loss, metrics = super().forward(model, x, step, noise)
        call, self.calls = self.calls, self.calls + 1
        if call in self.bad_calls or (self.bad_from_call is not None and call >= self.bad_from_call):
            loss = loss * self.value
        return loss, metrics


def _setup():
    torch.manual_seed(0)
    model = vaezoo.create("vae-mnist", latent_dim=4, hidden_channels=4, hidden_units=16)
    data = BundledMNIST(batch_size=50)
    return model, data


def _trainer(**kw):
    defaults = dict(lr=1e-3, progress=False, log_every=1, checkpoint_every=2, keep_last=10, eval_k=0, tensorboard=False)
    return make_trainer(**{**defaults, **kw})


def _records(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_bad_steps_are_skipped_and_counted(tmp_path):
    model, data = _setup()
    summary = _trainer(max_steps=6).fit(model, FaultyELBO(bad_calls={2, 3}, value=float("inf")), data, tmp_path)
    assert summary["skipped_steps"] == 2 and summary["rollbacks"] == 0
    records = [r for r in _records(tmp_path) if "loss" in r]
    assert [r["skipped_steps"] for r in records] == [0, 0, 1, 2, 2, 2]
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_repeated_bad_steps_roll_back_with_lower_lr_then_recover(tmp_path):
    model, data = _setup()
    objective = FaultyELBO(bad_calls={5, 6, 7})  # steps 5-7 fail once; after the rollback they pass
    summary = _trainer(max_steps=8, max_consecutive_bad_steps=3).fit(model, objective, data, tmp_path)
    assert summary == {"step": 8, "skipped_steps": 3, "rollbacks": 1}
    events = [r for r in _records(tmp_path) if r.get("event") == "rollback"]
    assert events == [{"step": 7, "event": "rollback", "to_step": 4, "lr_scale": 0.5}]
    last = [r for r in _records(tmp_path) if "loss" in r][-1]
    assert math.isclose(last["lr"], 0.5 * _trainer(max_steps=8).lr_at(7))
    # the steps after the checkpoint were run twice (failing, then replayed): each is recorded once, as replayed
    assert [r["step"] for r in _records(tmp_path) if "loss" in r] == list(range(1, 9))


def test_resume_after_a_rollback_keeps_the_reduced_learning_rate(tmp_path):
    """A rollback halves the learning rate for the rest of the run: a checkpoint taken after it carries the factor,
    and a run resumed from there trains at the reduced rate, ending where the uninterrupted run ends (weights,
    optimiser moments and step counts), bit for bit."""
    import shutil

    from vaezoo.training.checkpoint import checkpoint_path, load_checkpoint

    settings = dict(max_steps=8, max_consecutive_bad_steps=3, lr_schedule="constant", lr=1e-2)
    model, data = _setup()
    _trainer(**settings).fit(model, FaultyELBO(bad_calls={5, 6, 7}), data, tmp_path / "full")
    full = load_checkpoint(checkpoint_path(tmp_path / "full" / "checkpoints", 8))
    assert full["rollbacks"] == 1 and full["lr_scale"] == 0.5
    assert load_checkpoint(checkpoint_path(tmp_path / "full" / "checkpoints", 6))["lr_scale"] == 0.5  # after it

    shutil.copytree(tmp_path / "full", tmp_path / "resumed")
    checkpoint_path(tmp_path / "resumed" / "checkpoints", 8).unlink()  # as if stopped after the step-6 checkpoint
    model, data = _setup()
    trainer = _trainer(**settings)
    summary = trainer.fit(model, FaultyELBO(), data, tmp_path / "resumed", resume=True)
    assert summary == {"step": 8, "skipped_steps": 3, "rollbacks": 1} and trainer.state["lr_scale"] == 0.5
    replayed = [r for r in _records(tmp_path / "resumed") if "loss" in r and r["step"] > 6]
    assert [(r["step"], r["lr"]) for r in replayed] == [(7, 0.5e-2), (8, 0.5e-2)]
    resumed = load_checkpoint(checkpoint_path(tmp_path / "resumed" / "checkpoints", 8))
    for key, value in full["model"].items():
        assert torch.equal(resumed["model"][key], value), key
    for index, state in full["optimizer"]["state"].items():
        for name, value in state.items():
            assert torch.equal(resumed["optimizer"]["state"][index][name], value), (index, name)
    assert resumed["optimizer"]["param_groups"] == full["optimizer"]["param_groups"]


def test_a_checkpoint_of_another_world_size_or_an_older_layout_resumes(tmp_path):
    """A checkpoint written by two processes resumes on one with fresh random streams (each rank's saved stream belongs
    to a process that is gone): the same streams on every resume from it, not the first rank's. A checkpoint written
    before it recorded rollbacks and the learning-rate factor resumes with none (0, 1.0); one with an EMA resumes in a
    trainer without one."""
    import shutil

    from vaezoo.training.checkpoint import checkpoint_path, load_checkpoint

    model, data = _setup()
    _trainer(max_steps=2).fit(model, ELBO(), data, tmp_path / "saved")
    path = checkpoint_path(tmp_path / "saved" / "checkpoints", 2)
    state = load_checkpoint(path)
    rank0_torch, rank0_data = state["rng"]["torch"][0], state["rng"]["data"][0]
    state["rng"] = {"torch": [rank0_torch, torch.get_rng_state()], "data": [rank0_data, rank0_data], "world_size": 2}
    del state["rollbacks"], state["lr_scale"]
    state["ema"] = {"decoder.0.weight": torch.zeros(1)}
    torch.save(state, path)

    def resume(name):
        shutil.copytree(tmp_path / "saved", tmp_path / name)
        model, data = _setup()
        trainer = _trainer(max_steps=2)
        trainer.fit(model, ELBO(), data, tmp_path / name, resume=True)  # nothing left to train: restores, then ends
        return trainer, torch.get_rng_state(), trainer.data_generator.get_state()

    first, torch_state, data_state = resume("a")
    assert (first.state["rollbacks"], first.state["lr_scale"], first.state["step"]) == (0, 1.0, 2)
    _, again_torch, again_data = resume("b")
    assert torch.equal(torch_state, again_torch) and torch.equal(data_state, again_data)
    assert not torch.equal(data_state, rank0_data)


def test_persistent_divergence_stops_with_a_clear_message(tmp_path):
    model, data = _setup()
    trainer = _trainer(max_steps=50, max_consecutive_bad_steps=3, max_rollbacks=2)
    with pytest.raises(TrainingDiverged, match="3 consecutive steps with a non-finite loss.*after 2 rollbacks"):
        trainer.fit(model, FaultyELBO(bad_from_call=5), data, tmp_path)
    events = [r for r in _records(tmp_path) if r.get("event") == "rollback"]
    assert [e["lr_scale"] for e in events] == [0.5, 0.25]


def test_gradient_accumulation_takes_one_step_per_k_batches(tmp_path):
    model, data = _setup()
    objective = FaultyELBO()
    trainer = _trainer(max_steps=4, accumulate_grad_batches=3)
    trainer.fit(model, objective, data, tmp_path)
    assert objective.calls == 12
    first_state = next(iter(trainer.optimizer.state.values()))
    assert int(first_state["step"]) == 4


def test_ema_weights_are_published(tmp_path):
    model, data = _setup()
    trainer = _trainer(max_steps=5, ema_decay=0.5, lr=1e-2)
    trainer.fit(model, FaultyELBO(), data, tmp_path)
    final = {k: v.clone() for k, v in model.state_dict().items()}
    assert all(torch.equal(final[k], v) for k, v in trainer.ema.state_dict().items())
    ckpt_ema = torch.load(sorted((tmp_path / "checkpoints").iterdir())[-1], weights_only=True)["ema"]
    assert set(ckpt_ema) == set(trainer.ema.shadow)


@pytest.mark.parametrize("schedule", ["cosine_step", "cosine_epoch"])
def test_lr_schedule_warms_up_then_ends_at_lr_min(schedule):
    trainer = make_trainer(max_steps=100, lr=1.0, lr_min=0.01, warmup_steps=10, lr_schedule=schedule)
    trainer.steps_per_epoch = 10
    assert trainer.lr_at(0) == 0.0 and math.isclose(trainer.lr_at(5), 0.5)
    assert math.isclose(trainer.lr_at(10), 1.0)
    values = [trainer.lr_at(s) for s in range(10, 100)]
    assert all(a >= b for a, b in zip(values, values[1:], strict=False))  # never turns back up
    assert math.isclose(trainer.lr_at(99), 0.01, abs_tol=1e-9)
    if schedule == "cosine_epoch":
        assert len({trainer.lr_at(s) for s in range(20, 30)}) == 1  # constant within an epoch


def _cosine(lr, lr_min, progress):
    return lr_min + 0.5 * (lr - lr_min) * (1 + math.cos(math.pi * progress))


def test_learning_rate_values_by_the_formula():
    """Every value, not only the ends: linear warm-up ``lr t / w``; then per step ``progress = (t - w) / (T - 1 - w)``
    (at least one step of span), per epoch of E steps ``(t // E - w // E) / ((T - 1) // E - w // E)``; progress held
    at 1 past the last step; defaults: no warm-up, per step."""
    from vaezoo.training.schedules import learning_rate

    lr, low = 2.0, 0.1
    # defaults: no warm-up, per step (one step per epoch for the per-epoch schedule)
    for t in (0, 3, 5, 10, 14):
        expected = _cosine(lr, low, min(1.0, t / 10))
        assert learning_rate(t, lr=lr, lr_min=low, max_steps=11) == pytest.approx(expected, rel=1e-12)
        by_epoch = learning_rate(t, lr=lr, lr_min=low, max_steps=11, schedule="cosine_epoch")
        assert by_epoch == pytest.approx(expected, rel=1e-12)
    for t in range(4):
        assert learning_rate(t, lr=lr, lr_min=low, max_steps=20, warmup_steps=4) == pytest.approx(lr * t / 4)
    for t in (4, 9, 13, 19, 25):
        expected = _cosine(lr, low, min(1.0, (t - 4) / 15))
        assert learning_rate(t, lr=lr, lr_min=low, max_steps=20, warmup_steps=4) == pytest.approx(expected)
    # a two-step run: the second step is the last, at lr_min
    assert learning_rate(1, lr=lr, lr_min=low, max_steps=2) == pytest.approx(low)
    # per epoch of 2 steps, a warm-up of 3 steps (epoch 1), 21 steps (last epoch 10): 9 epochs of decay
    for t in (3, 4, 10, 11, 19, 20, 30):
        expected = _cosine(lr, low, min(1.0, (t // 2 - 1) / 9))
        value = learning_rate(
            t, lr=lr, lr_min=low, max_steps=21, warmup_steps=3, schedule="cosine_epoch", steps_per_epoch=2
        )
        assert value == pytest.approx(expected), t
    # per epoch, a run of one and a half epochs: the second epoch is the last
    value = learning_rate(2, lr=lr, lr_min=low, max_steps=3, schedule="cosine_epoch", steps_per_epoch=2)
    assert value == pytest.approx(low)
    assert learning_rate(7, lr=lr, lr_min=low, max_steps=20, warmup_steps=4, schedule="constant") == lr


def test_failed_checkpoint_write_keeps_the_previous_one(tmp_path, monkeypatch):
    from vaezoo.training import checkpoint as ckpt_module
    from vaezoo.training.checkpoint import list_checkpoints, load_checkpoint
    from vaezoo.training.trainer import CheckpointWriteFailed

    real_save = torch.save
    calls = {"n": 0}

    def flaky_save(obj, handle, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] >= 2:  # the second and later checkpoint writes hit a full disk, half-way
            handle.write(b"partial")
            raise OSError(28, "No space left on device")
        return real_save(obj, handle, *args, **kwargs)

    monkeypatch.setattr(ckpt_module.torch, "save", flaky_save)
    model, data = _setup()
    shown = io.StringIO()
    with pytest.raises(CheckpointWriteFailed) as info:
        _trainer(max_steps=5).fit(model, FaultyELBO(), data, tmp_path, console=Console(file=shown, width=300))
    final = "could not write checkpoint step_00000005.pt: No space left on device; last complete checkpoint: step 2"
    assert str(info.value) == final
    monkeypatch.setattr(ckpt_module.torch, "save", real_save)
    assert [s for s, _ in list_checkpoints(tmp_path / "checkpoints")] == [2]
    assert load_checkpoint(tmp_path / "checkpoints" / "step_00000002.pt")["step"] == 2
    assert not [p for p in (tmp_path / "checkpoints").iterdir() if p.name.startswith(".")]  # no temp files left
    failures = [r for r in _records(tmp_path) if r.get("event") == "checkpoint_failed"]
    assert [f["step"] for f in failures] == [4, 5]
    first = final.replace("step_00000005", "step_00000004")
    assert [f["error"] for f in failures] == [first, final]
    assert shown.getvalue().splitlines() == [f"warning: {first}", f"warning: {final}"]  # said as it happens too


def test_a_failed_first_checkpoint_write_says_there_is_none(tmp_path, monkeypatch):
    from vaezoo.training import checkpoint as ckpt_module
    from vaezoo.training.trainer import CheckpointWriteFailed

    def full_disk(obj, handle, *args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ckpt_module.torch, "save", full_disk)
    model, data = _setup()
    with pytest.raises(CheckpointWriteFailed) as info:
        _trainer(max_steps=1, checkpoint_every=0).fit(model, FaultyELBO(), data, tmp_path)
    assert str(info.value) == (
        "could not write checkpoint step_00000001.pt: No space left on device; last complete checkpoint: none"
    )
    assert not (tmp_path / "checkpoints").exists() or not list((tmp_path / "checkpoints").iterdir())


def test_epochs_are_converted_to_steps_of_the_global_batch():
    model, data = _setup()
    trainer = _trainer(max_epochs=2, warmup_epochs=0.5, accumulate_grad_batches=3)
    trainer.prepare(model, FaultyELBO(), data.batch_size, len(data.train_dataset()))
    assert trainer.global_batch == 150 and trainer.steps_per_epoch == 30  # 4500 // 150
    assert trainer.max_steps == 60 and trainer.warmup_steps == 15


def test_keep_freed_memory_configures_glibc_once():
    import sys

    from vaezoo.training import memory

    applied = memory.keep_freed_memory()
    assert applied is sys.platform.startswith("linux")  # glibc's mallopt accepted both settings
    assert memory.keep_freed_memory() is applied  # idempotent
    trainer = _trainer(keep_freed_memory=False)
    assert trainer.settings.speed.keep_freed_memory is False


def test_emulated_bf16_is_warned_about_before_the_first_step(tmp_path, monkeypatch, capsys):
    """``precision: bf16`` on a CPU without native bfloat16: one warning line on stderr before any step is taken; in
    fp32, none (the warning's own conditions are tests/test_speed_levers.py's)."""
    from vaezoo import hardware

    seen_at_first_step = []
    real_step = Trainer.train_step

    def train_step(self, micro_batches, step):
        if step == 0:
            seen_at_first_step.append(capsys.readouterr().err)
        return real_step(self, micro_batches, step)

    monkeypatch.setattr(Trainer, "train_step", train_step)
    for native, precision, warned in [(False, "bf16", True), (False, "fp32", False)]:
        monkeypatch.setattr(hardware, "native_bf16", lambda native=native: native)
        model, data = _setup()
        _trainer(max_steps=1, precision=precision, device="cpu").fit(model, FaultyELBO(), data, tmp_path / precision)
        before = seen_at_first_step.pop()
        lines = [line for line in before.splitlines() if "bf16" in line]
        if warned:
            assert len(lines) == 1 and lines[0].startswith("warning: precision bf16 on a CPU without native bfloat16")
            assert "emulated and slower than fp32; use --trainer.precision fp32" in lines[0]
        else:
            assert lines == []


def test_gradients_are_clipped_per_optimiser_group():
    """trainer.optimizer.grad_clip clips the parameters of no group; a param group clips its own with its ``grad_clip`` (or
    the trainer's): the large gradients of one part never scale down another's."""
    from vaezoo.errors import VaezooError
    from vaezoo.training.optimizers import clip_gradients

    model = torch.nn.ModuleDict({"vae": torch.nn.Linear(4, 1, bias=False), "prior": torch.nn.Linear(4, 1, bias=False)})
    trainer = make_trainer(grad_clip=1.0, param_groups=[{"params": "prior.*", "optimizer": "adam", "grad_clip": 0.1}])

    class _Objective(torch.nn.Module):
        def set_total_steps(self, total_steps):
            pass

    trainer.prepare(model, _Objective(), data_batch_size=1, num_examples=1)
    model["vae"].weight.grad = torch.tensor([[3.0, 4.0, 0.0, 0.0]])  # norm 5
    model["prior"].weight.grad = torch.tensor([[0.0, 0.0, 0.6, 0.8]])  # norm 1
    norm = clip_gradients(trainer.clip_sets)
    assert abs(float(norm) - math.sqrt(26)) < 1e-6  # the norm of all gradients, before clipping
    # each part to its own norm: 5 -> 1 and 1 -> 0.1 (a global clip to 1 would leave the prior's at 1/sqrt(26))
    torch.testing.assert_close(model["vae"].weight.grad, torch.tensor([[0.6, 0.8, 0.0, 0.0]]), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(model["prior"].weight.grad, torch.tensor([[0.0, 0.0, 0.06, 0.08]]), rtol=1e-5, atol=1e-6)
    with pytest.raises(VaezooError, match="grad_clip must be positive"):
        make_trainer(param_groups=[{"params": "prior.*", "grad_clip": 0.0}])


def test_an_ema_with_warmup_lowers_its_decay_in_the_first_steps():
    """``ema_warmup``: the update at step s uses ``min(decay, (1 + s) / (10 + s))``; without it, ``decay``."""
    from vaezoo.training.ema import ExponentialMovingAverage

    model = torch.nn.Linear(1, 1, bias=False)
    torch.nn.init.zeros_(model.weight)
    warm, plain = ExponentialMovingAverage(model, 0.9999, warmup=True), ExponentialMovingAverage(model, 0.9999)
    for step, weight in enumerate([1.0, 2.0]):
        torch.nn.init.constant_(model.weight, weight)
        warm.update(model, step)
        plain.update(model, step)
    # by hand: step 0, decay 1/10: 0.1 * 0 + 0.9 * 1 = 0.9; step 1, decay 2/11: 2/11 * 0.9 + 9/11 * 2
    assert abs(float(warm.shadow["weight"]) - (2 / 11 * 0.9 + 9 / 11 * 2)) < 1e-6
    assert abs(float(plain.shadow["weight"]) - (0.9999 * 1e-4 + 1e-4 * 2)) < 1e-7
    assert warm.decay_at(10_000_000) == 0.9999
    trainer = make_trainer(param_groups=[{"params": "*", "optimizer": "adam", "ema_decay": 0.9999, "ema_warmup": True}])

    class _Objective(torch.nn.Module):
        def set_total_steps(self, total_steps):
            pass

    trainer.prepare(model, _Objective(), data_batch_size=1, num_examples=1)
    assert trainer.ema.warmup and trainer.ema.decay == 0.9999
