"""The numbers of a training step checked against hand computations: the EMA shadow, gradient accumulation,
gradient clipping, the non-finite-gradient guard, bf16/fp16 training with the gradient scaler; the speed switches a
model declares; and metrics.jsonl after a kill -9 and a resume (each step recorded once)."""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import signal
import subprocess
import sys

import pytest
import torch
from conftest import REPO_ROOT
from trainers import make_trainer

import vaezoo
from vaezoo.training import Trainer
from vaezoo.training.checkpoint import list_checkpoints, load_checkpoint
from vaezoo.training.reporting import truncate_metrics

# looked up by name: the classes may move between the core and the plugins, the registered names stay
ELBO = vaezoo.get_registry().get("objective", "ELBO").target
RandomImages = vaezoo.get_registry().get("dataset", "RandomImages").target


def _trainer(**kw) -> Trainer:
    defaults = dict(
        lr=1e-3, lr_schedule="constant", warmup_steps=0, progress=False, tensorboard=False, device="cpu", eval_k=0
    )
    return make_trainer(**{**defaults, **kw})


def _batch(n: int, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed)).round()


class FixedNoiseELBO(ELBO):
    """An ELBO whose latent noise for the i-th example of a step is fixed: consecutive calls take consecutive rows
    of ``noise``, so k micro-batches of b see exactly the noise of one batch of k*b."""

    def __init__(self, noise: list[torch.Tensor]) -> None:
        super().__init__()
        self.noise, self.offset = noise, 0

    def forward(self, model, x, step, noise=None):
        n, total = x.shape[0], self.noise[0].shape[0]
        rows = slice(self.offset, self.offset + n)
        self.offset = (self.offset + n) % total
        return super().forward(model, x, step, [z[rows] for z in self.noise])


