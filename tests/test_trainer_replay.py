"""The trainer's own step, replayed by hand against the official rules: the Adamax update (L2 weight decay added to
the gradient, eps 1e-3, bias correction of the first moment) through the optimiser the trainer builds, with and
without per-component parameter groups; and the KL warm-up coefficient each step of a run sees, against NVAE's
schedule ``max(min((i - c T) / (a T), 1), m)`` at the step's index i (0 for the first update)."""

from __future__ import annotations

import json
import math

import pytest
import torch
from by_hand import official_adam, official_adamax
from trainers import make_trainer
from vaezoo_datasets import RandomImages

import vaezoo
from vaezoo.components import ELBO
from vaezoo.training.checkpoint import list_checkpoints, load_checkpoint


@pytest.mark.parametrize(
    "param_groups",
    [
        None,
        [{"params": "decoder.*", "weight_decay": 0.2, "lr": 0.02, "betas": [0.8, 0.9], "eps": 1e-4}],
        [
            {
                "params": "decoder.*",
                "weight_decay": 0.2,
                "lr": 0.02,
                "betas": [0.8, 0.9],
                "eps": 1e-4,
                "optimizer": "adam",
            }
        ],
    ],
    ids=["one-adamax", "param-groups", "adam-group"],
)
@pytest.mark.parametrize("foreach", [False, True], ids=["for-loop", "foreach"])
def test_the_trainers_optimiser_applies_the_official_adamax_update(param_groups, foreach):
    """``trainer.speed.adamax_foreach`` picks torch's multi-tensor Adamax (true) or the per-parameter loop (false): the same
    official update either way."""
    torch.manual_seed(0)
    model = vaezoo.create("vae-mnist", latent_dim=2, hidden_channels=2, hidden_units=8)
    objective = ELBO()
    settings = dict(lr=0.05, weight_decay=0.1, adamax_eps=1e-3, betas=(0.9, 0.999))
    trainer = make_trainer(
        max_steps=3, lr_schedule="constant", device="cpu", param_groups=param_groups, adamax_foreach=foreach, **settings
    )
    trainer.prepare(model, objective, data_batch_size=4, num_examples=8)
    assert all(group["foreach"] is foreach for group in trainer.optimizer.param_groups)
    group_of = {}  # name -> the settings it must train with
    for name, _ in model.named_parameters():
        own = param_groups and name.startswith("decoder.")
        group_of[name] = {
            "rule": official_adam if own and param_groups[0].get("optimizer") == "adam" else official_adamax,
            "lr": 0.02 if own else settings["lr"],
            "weight_decay": 0.2 if own else settings["weight_decay"],
            "betas": (0.8, 0.9) if own else settings["betas"],
            "eps": 1e-4 if own else settings["adamax_eps"],
        }
    assert any(g["weight_decay"] == 0.2 for g in group_of.values()) == bool(param_groups)
    states = {name: {} for name in group_of}
    x = torch.rand(4, *model.image_shape).round()
    for step in range(3):
        before = {name: p.detach().clone() for name, p in model.named_parameters()}
        _, _, _, applied = trainer.train_step([x], step)
        assert applied
        for name, p in model.named_parameters():
            g = group_of[name]
            expected = g["rule"](
                before[name], p.grad, states[name], lr=g["lr"], betas=g["betas"], eps=g["eps"],
                weight_decay=g["weight_decay"],
            )  # fmt: skip
            torch.testing.assert_close(p.detach().double(), expected, rtol=1e-5, atol=1e-7, msg=(step, name))


