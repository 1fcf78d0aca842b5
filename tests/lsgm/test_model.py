"""A HierarchicalVAE with LSGM's score prior: identity at mixing 0, gradients kept apart, no importance weighting
of the training estimate, saved and loaded like every model, and resumable bitwise."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from by_hand import evaluation_by_hand, iw_log_likelihoods, official_adam, official_adamax
from trainers import make_trainer

import vaezoo
from vaezoo.evaluation.metrics import iw_log_likelihood

SCORE_PRIOR = {
    "class_path": "ScorePrior",
    "init_args": {
        "network": {"class_path": "LatentScoreNetwork", "init_args": {"hidden": 8, "num_blocks": 1, "embedding": 8}},
        "ode_rtol": 1e-4,
        "ode_atol": 1e-4,
        "sampler_steps": 20,
    },
}


def _model(**prior_args):
    spec = copy.deepcopy(vaezoo.create("test-nvae").config)
    joint = copy.deepcopy(SCORE_PRIOR)
    joint["init_args"].update(prior_args)
    spec["init_args"]["joint_prior"] = joint
    torch.manual_seed(0)
    return vaezoo.build(spec)


def test_mixing_zero_gives_the_own_priors_bound_and_samples():
    model = _model(mixing_logit_init=-math.inf).eval()
    torch.nn.init.normal_(model.joint_prior.network.conv_out.weight)  # would change everything if mixed in
    x = torch.rand(2, 1, 8, 8).round()
    noise = [torch.randn(s) for s in model.latent_shapes(2)]
    with torch.no_grad():
        out = model(x, noise=noise)
        with model.own_priors():
            own = model(x, noise=noise)
            own_sample = model.sample_params(2, noise=noise)
        sample = model.sample_params(2, noise=noise, sampler="ode")
    torch.testing.assert_close(out.log_p, own.log_p, rtol=0, atol=1e-3)
    torch.testing.assert_close(out.nelbo, own.log_q - own.log_p + own.recon, rtol=0, atol=1e-3)
    torch.testing.assert_close(sample, own_sample, rtol=0, atol=1e-3)
    assert model.sample_report()["function_evaluations"] > 0
    assert set(model.samplers()) == {"ode", "euler_maruyama"} and model.evaluation_protocol()["max_k"] == 10


def test_the_training_estimate_trains_no_prior_and_is_kept_out_of_importance_weighting():
    model = _model(mixing_logit_init=0.0).train()
    x = torch.rand(2, 1, 8, 8).round()
    out = model(x)
    assert out.extras["log_p_exact"] is False
    out.nelbo.mean().backward()
    prior_grads = [p.grad for p in model.joint_prior.parameters()]
    assert all(g is None for g in prior_grads)  # the VAE's term reaches the encoder and decoder only
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for n, p in model.named_parameters() if "posteriors" in n)
    loss, metrics = model.joint_prior.loss(torch.cat(out.extras["prior_noise"], 1))
    loss.backward()
    assert all(p.grad is not None for p in model.joint_prior.parameters())
    assert "prior_ce" in metrics
    with pytest.raises(ValueError, match="only in expectation"):
        iw_log_likelihood(model, x, k=2)
    model.eval()
    with torch.no_grad():
        assert torch.isfinite(iw_log_likelihood(model, x, k=2)).all()  # the ODE value, in eval mode
    # its value where it is known: at mixing 0 the score prior is N(0, I), so the estimate through the ODE is the one
    # with the groups' own Normal priors, log (1/k sum_j p(x, z_j) / q(z_j | x)) by hand, one pass per sample
    draws = [[torch.randn(s) for s in model.latent_shapes(2)] for _ in range(3)]
    with torch.no_grad():
        model.joint_prior.mixing_logit.fill_(-math.inf)
        model.joint_prior.ode_rtol = model.joint_prior.ode_atol = 0.1  # the drift is 0: any tolerance is exact
        torch.nn.init.normal_(model.joint_prior.network.conv_out.weight)  # would change everything if mixed in
        estimate = iw_log_likelihood(model, x, k=3, noise=draws)
        assert model.joint_prior.last_log_prob_info["function_evaluations"] > 0  # through the ODE
        with model.own_priors():
            by_hand = iw_log_likelihoods(model, x, draws)
    torch.testing.assert_close(estimate.double(), by_hand, rtol=0, atol=2e-5)


def test_saved_and_loaded_like_every_model(tmp_path):
    model = _model(mixing_logit_init=-1.0, eval_max_k=4).eval()
    from vaezoo.hub import save_pretrained

    folder = save_pretrained(model, tmp_path / "lsgm")
    loaded = vaezoo.load(f"local-dir:{folder}")
    assert loaded.config["init_args"]["joint_prior"]["class_path"] == "ScorePrior"
    # the recipe's eval_max_k is the limit the loaded model's protocol gives `vaezoo evaluate` (which lowers --k to it)
    assert loaded.evaluation_protocol()["max_k"] == 4
    for key, value in model.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key
    x = torch.rand(2, 1, 8, 8).round()
    noise = [torch.randn(s) for s in model.latent_shapes(2)]
    torch.manual_seed(3)
    with torch.no_grad():
        a = model(x, noise=noise).nelbo
    torch.manual_seed(3)
    with torch.no_grad():
        b = loaded(x, noise=noise).nelbo
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_prior_stage_training_resumes_bitwise(tmp_path):
    from vaezoo_datasets.random_images import RandomImages
    from vaezoo_lsgm import ScorePriorObjective

    from vaezoo.hub import save_pretrained
    from vaezoo.training.checkpoint import list_checkpoints, load_checkpoint

    torch.manual_seed(0)
    nvae = vaezoo.create("test-nvae")
    with torch.no_grad():  # unlike the freshly seeded models below: only init_from can make them equal
        for parameter in nvae.parameters():
            parameter.add_(0.01 * torch.randn_like(parameter))
    base = save_pretrained(nvae, tmp_path / "nvae")
    data = RandomImages(image_shape=[1, 8, 8], num_examples=32, batch_size=8, binary=True)
    groups = [{"params": "joint_prior.*", "optimizer": "adam", "lr": 1e-3, "ema_decay": 0.9}]
    # a constant learning rate: a run stopped at step 2 has the schedule of the one that goes on to 4
    common = dict(lr=1e-3, lr_schedule="constant", checkpoint_every=2, keep_last=5, log_every=1, progress=False)
    common.update(tensorboard=False, param_groups=groups, num_samples=4)

    def run(run_dir, max_steps, resume=False):
        model = _model()
        trainer = make_trainer(max_steps=max_steps, init_from=str(base), **common)
        trainer.fit(model, ScorePriorObjective(stage="prior"), data, run_dir, resume=resume)
        return model

    full = run(tmp_path / "full", 4)
    run(tmp_path / "part", 2)
    part = run(tmp_path / "part", 4, resume=True)
    for key, value in full.state_dict().items():
        assert torch.equal(value, part.state_dict()[key]), key
    a = load_checkpoint(list_checkpoints(tmp_path / "full" / "checkpoints")[-1][1])
    b = load_checkpoint(list_checkpoints(tmp_path / "part" / "checkpoints")[-1][1])
    assert a["ema"].keys() == b["ema"].keys() and all(k.startswith("joint_prior.") for k in a["ema"])
    for key, value in a["ema"].items():
        assert torch.equal(value, b["ema"][key]), key
    # the frozen VAE did not move: its weights are the saved model's
    for key, value in nvae.state_dict().items():
        assert torch.equal(value, full.state_dict()[key]), key


def test_prior_stage_freezes_the_vae_for_its_forward_only():
    """Stage 1 runs the VAE in eval mode (BatchNorm statistics unchanged) with the prior training, and leaves every
    module in the mode it found it in."""
    from vaezoo_lsgm.objective import ScorePriorObjective

    model = _model()
    model.train()
    statistics = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    x = torch.bernoulli(torch.full((3, *model.image_shape), 0.5))
    seen = {}
    prior, loss_of = model.joint_prior, model.joint_prior.loss

    def spy(*args, **kwargs):  # the prior's mode when its loss is computed, and the VAE's
        seen.update(prior=prior.training, vae=model.training)
        return loss_of(*args, **kwargs)

    prior.loss = spy
    loss, _ = ScorePriorObjective(stage="prior")(model, x, step=0)
    del prior.loss
    assert torch.isfinite(loss) and loss.requires_grad and seen == {"prior": True, "vae": False}
    assert all(
        torch.equal(model.state_dict()[k], v) for k, v in statistics.items()
    )  # eval mode: BN kept its statistics
    assert all(m.training for m in model.modules())  # modes restored
    model.eval()
    ScorePriorObjective(stage="prior")(model, x, step=0)
    assert not any(m.training for m in model.modules())


def test_fit_reports_the_bound_with_the_priors_the_score_prior_replaces(tmp_path, capsys):
    """``vaezoo fit`` of a model with a joint prior prints, and writes to results.json, both test bounds: the model's
    own and the one with its groups' own priors (what stage 1 must beat)."""
    import json

    import yaml

    from vaezoo.cli import main

    spec = copy.deepcopy(vaezoo.create("test-nvae").config)
    spec["init_args"]["joint_prior"] = copy.deepcopy(SCORE_PRIOR)
    recipe = {
        "model": spec,
        "objective": {"class_path": "ScorePriorObjective", "init_args": {"stage": "prior"}},
        "data": {
            "class_path": "RandomImages",
            "init_args": {"image_shape": [1, 8, 8], "num_examples": 32, "batch_size": 8, "binary": True},
        },
        "trainer": {
            "max_steps": 2,
            "device": "cpu",
            "optimizer": {"lr": 1e-3},
            "evaluation": {"k": 1},
            "logging": {"progress": False, "tensorboard": False},
        },  # fmt: skip
        "seed": 0,
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    assert main(["fit", str(path), "--run_dir", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert "with the priors it replaces: test ELBO" in out
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    own, joint = results["reference_priors"], results
    assert own["num_examples"] == joint["num_examples"] == 32
    # both bounds are the documented protocol computed by hand: the model's (log p of the top scale by the ODE) and
    # the one with its groups' own priors
    model = vaezoo.load(tmp_path / "run" / "model")
    dataset = vaezoo.build(recipe["data"], kind="dataset").test_dataset()
    elbo, iw_nll = evaluation_by_hand(model, dataset, k=1, seed=0)
    with model.own_priors():
        own_elbo, own_iw_nll = evaluation_by_hand(model, dataset, k=1, seed=0)
    assert joint["elbo_nats"] == pytest.approx(elbo, rel=1e-4)  # the ODE's tolerance
    assert joint["iw_nll_nats"] == pytest.approx(iw_nll, rel=1e-4)
    assert own["elbo_nats"] == pytest.approx(own_elbo, rel=1e-6)
    assert own["iw_nll_nats"] == pytest.approx(own_iw_nll, rel=1e-6)
    assert abs(elbo - own_elbo) > 1e-3  # the score prior's log p is not the own priors'
    # ... paired: the same posterior noise, the difference of their means with its standard error
    assert "paired difference of the elbo, model - replaced" in out
    paired = results["paired_difference"]["elbo"]
    assert paired["n"] == own["num_examples"] and paired["stderr"] > 0
    assert abs(paired["mean"] - (joint["elbo_nats"] - own["elbo_nats"])) < 1e-6


def test_the_vaes_regularisers_leave_the_score_network_to_its_own():
    """The VAE objective's spectral and BatchNorm regularisers cover the VAE's layers only; the score network has
    its own regulariser and weight (default off)."""
    from vaezoo_lsgm import ScorePriorObjective
    from vaezoo_nvae.objective import NVAEObjective
    from vaezoo_nvae.regularizers import BatchNormScaleRegularizer, SpectralRegularizer

    model = _model(mixing_logit_init=0.0).train()
    vae_convs = {
        id(m) for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d) and not n.startswith("joint_prior.")
    }
    assert any(isinstance(m, torch.nn.Conv2d) for m in model.joint_prior.modules())
    spectral = SpectralRegularizer()
    covered = {id(layer) for layers in spectral.conv_groups(model).values() for layer in layers}
    assert covered == vae_convs
    (spectral(model) + BatchNormScaleRegularizer()(model)).backward()
    assert all(p.grad is None for p in model.joint_prior.parameters())

    # the score network's own regulariser: the sum of the largest singular values of its convs (by an SVD), weighted
    x = torch.bernoulli(torch.full((2, *model.image_shape), 0.5))
    vae_objective = dict(regularizers=[], kl_anneal_portion=1e-4, kl_const_portion=1e-4, kl_const_coeff=1e-4)
    losses = {}
    for weight in (0.0, 0.5):
        regularizers = [SpectralRegularizer(num_power_iterations=100)] if weight else None
        objective = ScorePriorObjective(
            stage="joint",
            vae_objective=NVAEObjective(**vae_objective),
            prior_regularizers=regularizers,
            prior_regularization_weight=weight,
        )
        objective.set_total_steps(100)
        torch.manual_seed(1)
        losses[weight], metrics = objective(model, x, step=10)
    singular = sum(
        float(torch.linalg.matrix_norm(m.weight.detach().flatten(1), ord=2))
        for m in model.joint_prior.modules()
        if isinstance(m, torch.nn.Conv2d)
    )
    assert abs(float(metrics["prior_reg/SpectralRegularizer"]) - singular) < 1e-3 * singular
    assert abs(float((losses[0.5] - losses[0.0]).detach()) - 0.5 * singular) < 1e-3 * singular + 1e-4
    assert ScorePriorObjective(stage="prior").prior_regularization_weight == 0.0  # default off


def test_joint_stage_trains_the_vae_and_the_score_prior():
    """``stage: joint`` through the trainer with the recipe's layout (the VAE on Adamax, ``joint_prior.*`` on its own
    Adam): two steps move every part, the encoder and decoder by the VAE's loss and the score network by its own,
    each by its published update rule."""
    from vaezoo_lsgm.objective import ScorePriorObjective
    from vaezoo_nvae.objective import NVAEObjective

    model = _model(mixing_logit_init=0.0)
    vae_objective = NVAEObjective(regularizers=[], kl_balance=False, kl_anneal_portion=1e-4, kl_const_portion=1e-4)
    objective = ScorePriorObjective(stage="joint", vae_objective=vae_objective)
    prior_group = {"params": "joint_prior.*", "optimizer": "adam", "lr": 3e-3, "weight_decay": 0.0, "eps": 1e-8}
    trainer = make_trainer(max_steps=2, lr=1e-2, weight_decay=3e-4, lr_schedule="constant", device="cpu",
                      param_groups=[prior_group])  # fmt: skip
    trainer.prepare(model, objective, data_batch_size=2, num_examples=4)
    x = torch.rand(2, *model.image_shape).round()
    states: dict[str, dict] = {name: {} for name, _ in model.named_parameters()}
    start = {name: p.detach().clone() for name, p in model.named_parameters()}
    for step in range(2):
        before = {name: p.detach().clone() for name, p in model.named_parameters()}
        assert trainer.train_step([x], step)[3]
        for name, p in model.named_parameters():
            prior = name.startswith("joint_prior.")
            rule, settings = (official_adam, dict(lr=3e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)) if prior else (
                official_adamax, dict(lr=1e-2, betas=(0.9, 0.999), eps=1e-3, weight_decay=3e-4))  # fmt: skip
            expected = rule(before[name], p.grad, states[name], **settings)
            torch.testing.assert_close(p.detach().double(), expected, rtol=1e-5, atol=1e-7, msg=(step, name))
    moved = {name for name, p in model.named_parameters() if not torch.equal(p.detach(), start[name])}
    network = {n for n, _ in model.named_parameters() if n.startswith("joint_prior.network.")}
    encoder = {n for n, _ in model.named_parameters() if n.startswith(("encoder_tower.", "posteriors."))}
    decoder = {n for n, _ in model.named_parameters() if n.startswith(("decoder_tower.", "priors."))}
    assert network and encoder and decoder and "joint_prior.mixing_logit" in moved
    assert len(network & moved) > 0.9 * len(network)  # the score network trains (a few zero-gradient exceptions)
    assert len(encoder & moved) > 0.9 * len(encoder) and len(decoder & moved) > 0.5 * len(decoder)