class _NaNGradient(torch.autograd.Function):
    """The identity, whose gradient is NaN: a finite loss with a non-finite gradient."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * float("nan")


class NaNGradientELBO(ELBO):
    """An ELBO whose gradient is NaN on chosen calls, its loss staying finite."""

    def __init__(self, bad_calls=()) -> None:
        super().__init__()
        self.bad_calls, self.calls = set(bad_calls), 0

    def forward(self, model, x, step, noise=None):
        loss, metrics = super().forward(model, x, step, noise)
        call, self.calls = self.calls, self.calls + 1
        return (_NaNGradient.apply(loss) if call in self.bad_calls else loss), metrics


def _floats(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items() if v.is_floating_point()}


def _grads(model) -> dict[str, torch.Tensor]:
    return {name: p.grad.detach().clone() for name, p in model.named_parameters()}


def test_ema_shadow_is_the_running_average_of_the_weights():
    """shadow_0 = initial weights, shadow_t = d * shadow_(t-1) + (1 - d) * weights_t after each applied step,
    computed by hand in float64 from the weights the optimiser produced."""
    decay = 0.8
    model = vaezoo.create("test-vae")
    trainer = _trainer(lr=1e-2, ema_decay=decay)
    trainer.prepare(model, ELBO(), 8, 64)
    expected = {k: v.double() for k, v in _floats(model).items()}
    for step in range(4):
        _, _, _, applied = trainer.train_step([_batch(8, seed=step)], step)
        assert applied
        expected = {k: decay * v + (1 - decay) * _floats(model)[k].double() for k, v in expected.items()}
    assert set(trainer.ema.shadow) == set(expected)
    for key, value in expected.items():
        torch.testing.assert_close(trainer.ema.shadow[key].double(), value, rtol=1e-5, atol=1e-7, msg=key)
    lag = max(float((trainer.ema.shadow[k] - v).abs().max()) for k, v in _floats(model).items())
    assert lag > 1e-4  # the average lags the weights: not a copy of them


@pytest.mark.parametrize("k", [2, 3])
def test_accumulated_micro_batches_match_one_large_batch(k):
    """k micro-batches of b give the gradient of one batch of k*b (the loss is a batch mean, each micro-batch's
    loss is divided by k), and after the step the same weights. Tolerance: float32 summation order only (the
    first Adamax step is lr * g / (|g| + eps), so weight errors are at most lr / eps times the gradient's)."""
    b = 4
    x = _batch(k * b)
    torch.manual_seed(0)
    model = vaezoo.create("test-vae")
    noise = [torch.randn(s) for s in model.latent_shapes(k * b)]
    twin = copy.deepcopy(model)
    accumulated = _trainer(accumulate_grad_batches=k)
    accumulated.prepare(model, FixedNoiseELBO(noise), b, 64)
    one_batch = _trainer()
    one_batch.prepare(twin, FixedNoiseELBO(noise), k * b, 64)

    by_hand = FixedNoiseELBO(noise)(copy.deepcopy(twin), x, 0)[0].detach()  # the batch's loss before the step
    loss_a, norm_a, _, applied_a = accumulated.train_step(list(x.split(b)), 0)
    loss_b, norm_b, _, applied_b = one_batch.train_step([x], 0)
    assert applied_a and applied_b
    torch.testing.assert_close(loss_b, by_hand, rtol=1e-6, atol=1e-5)  # the step reports its loss
    torch.testing.assert_close(loss_a, loss_b, rtol=1e-6, atol=1e-5)
    torch.testing.assert_close(norm_a, norm_b, rtol=1e-5, atol=1e-6)
    grads_a, grads_b = _grads(model), _grads(twin)
    for name, grad in grads_b.items():
        torch.testing.assert_close(grads_a[name], grad, rtol=1e-5, atol=1e-6, msg=name)
    for name, value in _floats(twin).items():
        torch.testing.assert_close(_floats(model)[name], value, rtol=1e-6, atol=1e-6, msg=name)

    # not a vacuous comparison: the last micro-batch alone has another gradient
    last = copy.deepcopy(twin)
    last.zero_grad()
    FixedNoiseELBO([z[-b:] for z in noise])(last, x[-b:], 0)[0].backward()
    assert max(float((p.grad - grads_b[n]).abs().max()) for n, p in last.named_parameters()) > 1e-3


def test_grad_clip_applies_the_update_of_the_clipped_gradient():
    """With grad_clip far below the gradient norm, the applied gradient is g * clip / |g| (norm clip) and the
    weights move by the first Adamax step of that gradient, lr * g_c / (|g_c| + eps) (no weight decay)."""
    clip, lr, eps = 1e-3, 1e-3, 1e-3
    x = _batch(8)
    torch.manual_seed(0)
    model = vaezoo.create("test-vae")
    noise = [torch.randn(s) for s in model.latent_shapes(8)]
    reference = copy.deepcopy(model)  # the unclipped gradient, computed by hand
    FixedNoiseELBO(noise)(reference, x, 0)[0].backward()
    g = _grads(reference)
    g_norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(v) for v in g.values()]))
    assert g_norm > 100 * clip

    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    trainer = _trainer(grad_clip=clip, lr=lr, adamax_eps=eps, weight_decay=0.0)
    trainer.prepare(model, FixedNoiseELBO(noise), 8, 64)
    _, grad_norm, _, applied = trainer.train_step([x], 0)
    assert applied
    torch.testing.assert_close(grad_norm, g_norm, rtol=1e-5, atol=0.0)  # the norm before clipping is reported
    clipped = _grads(model)
    clipped_norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(v) for v in clipped.values()]))
    torch.testing.assert_close(clipped_norm, torch.tensor(clip), rtol=1e-4, atol=0.0)
    for name, p in model.named_parameters():
        torch.testing.assert_close(clipped[name], g[name] * clip / g_norm, rtol=1e-4, atol=1e-10, msg=name)
        update = p.detach() - before[name]
        expected = -lr * clipped[name] / (clipped[name].abs() + eps)
        torch.testing.assert_close(update, expected, rtol=1e-3, atol=2e-8, msg=name)