@pytest.mark.parametrize("algorithm", ["adamax", "adam"])
def test_a_checkpoint_keeps_each_groups_settings_and_moments_and_resumes_them(algorithm, tmp_path):
    """The optimiser's part of a checkpoint, written and read by the trainer: torch's own layout (Adamax over two
    groups is one torch Adamax; an Adam group beside it makes one state per algorithm, Adamax's first), each
    group's lr, betas, eps and weight decay, and every parameter's step count and moments equal to the official
    rule's after two steps; a fresh trainer that restores it takes the third step as the rule continues (with the
    moments lost it would take a first step)."""
    group = {"params": "decoder.*", "optimizer": algorithm, "lr": 0.02, "weight_decay": 0.2, "betas": [0.8, 0.9],
             "eps": 1e-4}  # fmt: skip
    settings = dict(lr=0.05, weight_decay=0.1, adamax_eps=1e-3, betas=(0.9, 0.999))
    own = dict(lr=0.02, weight_decay=0.2, betas=(0.8, 0.9), eps=1e-4)
    rest = dict(lr=0.05, weight_decay=0.1, betas=(0.9, 0.999), eps=1e-3)

    def prepared(seed):
        torch.manual_seed(seed)
        model = vaezoo.create("vae-mnist", latent_dim=2, hidden_channels=2, hidden_units=8)
        trainer = make_trainer(max_steps=3, lr_schedule="constant", device="cpu", param_groups=[group], **settings)
        trainer.prepare(model, ELBO(), data_batch_size=4, num_examples=8)
        trainer.ckpt_dir, trainer.provenance = tmp_path, None  # what fit sets before it saves
        return model, trainer

    def rule_of(name):
        mine = name.startswith("decoder.")
        return (official_adam if mine and algorithm == "adam" else official_adamax), (own if mine else rest)

    model, trainer = prepared(0)
    states = {name: {} for name, _ in model.named_parameters()}
    x = torch.rand(4, *model.image_shape).round()

    def step_and_check(model, trainer, step):
        before = {name: p.detach().clone() for name, p in model.named_parameters()}
        assert trainer.train_step([x], step)[3]
        for name, p in model.named_parameters():
            rule, g = rule_of(name)
            expected = rule(before[name], p.grad, states[name], **g)
            torch.testing.assert_close(p.detach().double(), expected, rtol=1e-5, atol=1e-7, msg=(step, name))

    for step in range(2):
        step_and_check(model, trainer, step)
    trainer.state["step"] = 2
    trainer._save()
    saved = load_checkpoint(list_checkpoints(tmp_path)[-1][1])["optimizer"]
    # torch's layout: {"state": {index: moments}, "param_groups": [{settings, "params": [indices]}]}, per algorithm
    parts = [saved] if algorithm == "adamax" else saved["optimizers"]
    live = [trainer.optimizer] if algorithm == "adamax" else trainer.optimizer.optimizers
    assert [type(o) for o in live] == [torch.optim.Adamax] + ([torch.optim.Adam] if algorithm == "adam" else [])
    name_of = {id(p): name for name, p in model.named_parameters()}
    seen = []
    for part, optimizer in zip(parts, live, strict=True):
        assert len(part["param_groups"]) == len(optimizer.param_groups)
        for saved_group, live_group in zip(part["param_groups"], optimizer.param_groups, strict=True):
            for index, parameter in zip(saved_group["params"], live_group["params"], strict=True):
                name = name_of[id(parameter)]
                rule, g = rule_of(name)
                assert {k: saved_group[k] for k in g} == {**g, "betas": pytest.approx(g["betas"])}, name
                kept, hand = part["state"][index], states[name]
                assert float(kept["step"]) == hand["t"] == 2
                torch.testing.assert_close(kept["exp_avg"].double(), hand["m"], rtol=1e-5, atol=1e-8, msg=name)
                second = kept["exp_inf"] if rule is official_adamax else kept["exp_avg_sq"]
                torch.testing.assert_close(second.double(), hand["u" if rule is official_adamax else "v"],
                                           rtol=1e-5, atol=1e-8, msg=name)  # fmt: skip
                seen.append(name)
    assert sorted(seen) == sorted(states)  # every parameter once
    # a fresh trainer (other initial weights, no moments) restored from the checkpoint continues the rule
    model, trainer = prepared(1)
    trainer._restore(list_checkpoints(tmp_path)[-1][1])
    assert trainer.state["step"] == 2
    step_and_check(model, trainer, 2)


def test_each_step_trains_at_its_scheduled_learning_rate():
    """The step sets every group's learning rate from the schedule before it updates: with a 2-step warm-up and a
    cosine over the rest, lr_t is 0, lr / 2, lr, lr_min, each applied by the official Adamax rule."""
    torch.manual_seed(0)
    model = vaezoo.create("vae-mnist", latent_dim=2, hidden_channels=2, hidden_units=8)
    trainer = make_trainer(max_steps=4, lr=0.05, lr_min=0.001, warmup_steps=2, weight_decay=0.1, device="cpu")
    trainer.prepare(model, ELBO(), data_batch_size=4, num_examples=8)
    states = {name: {} for name, _ in model.named_parameters()}
    x = torch.rand(4, *model.image_shape).round()
    for step, lr in enumerate([0.0, 0.025, 0.05, 0.001]):
        before = {name: p.detach().clone() for name, p in model.named_parameters()}
        _, _, metrics, applied = trainer.train_step([x], step)
        assert applied and metrics["lr"] == pytest.approx(lr)
        for name, p in model.named_parameters():
            expected = official_adamax(before[name], p.grad, states[name], lr=lr, betas=(0.9, 0.999), eps=1e-3,
                                       weight_decay=0.1)  # fmt: skip
            torch.testing.assert_close(p.detach().double(), expected, rtol=1e-5, atol=1e-7, msg=(step, name))


class _DecoderOnlyAfterTheFirstStep(ELBO):
    """The ELBO on step 0; then a loss of the decoder alone (the encoder gets no gradient)."""

    def forward(self, model, x, step, noise=None):
        if step == 0:
            return super().forward(model, x, step, noise)
        loss = model.decode([torch.ones(x.shape[0], 2)]).sum()
        return loss, {}


