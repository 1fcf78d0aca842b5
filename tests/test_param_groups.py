"""``trainer.optimizer.param_groups``: what a wrong group says (one line naming the group and the problem), and the gradients
each group clips apart, by hand."""

from __future__ import annotations

import math

import pytest
import torch
from trainers import make_trainer

import vaezoo
from vaezoo.components import ELBO
from vaezoo.errors import VaezooError

KEYS = "['betas', 'ema_decay', 'ema_warmup', 'eps', 'grad_clip', 'lr', 'optimizer', 'params', 'weight_decay']"

REFUSED = [
    (
        [{"params": "decoder.*", "weight_decy": 0.1}],  # a misspelt setting is not silently left out
        f"trainer.optimizer.param_groups[0] needs 'params' (a name pattern) and takes only {KEYS}; got ['params', 'weight_decy']",
    ),
    (
        [{"params": "decoder.*"}, {"lr": 0.1}],
        f"trainer.optimizer.param_groups[1] needs 'params' (a name pattern) and takes only {KEYS}; got ['lr']",
    ),
    (
        [{"params": "*", "optimizer": "sgd"}],
        "trainer.optimizer.param_groups[0].optimizer must be one of ['adam', 'adamax']",
    ),
    ([{"params": "*", "ema_decay": 0.0}], "trainer.optimizer.param_groups[0].ema_decay must be in (0, 1), got 0.0"),
    ([{"params": "*", "ema_decay": 1.0}], "trainer.optimizer.param_groups[0].ema_decay must be in (0, 1), got 1.0"),
    ([{"params": "*", "ema_decay": 1.5}], "trainer.optimizer.param_groups[0].ema_decay must be in (0, 1), got 1.5"),
    ([{"params": "*", "grad_clip": -1.0}], "trainer.optimizer.param_groups[0].grad_clip must be positive, got -1.0"),
]


@pytest.mark.parametrize(
    ("groups", "message"),
    REFUSED,
    ids=["misspelt-key", "no-params", "other-optimizer", "ema-0", "ema-1", "ema-1.5", "clip"],
)
def test_a_wrong_param_group_is_refused_with_one_line_naming_it(groups, message):
    with pytest.raises(VaezooError) as raised:
        make_trainer(param_groups=groups)
    assert str(raised.value) == message


@pytest.mark.parametrize(
    ("groups", "message"),
    [
        (
            [{"params": "decoder.*"}, {"params": "prior.*"}],
            "trainer.optimizer.param_groups[1]: no parameter matches 'prior.*'",
        ),
        (
            [{"params": "decoder.*", "ema_decay": 0.9}, {"params": "encoder.*", "ema_decay": 0.99}],
            "trainer.optimizer.param_groups: only one group may have an ema_decay",
        ),
    ],
    ids=["matches-nothing", "two-emas"],
)
def test_a_param_group_the_model_cannot_take_is_refused_with_one_line(groups, message):
    model = vaezoo.create("vae-mnist", latent_dim=2, hidden_channels=2, hidden_units=8)
    trainer = make_trainer(device="cpu", param_groups=groups)
    with pytest.raises(VaezooError) as raised:
        trainer.prepare(model, ELBO(), data_batch_size=4, num_examples=8)
    assert str(raised.value) == message


class _Linear(torch.nn.Module):
    """loss = sum_m <w_m, c_m>: each weight's gradient is the constant ``c_m`` given."""

    def __init__(self, gradients: dict[str, torch.Tensor]) -> None:
        super().__init__()
        self.gradients = gradients

    def set_total_steps(self, total_steps):
        pass

    def forward(self, model, x, step):
        loss = sum((model[name].weight * c).sum() for name, c in self.gradients.items())
        return loss, {}


def test_each_group_clips_its_own_gradients_and_frozen_weights_are_left_out():
    """Through the trainer's step: a group with a ``grad_clip`` clips its parameters to it, one without clips them
    apart to the trainer's ``grad_clip``, the parameters of no group to the trainer's too; a frozen weight (first in
    the model) has no gradient and stays. The reported norm is that of all gradients before clipping."""
    model = torch.nn.ModuleDict(
        {name: torch.nn.Linear(4, 1, bias=False) for name in ("frozen", "vae", "prior", "extra")}
    )
    model["frozen"].weight.requires_grad_(False)
    frozen = model["frozen"].weight.detach().clone()
    groups = [{"params": "prior.*", "optimizer": "adam", "grad_clip": 0.1}, {"params": "extra.*", "lr": 0.01}]
    trainer = make_trainer(grad_clip=1.0, lr=0.02, weight_decay=0.0, lr_schedule="constant", device="cpu",
                      param_groups=groups)  # fmt: skip
    given = {
        "vae": torch.tensor([[3.0, 4.0, 0.0, 0.0]]),  # norm 5: clipped to the trainer's 1
        "prior": torch.tensor([[0.0, 0.0, 0.6, 0.8]]),  # norm 1: clipped to its group's 0.1
        "extra": torch.tensor([[0.0, 1.2, 1.6, 0.0]]),  # norm 2: clipped to the trainer's 1, apart from the vae's
    }
    trainer.prepare(model, _Linear(given), data_batch_size=1, num_examples=1)
    _, grad_norm, _, applied = trainer.train_step([torch.zeros(1, 4)], 0)
    assert applied and float(grad_norm) == pytest.approx(math.sqrt(25 + 1 + 4), rel=1e-6)
    for name, clip in (("vae", 1.0), ("prior", 0.1), ("extra", 1.0)):
        expected = given[name] * clip / given[name].norm()
        torch.testing.assert_close(model[name].weight.grad, expected, rtol=1e-5, atol=1e-7, msg=name)
    assert model["frozen"].weight.grad is None and torch.equal(model["frozen"].weight, frozen)


def test_vaezoo_fit_refuses_a_group_that_matches_nothing_before_writing_anything(tmp_path, capsys):
    from vaezoo.cli import main

    run = tmp_path / "run"
    code = main(["fit", "recipes/vae_mnist.yaml", "--trainer.optimizer.param_groups", '[{params: "prior.*"}]',
                 "--run_dir", str(run)])  # fmt: skip
    assert code == 2
    assert capsys.readouterr().err.strip() == "error: trainer.optimizer.param_groups[0]: no parameter matches 'prior.*'"
    assert not run.exists()  # no config.yaml or provenance.json left behind