def test_a_finite_loss_with_a_non_finite_gradient_is_skipped(tmp_path):
    """train_step: nothing changes (weights, optimiser state, EMA); fit: the step is counted as skipped."""
    model = vaezoo.create("test-vae")
    trainer = _trainer(lr=1e-2, ema_decay=0.5)
    trainer.prepare(model, NaNGradientELBO(bad_calls={0}), 8, 64)
    before, shadow = _floats(model), {k: v.clone() for k, v in trainer.ema.shadow.items()}
    loss, grad_norm, _, applied = trainer.train_step([_batch(8)], 0)
    assert torch.isfinite(loss) and not torch.isfinite(grad_norm) and not applied
    assert all(torch.equal(v, before[k]) for k, v in _floats(model).items())
    assert all(torch.equal(v, shadow[k]) for k, v in trainer.ema.shadow.items())
    assert not trainer.optimizer.state  # Adamax never stepped

    model = vaezoo.create("test-vae")
    data = RandomImages(image_shape=(1, 8, 8), num_examples=64, batch_size=8, binary=True)
    trainer = _trainer(max_steps=4, log_every=1, checkpoint_every=0)
    summary = trainer.fit(model, NaNGradientELBO(bad_calls={1}), data, tmp_path)
    assert summary == {"step": 4, "skipped_steps": 1, "rollbacks": 0}
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["skipped_steps"] for r in records if "loss" in r] == [0, 1, 1, 1]
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in records if "loss" in r)
    assert int(next(iter(trainer.optimizer.state.values()))["step"]) == 3
    assert all(torch.isfinite(p).all() for p in model.parameters())


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_reduced_precision_training_decreases_the_loss(precision):
    """20 steps on a fixed batch under CPU autocast: the network runs in the reduced dtype, every loss is
    finite and the loss goes down (fp16 also runs the gradient scaler, which may skip an overflowing step)."""
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    model = vaezoo.create("test-vae")
    trainer = _trainer(lr=1e-2, precision=precision)
    trainer.prepare(model, ELBO(), 16, 64)
    assert trainer.scaler.is_enabled() == (precision == "fp16")
    dtypes = []
    conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    conv.register_forward_hook(lambda module, args, out: dtypes.append(out.dtype))
    x = _batch(16)
    losses, applied = [], []
    for step in range(20):
        loss, _, _, ok = trainer.train_step([x], step)
        losses.append(float(loss))
        applied.append(ok)
    assert set(dtypes) == {dtype}
    assert all(torch.isfinite(torch.tensor(losses)))
    assert sum(applied) >= 18
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.3, losses


def test_fp16_gradient_scaler_state_is_checkpointed_and_restored(tmp_path):
    """The scaler's scale and growth tracker go into each checkpoint; a run resumed from its first checkpoint ends
    with the scaler state (and the weights) of the uninterrupted run."""
    data = RandomImages(image_shape=(1, 8, 8), num_examples=64, batch_size=8, binary=True)

    def run(run_dir, resume):
        torch.manual_seed(0)
        model = vaezoo.create("test-vae")
        trainer = _trainer(max_steps=6, lr=1e-2, precision="fp16", checkpoint_every=2, keep_last=10)
        trainer.fit(model, ELBO(), data, run_dir, resume=resume)
        return model, trainer

    model, trainer = run(tmp_path / "full", False)
    checkpoints = list_checkpoints(tmp_path / "full" / "checkpoints")
    assert load_checkpoint(checkpoints[-1][1])["scaler"] == trainer.scaler.state_dict()
    first_step, first = checkpoints[0]
    scaler_state = load_checkpoint(first)["scaler"]
    # a state that a fresh scaler would not have (the first steps overflow and halve the scale), so that a resume
    # that forgot it would be seen
    assert first_step < 6 and scaler_state["scale"] < torch.amp.GradScaler("cpu").get_scale()
    assert scaler_state["_growth_tracker"] > 0

    (tmp_path / "resumed" / "checkpoints").mkdir(parents=True)
    shutil.copy(first, tmp_path / "resumed" / "checkpoints" / first.name)
    resumed_model, resumed = run(tmp_path / "resumed", True)
    assert resumed.scaler.state_dict() == trainer.scaler.state_dict()
    for key, value in model.state_dict().items():
        assert torch.equal(resumed_model.state_dict()[key], value), key


def _doubles_model():
    """A hierarchical VAE (it has speed switches) made of vaezoo.testing's doubles (no layer they act on)."""
    from vaezoo.models import HierarchicalVAE
    from vaezoo.testing.doubles import hierarchical_arguments

    return HierarchicalVAE(**hierarchical_arguments())


@pytest.mark.parametrize(
    "switch, build, message",
    [
        ({"gradient_checkpointing": True}, "test-vae", "trainer.speed.gradient_checkpointing: ConvVAE has no speed switches"),
        ({"compile_cells": True}, "test-vae", "trainer.speed.compile_cells: ConvVAE has no speed switches"),
        ({"depthwise_weight_grad": "compiled"}, "test-vae", "trainer.speed.depthwise_weight_grad: ConvVAE has no speed switches"),
        ({"bn_swish": "fused"}, "test-vae", "trainer.speed.bn_swish: ConvVAE has no speed switches"),
        ({"bn_swish": "fused"}, _doubles_model, "trainer.speed.bn_swish: HierarchicalVAE has no BatchNorm-Swish layer"),
        ({"depthwise_weight_grad": "compiled"}, _doubles_model,
         "trainer.speed.depthwise_weight_grad: HierarchicalVAE has no layer that supports it"),
    ],
)  # fmt: skip
def test_a_speed_switch_the_model_does_not_declare_is_refused_by_its_recipe_key(switch, build, message):
    """Speed switches belong to the model families that have them (vaezoo.interfaces.SpeedSwitches), not to every
    model: a model without them, or without a layer a switch acts on, is one line naming the recipe key."""
    model = vaezoo.create(build) if isinstance(build, str) else build()
    with pytest.raises(vaezoo.VaezooError, match=f"^{re.escape(message)}"):
        _trainer(**switch).prepare(model, ELBO(), 8, 64)