@pytest.mark.parametrize(
    "param_groups", [None, [{"params": "encoder.*", "optimizer": "adam"}]], ids=["one-adamax", "adam-and-adamax"]
)
def test_a_parameter_without_a_gradient_in_a_step_stays_where_it_is(param_groups):
    """A parameter the step's loss does not reach has no gradient (not a zero one): the optimiser leaves it, moments
    and weight decay included, while the others move; also when the encoder trains with Adam beside the decoder's
    Adamax (two torch optimisers zeroed and stepped together)."""
    torch.manual_seed(0)
    model = vaezoo.create("vae-mnist", latent_dim=2, hidden_channels=2, hidden_units=8)
    trainer = make_trainer(
        max_steps=2, lr=0.05, lr_schedule="constant", weight_decay=0.1, device="cpu", param_groups=param_groups
    )
    trainer.prepare(model, _DecoderOnlyAfterTheFirstStep(), data_batch_size=4, num_examples=8)
    x = torch.rand(4, *model.image_shape).round()
    assert trainer.train_step([x], 0)[3]
    after_first = {name: p.detach().clone() for name, p in model.named_parameters()}
    assert trainer.train_step([x], 1)[3]
    encoder = [n for n, p in model.named_parameters() if p.grad is None]
    assert encoder and all(n.startswith("encoder") for n in encoder)
    for name, p in model.named_parameters():
        assert torch.equal(p.detach(), after_first[name]) == (name in encoder), name


def test_the_trainers_ema_warms_up_with_the_steps():
    """A per-group EMA with warm-up, through the trainer's step: shadow_t = d_t shadow + (1 - d_t) weights_t with
    d_t = min(decay, (1 + t) / (10 + t)), by hand from the weights after each step; it averages the group's weights
    (``decoder.*``) and no others."""
    torch.manual_seed(0)
    model = vaezoo.create("vae-mnist", latent_dim=2, hidden_channels=2, hidden_units=8)
    groups = [{"params": "decoder.*", "optimizer": "adam", "lr": 0.01, "ema_decay": 0.9, "ema_warmup": True}]
    trainer = make_trainer(max_steps=3, lr=0.01, lr_schedule="constant", device="cpu", param_groups=groups)
    trainer.prepare(model, ELBO(), data_batch_size=4, num_examples=8)
    shadow = {name: p.detach().clone().double() for name, p in model.named_parameters() if name.startswith("decoder.")}
    assert len(shadow) == 8 and trainer.ema.shadow.keys() == shadow.keys()
    x = torch.rand(4, *model.image_shape).round()
    for step in range(3):
        assert trainer.train_step([x], step)[3]
        decay = min(0.9, (1 + step) / (10 + step))
        for name, p in model.named_parameters():
            if name in shadow:
                shadow[name] = decay * shadow[name] + (1 - decay) * p.detach().double()
    for name in shadow:
        torch.testing.assert_close(trainer.ema.shadow[name].double(), shadow[name], rtol=1e-6, atol=1e-7, msg=name)


def _kl_coeffs(run_dir):
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["kl_coeff"] for r in records if "kl_coeff" in r}


def test_nvae_kl_warmup_coefficient_at_each_step_of_a_run(tmp_path):
    """NVAE's schedule over a 10-step run (T = 10): anneal portion 0.5, constant portion 0.2, minimum 0.05. The record
    of step s (after s updates) holds the coefficient of update index i = s - 1."""
    torch.manual_seed(0)
    model = vaezoo.create("test-nvae")
    objective = vaezoo.build(
        {"class_path": "NVAEObjective", "init_args": {"kl_anneal_portion": 0.5, "kl_const_portion": 0.2,
                                                      "kl_const_coeff": 0.05}},
        kind="objective",
    )  # fmt: skip
    data = RandomImages(image_shape=(1, 8, 8), num_examples=16, batch_size=4, binary=True)
    trainer = make_trainer(
        max_steps=10, checkpoint_every=0, log_every=1, progress=False, tensorboard=False, device="cpu"
    )
    trainer.fit(model, objective, data, tmp_path / "run")
    T = 10
    expected = {s: max(min((s - 1 - 0.2 * T) / (0.5 * T), 1.0), 0.05) for s in range(1, 11)}
    assert expected[1] == 0.05 and expected[4] == pytest.approx(0.2) and expected[8] == 1.0  # the three phases
    got = _kl_coeffs(tmp_path / "run")
    assert got.keys() == expected.keys()
    for s in expected:
        assert got[s] == pytest.approx(expected[s], abs=1e-12), s


def test_linear_kl_warmup_coefficient_at_each_step_of_a_run(tmp_path):
    """The generic ELBO: ``beta * min(1, i / warmup)`` at update index i, with beta 0.8 and a 4-step warm-up."""
    torch.manual_seed(0)
    model = vaezoo.create("vae-mnist", latent_dim=2, hidden_channels=2, hidden_units=8)
    data = RandomImages(image_shape=(1, 28, 28), num_examples=16, batch_size=4, binary=True)
    trainer = make_trainer(
        max_steps=6, checkpoint_every=0, log_every=1, progress=False, tensorboard=False, device="cpu"
    )
    trainer.fit(model, ELBO(beta=0.8, kl_warmup_steps=4), data, tmp_path / "run")
    got = _kl_coeffs(tmp_path / "run")
    assert got == pytest.approx({1: 0.0, 2: 0.2, 3: 0.4, 4: 0.6, 5: 0.8, 6: 0.8}, abs=1e-12)
    assert math.isclose(got[3], 0.8 * 2 / 4)
