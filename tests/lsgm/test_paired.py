"""Paired evaluation of a score prior against the priors it replaces: at mixing 0 the score prior is N(0, I), so the
two bounds of the same examples with the same posterior noise are equal to float precision, whatever the
Hutchinson probes draw; ``vaezoo evaluate A --compare B`` and ``fit`` report the paired difference."""

from __future__ import annotations

import copy
import json
import math

import torch
from torch.utils.data import TensorDataset

import vaezoo
from vaezoo.evaluation import evaluate, paired_difference

SCORE_PRIOR = {
    "class_path": "ScorePrior",
    "init_args": {
        "network": {"class_path": "LatentScoreNetwork", "init_args": {"hidden": 8, "num_blocks": 1, "embedding": 8}},
        "ode_rtol": 1e-4,
        "ode_atol": 1e-4,
        "mixing_logit_init": -math.inf,
    },
}


def _models():
    torch.manual_seed(0)
    plain = vaezoo.create("test-nvae")
    spec = copy.deepcopy(plain.config)
    spec["init_args"]["joint_prior"] = copy.deepcopy(SCORE_PRIOR)
    scored = vaezoo.build(spec)
    missing = scored.load_state_dict(plain.state_dict(), strict=False).missing_keys
    assert missing and all(k.startswith("joint_prior.") for k in missing)
    # a network that would change every value if it were mixed in
    torch.nn.init.normal_(scored.joint_prior.network.conv_out.weight)
    return plain.eval(), scored.eval()


def test_at_mixing_zero_the_two_bounds_are_equal_to_float_precision():
    _, model = _models()
    data = TensorDataset(torch.bernoulli(torch.full((12, *model.image_shape), 0.5, dtype=torch.float32)))
    joint = evaluate(model, data, k=2, batch_size=5, seed=3)
    with model.own_priors():
        own = evaluate(model, data, k=2, batch_size=5, seed=3)
    for name in ("elbo", "iw_log_likelihood"):
        torch.testing.assert_close(joint.per_example[name], own.per_example[name], rtol=0, atol=1e-4)
        paired = paired_difference(joint.per_example[name], own.per_example[name])
        assert abs(paired.mean) < 1e-5 and paired.stderr < 1e-5, (name, paired)


def test_evaluate_compare_reports_both_bounds_and_the_paired_difference(tmp_path, capsys):
    from vaezoo.cli import main
    from vaezoo.hub import save_pretrained

    plain, scored = _models()
    a, b = save_pretrained(scored, tmp_path / "scored"), save_pretrained(plain, tmp_path / "plain")
    data = json.dumps({"class_path": "RandomImages", "init_args": {"image_shape": [1, 8, 8], "num_examples": 20,
                                                                 "batch_size": 10, "binary": True}})  # fmt: skip
    out = tmp_path / "compare.json"
    args = ["evaluate", str(a), "--data", data, "--k", "0", "--batch_size", "10", "--channels_last", "false"]
    assert main([*args, "--compare", str(b), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "paired difference of the elbo, model - compared" in printed
    report = json.loads(out.read_text())
    paired = report["paired_difference"]["elbo"]
    # the score prior at mixing 0 is the plain NVAE's N(0, I) top prior: equal bounds, the same posterior noise
    assert report["compare"]["same_posterior_noise"] is True and paired["n"] == report["num_examples"]
    assert abs(report["elbo_nats"] - report["compare"]["elbo_nats"]) < 1e-5
    assert abs(paired["mean"]) < 1e-5 and paired["stderr"] < 1e-5

    # a model of other images is refused with one line, exit status 2, and nothing is written
    other = save_pretrained(vaezoo.create("test-nvae", image_shape=[1, 16, 16]), tmp_path / "other")
    refused = tmp_path / "refused.json"
    assert main([*args, "--compare", str(other), "--out", str(refused)]) == 2
    assert "--compare" in capsys.readouterr().err and not refused.exists()