def test_speed_switches_reach_a_model_that_declares_them():
    model = vaezoo.create("test-nvae")
    _trainer(gradient_checkpointing=True, depthwise_weight_grad="compiled").prepare(model, ELBO(), 4, 40)
    assert model.gradient_checkpointing
    assert any(getattr(m, "depthwise_weight_grad", None) == "compiled" for m in model.modules())


# -- metrics.jsonl across a kill and a resume ------------------------------------------------------------------------

RECIPE = str(REPO_ROOT / "recipes" / "vae_mnist.yaml")
ARGS = ["--model.init_args.latent_dim", "4", "--model.init_args.hidden_channels", "4", "--model.init_args.hidden_units", "16",
        "--data.init_args.batch_size", "50", "--trainer.logging.progress", "false", "--trainer.evaluation.k", "0", "--trainer.logging.tensorboard", "false",
        "--trainer.max_steps", "10", "--trainer.checkpoints.every", "4", "--trainer.schedule.warmup_steps", "0", "--trainer.logging.log_every", "1"]  # fmt: skip

# Runs the CLI in a child process that SIGKILLs itself at the n-th optimiser step (n = 0: never).
KILLER = """
import os, signal, sys
import torch
n, calls, real = int(sys.argv[1]), [0], torch.optim.Adamax.step
def step(self, *args, **kwargs):
    calls[0] += 1
    if calls[0] == n:
        os.kill(os.getpid(), signal.SIGKILL)
    return real(self, *args, **kwargs)
torch.optim.Adamax.step = step
from vaezoo.cli import main
sys.exit(main(sys.argv[2:]))
"""


def _fit(run_dir, resume: bool, kill_at: int = 0):
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    command = [sys.executable, "-c", KILLER, str(kill_at), "fit", RECIPE, *ARGS, "--run_dir", str(run_dir)]
    return subprocess.run(
        [*command, "--resume", str(resume).lower()], capture_output=True, text=True, env=env, timeout=300
    )


def test_resumed_run_records_each_step_once(tmp_path):
    """Killed after step 6 with its last checkpoint at step 4, the resumed run replays steps 5 and 6: their first
    records are dropped, so metrics.jsonl holds steps 1..10 once each, in order."""
    run_dir = tmp_path / "run"
    killed = _fit(run_dir, resume=False, kill_at=7)  # steps 0-5 applied and logged as steps 1-6
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert [s for s, _ in list_checkpoints(run_dir / "checkpoints")] == [4]
    logged = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert max(logged) == 6  # the kill left records after the checkpoint: the case under test

    result = _fit(run_dir, resume=True)
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in records if "loss" in r]
    assert steps == list(range(1, 11))
    assert all(a["step"] <= b["step"] for a, b in zip(records, records[1:], strict=False))
    assert not [p.name for p in run_dir.iterdir() if p.name.startswith(".")]  # no temporary left


def test_truncate_metrics_keeps_records_up_to_the_step(tmp_path):
    """Records after the step go, a line torn by a kill mid-write goes, the rest stays byte for byte."""
    path = tmp_path / "metrics.jsonl"
    kept = [{"step": s, "loss": 1.0 / s} for s in range(1, 5)] + [{"step": 4, "active_units": 3}]
    dropped = [{"step": 5, "loss": 0.2}, {"step": 6, "event": "rollback", "to_step": 4, "lr_scale": 0.5}]
    text = "".join(json.dumps(r) + "\n" for r in kept + dropped)
    path.write_text(text + '{"step": 7, "lo')
    assert truncate_metrics(path, 4) == 3
    assert path.read_text() == "".join(json.dumps(r) + "\n" for r in kept)
    assert truncate_metrics(path, 4) == 0 and truncate_metrics(tmp_path / "absent.jsonl", 4) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.jsonl"]
