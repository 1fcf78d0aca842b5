"""Known answers for the zoo's components: the context-conditioned IAF, the Ladder VAE's precision weighting,
VDVAE's blocks, gradient skipping, and the ELBO and IWAE objectives."""

from __future__ import annotations

import json
import math

import pytest
import torch
from trainers import make_trainer
from vaezoo_baselines import IWAE, ConvVAE
from vaezoo_datasets import BundledMNIST
from vaezoo_iaf import ContextualIAF, ContextualIAFStep
from vaezoo_ladder import PrecisionWeightedPosterior, precision_weighted
from vaezoo_vdvae import BottleneckBlock, BottleneckNormalPrior, ZInjectionCombiner

import vaezoo
from vaezoo.components import ELBO, GradientSkipping
from vaezoo.distributions import DiagonalNormal


# ---------------------------------------------------------------------------------------------
# Context-conditioned IAF
# ---------------------------------------------------------------------------------------------
def _autoregressive_order(c: int, h: int, w: int, mirror: bool) -> torch.Tensor:
    """Position of each element of a ``[C, H, W]`` tensor in raster-then-channel order (raster reversed if mirror)."""
    rows = torch.arange(h).view(1, h, 1).expand(c, h, w)
    cols = torch.arange(w).view(1, 1, w).expand(c, h, w)
    chans = torch.arange(c).view(c, 1, 1).expand(c, h, w)
    if mirror:
        rows, cols = h - 1 - rows, w - 1 - cols
    return ((rows * w + cols) * c + chans).flatten()


def _strengthen(module: torch.nn.Module) -> None:
    """Scale every masked weight up so that the test sees every connection the masks allow."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith("log_weight_norm"):
                p.add_(1.5)


@pytest.mark.parametrize("mirror", [False, True])
def test_iaf_step_is_autoregressive_with_the_gate_on_the_diagonal(mirror):
    torch.manual_seed(0)
    c, h, w, ctx = 2, 3, 3, 3
    step = ContextualIAFStep(c, ctx, hidden_multiplier=2, mirror=mirror)
    _strengthen(step)
    z, context = torch.randn(1, c, h, w), torch.randn(1, ctx, h, w)
    jac = torch.autograd.functional.jacobian(lambda t: step(t.view(1, c, h, w), context)[0].flatten(), z.flatten())
    order = _autoregressive_order(c, h, w, mirror).argsort()
    permuted = jac[order][:, order]
    assert torch.count_nonzero(torch.triu(permuted, diagonal=1)) == 0  # output i never reads z_j, j after i
    assert torch.count_nonzero(torch.tril(permuted, diagonal=-1)) > 0.5 * (c * h * w) * (c * h * w - 1) / 2
    _, log_det = step(z, context)
    torch.testing.assert_close(permuted.diagonal(), log_det.flatten()[order].exp())  # sigma_i on the diagonal


def test_iaf_log_det_is_the_log_abs_determinant_and_the_context_is_used():
    torch.manual_seed(0)
    c, h, w, ctx = 2, 3, 3, 4
    flow = ContextualIAF(c, ctx, num_steps=2, hidden_multiplier=2)
    _strengthen(flow)
    z, context = torch.randn(1, c, h, w), torch.randn(1, ctx, h, w)
    z_out, log_det = flow(z, context)
    assert log_det.shape == z.shape and (log_det < 0).all()  # every step contracts by sigma < 1
    jac = torch.autograd.functional.jacobian(lambda t: flow(t.view(1, c, h, w), context)[0].flatten(), z.flatten())
    sign, log_abs_det = torch.linalg.slogdet(jac.double())
    assert sign > 0
    torch.testing.assert_close(log_det.sum().double(), log_abs_det, rtol=1e-5, atol=1e-5)
    # two steps in opposite orders: the composite is no longer triangular in either order
    assert torch.count_nonzero(torch.triu(jac, diagonal=1)) > 0 and torch.count_nonzero(torch.tril(jac, -1)) > 0
    # the context h conditions the flow
    other, other_log_det = flow(z, context + 1.0)
    assert not torch.allclose(other, z_out) and not torch.allclose(other_log_det, log_det)
    with pytest.raises(ValueError, match="needs a context"):
        flow(z)


def test_iaf_vae_uses_the_log_det_in_its_kl():
    """With flows the KL of a group is the single-sample log q(z_K) - log p(z_K), log q including -log|det|."""
    torch.manual_seed(0)
    model = vaezoo.create("test-iaf-vae").eval()
    x = torch.bernoulli(torch.full((3, 1, 8, 8), 0.5))
    noise = [torch.randn(s) for s in model.latent_shapes(3)]
    with torch.no_grad():
        out = model(x, noise=noise)
        for flow in model.flows:  # a flow that does nothing changes log q by exactly its log-det
            for step in flow.steps:
                step.gate_bias = 1e4
        identity_out = model(x, noise=noise)
    torch.testing.assert_close(out.log_iw, -out.recon - out.kl.sum(0))
    assert out.kl.shape == (model.num_groups, 3) and not torch.allclose(out.kl, identity_out.kl)


# ---------------------------------------------------------------------------------------------
# Ladder VAE
# ---------------------------------------------------------------------------------------------
def test_precision_weighted_posterior_matches_the_formula():
    torch.manual_seed(0)
    posterior = PrecisionWeightedPosterior(4, 3)
    features = torch.randn(2, 4, 5, 5)
    prior = DiagonalNormal(torch.randn(2, 3, 5, 5), 0.5 * torch.randn(2, 3, 5, 5))
    q = posterior(features, prior)
    mu_hat, log_sigma_hat = posterior.estimate(features)
    precision_hat, precision_prior = torch.exp(-2 * log_sigma_hat), prior.sigma**-2
    variance = 1.0 / (precision_hat + precision_prior)
    torch.testing.assert_close(q.sigma**2, variance)
    torch.testing.assert_close(q.mu, (mu_hat * precision_hat + prior.mu * precision_prior) * variance)
    # without a prior the bottom-up estimate is the posterior; a very broad prior leaves it (almost) unchanged
    alone = posterior(features, None)
    torch.testing.assert_close(alone.mu, mu_hat)
    broad = posterior(features, DiagonalNormal(prior.mu, torch.full_like(prior.mu, 20.0)))
    torch.testing.assert_close(broad.mu, mu_hat)


def test_precision_weighting_stays_finite_at_extreme_variances():
    mu_hat, mu_p = torch.tensor([1.0, 1.0]), torch.tensor([-1.0, -1.0])
    mu, log_sigma = precision_weighted(mu_hat, torch.tensor([-60.0, 60.0]), mu_p, torch.tensor([60.0, -60.0]))
    assert torch.isfinite(mu).all() and torch.isfinite(log_sigma).all()
    torch.testing.assert_close(mu, torch.tensor([1.0, -1.0]))  # the far more precise estimate wins
    torch.testing.assert_close(log_sigma, torch.tensor([-60.0, -60.0]))


def test_ladder_vae_posterior_sees_only_the_bottom_up_path_and_the_prior():
    torch.manual_seed(0)
    model = vaezoo.create("test-lvae").eval()
    x = torch.bernoulli(torch.full((2, 1, 8, 8), 0.5))
    with torch.no_grad():
        out = model(x)
    for q, p in zip(out.extras["posteriors"], out.extras["priors"], strict=True):
        assert (q.sigma < p.sigma).all()  # a product of Gaussians is more precise than the prior
    assert out.kl.shape == (model.num_groups, 2) and torch.isfinite(out.nelbo).all()


# ---------------------------------------------------------------------------------------------
# VDVAE blocks
# ---------------------------------------------------------------------------------------------
def test_vdvae_output_scaling_and_prior_start():
    torch.manual_seed(0)
    shallow = BottleneckBlock(8, 8, depth=1)
    torch.manual_seed(0)
    deep = BottleneckBlock(8, 8, depth=16)
    torch.testing.assert_close(deep.block.c4.weight, shallow.block.c4.weight / 4)
    torch.testing.assert_close(deep.block.c1.weight, shallow.block.c1.weight)
    torch.manual_seed(0)
    injection = ZInjectionCombiner(8, 8, aux_channels=3, depth=4)
    torch.manual_seed(0)
    torch.testing.assert_close(injection.project.weight, torch.nn.Conv2d(3, 8, 1).weight / 2)
    prior = BottleneckNormalPrior(8, 3)(torch.randn(2, 8, 4, 4), (2, 3, 4, 4))
    assert torch.equal(prior.mu, torch.zeros(2, 3, 4, 4)) and torch.equal(prior.sigma, torch.ones(2, 3, 4, 4))
    x = torch.randn(2, 8, 8, 8)
    assert BottleneckBlock(8, 8, 2)(x).shape == (2, 8, 4, 4) and BottleneckBlock(8, 4, -1)(x).shape == (2, 4, 16, 16)


# ---------------------------------------------------------------------------------------------
# Gradient skipping
# ---------------------------------------------------------------------------------------------
def _tiny_vae() -> ConvVAE:
    torch.manual_seed(0)
    return ConvVAE(image_shape=(1, 8, 8), latent_dim=3, hidden_channels=4, hidden_units=8)


def test_gradient_skipping_drops_the_update_and_counts_it():
    model = _tiny_vae()
    x = torch.bernoulli(torch.full((4, 1, 8, 8), 0.5))
    optimizer = torch.optim.Adamax(model.parameters(), lr=0.1, weight_decay=0.1)
    strict = GradientSkipping(ELBO(), max_grad_norm=1e-6)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    loss, metrics = strict(model, x, step=0)
    loss.backward()
    assert all(p.grad is None for p in model.parameters())
    torch.nn.utils.clip_grad_norm_(model.parameters(), float("inf"))
    optimizer.step()
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # weights unchanged
    assert not optimizer.state  # the optimiser's moments are untouched too
    assert int(metrics["grad_skips"]) == 1 and float(metrics["grad_norm_unclipped"]) > 1e-6

    lenient = GradientSkipping(ELBO(), max_grad_norm=1e9)
    loss, metrics = lenient(model, x, step=0)
    loss.backward()
    norm = torch.nn.utils.get_total_norm([p.grad for p in model.parameters()])
    optimizer.step()
    assert int(metrics["grad_skips"]) == 0 and math.isclose(
        float(metrics["grad_norm_unclipped"]), float(norm), rel_tol=1e-5
    )
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_gradient_skipping_skips_non_finite_gradients():
    model = _tiny_vae()
    x = torch.bernoulli(torch.full((4, 1, 8, 8), 0.5))
    objective = GradientSkipping(ELBO(), max_grad_norm=1e9)
    loss, _ = objective(model, x, step=0)
    (loss * float("nan")).backward()
    assert all(p.grad is None for p in model.parameters()) and int(objective.skipped_updates) == 1


def _trainer_records(run_dir):
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in lines if "loss" in r]


@pytest.mark.parametrize("accumulate", [1, 2])
def test_gradient_skipping_in_the_trainer(tmp_path, accumulate):
    """Through the unchanged trainer: every step skipped leaves the weights exactly as initialised, the skips are
    counted once per step (also with gradient accumulation) and saved with the objective."""
    model = vaezoo.create("test-vdvae", image_shape=[1, 32, 32])
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    objective = GradientSkipping(ELBO(), max_grad_norm=1e-6)
    trainer = make_trainer(max_steps=3, lr=1e-2, accumulate_grad_batches=accumulate, progress=False, log_every=1,
                      checkpoint_every=0, eval_k=0, tensorboard=False, num_samples=4)  # fmt: skip
    summary = trainer.fit(model, objective, BundledMNIST(batch_size=8, pad=2), tmp_path)
    assert summary["skipped_steps"] == 0  # the trainer's own non-finite guard was not involved
    assert [r["grad_skips"] for r in _trainer_records(tmp_path)] == [1, 2, 3]
    assert all(torch.equal(initial[k], v) for k, v in model.state_dict().items())
    assert int(objective.state_dict()["skipped_updates"]) == 3


# ---------------------------------------------------------------------------------------------
# ELBO and IWAE
# ---------------------------------------------------------------------------------------------
def test_elbo_warmup_as_a_portion_of_the_run():
    objective = ELBO(beta=2.0, kl_warmup_portion=0.5)
    with pytest.raises(ValueError, match="run length"):
        objective.kl_coefficient(0)
    objective.set_total_steps(100)
    assert [objective.kl_coefficient(s) for s in (0, 25, 50, 90)] == [0.0, 1.0, 2.0, 2.0]
    assert ELBO(beta=2.0, kl_warmup_steps=10).kl_coefficient(5) == 1.0


def test_elbo_loss_and_metrics_by_their_definition():
    """``mean_B(recon + beta_t sum_groups KL)`` on the given noise, with beta_t = beta min(1, step / warm-up), and its
    metrics; through GradientSkipping too (the step and the noise reach the wrapped objective)."""
    torch.manual_seed(0)
    model = vaezoo.create("test-nvae")  # three latent groups
    x = torch.bernoulli(torch.full((3, 1, 8, 8), 0.5))
    noise = [torch.randn(s) for s in model.latent_shapes(3)]
    out = model(x, noise=noise)
    kl = out.kl.detach()
    coeff = 0.5 * 4 / 10
    expected = {"recon": out.recon.mean(), "kl": kl.sum(0).mean(), "kl_per_group": kl.mean(1),
                "nelbo": (out.recon + kl.sum(0)).mean()}  # fmt: skip
    for objective in (ELBO(beta=0.5, kl_warmup_steps=10), GradientSkipping(ELBO(beta=0.5, kl_warmup_steps=10))):
        loss, metrics = objective(model, x, step=4, noise=noise)
        torch.testing.assert_close(loss, (out.recon + coeff * kl.sum(0)).mean(), rtol=1e-6, atol=1e-5)
        assert metrics["kl_coeff"] == pytest.approx(coeff)
        for name, value in expected.items():
            torch.testing.assert_close(metrics[name], value.detach(), rtol=1e-6, atol=1e-5, msg=name)


def test_elbo_and_gradient_skipping_settings():
    plain = ELBO()
    assert plain.beta == 1.0 and plain.kl_coefficient(0) == 1.0  # no warm-up unless asked for
    one_step = ELBO(kl_warmup_steps=1)
    assert one_step.kl_coefficient(0) == 0.0 and one_step.kl_coefficient(1) == 1.0
    for portion in (0.0, 1.0):
        ELBO(kl_warmup_portion=portion)  # both ends allowed
    for portion in (-0.1, 1.5):
        with pytest.raises(ValueError) as info:
            ELBO(kl_warmup_portion=portion)
        assert str(info.value) == f"kl_warmup_portion must be in [0, 1], got {portion}"
    with pytest.raises(ValueError) as info:
        ELBO(kl_warmup_portion=0.5).kl_coefficient(3)
    assert str(info.value) == "kl_warmup_portion needs the run length: call set_total_steps(T) before training"
    wrapped = GradientSkipping(ELBO(kl_warmup_portion=0.5))
    wrapped.set_total_steps(20)  # told to the wrapper, reaches the wrapped objective
    assert wrapped.total_steps == 20 and wrapped.objective.warmup_steps() == 10.0
    assert wrapped.max_grad_norm == 400.0 and wrapped.skipped_updates.dtype == torch.long
    for bad in (0.0, -1.0):
        with pytest.raises(ValueError) as info:
            GradientSkipping(ELBO(), max_grad_norm=bad)
        assert str(info.value) == f"max_grad_norm must be positive, got {bad}"


def test_a_gradient_norm_at_the_threshold_is_applied():
    """Skipped above ``max_grad_norm`` only: a norm equal to it goes through."""
    model = _tiny_vae()
    x = torch.bernoulli(torch.full((4, 1, 8, 8), 0.5))
    noise = [torch.randn(s) for s in model.latent_shapes(4)]
    probe = GradientSkipping(ELBO(), max_grad_norm=1e9)
    probe(model, x, step=0, noise=noise)[0].backward()
    norm = float(probe.last_grad_norm)
    model.zero_grad()
    at_threshold = GradientSkipping(ELBO(), max_grad_norm=norm)
    at_threshold(model, x, step=0, noise=noise)[0].backward()
    assert float(at_threshold.last_grad_norm) == norm and int(at_threshold.skipped_updates) == 0
    assert all(p.grad is not None for p in model.parameters())


def test_iwae_is_the_k_sample_bound_and_chunking_changes_nothing():
    model = _tiny_vae()
    x = torch.bernoulli(torch.full((3, 1, 8, 8), 0.5))
    k, b = 5, x.shape[0]
    noise = [torch.randn(k * b, 3)]  # sample-major: row j * B + i is sample j of example i
    loss, metrics = IWAE(k=k)(model, x, step=0, noise=noise)
    with torch.no_grad():
        log_w = torch.stack([model(x, noise=[noise[0][j * b : (j + 1) * b]]).log_iw for j in range(k)])
    expected = torch.logsumexp(log_w, 0) - math.log(k)
    torch.testing.assert_close(-loss.detach(), expected.mean())
    torch.testing.assert_close(metrics["iw_bound"], expected.mean())
    assert float(metrics["iw_bound"]) >= float(-metrics["nelbo"])  # Jensen: above the mean ELBO of the samples

    grads = torch.autograd.grad(loss, list(model.parameters()))
    chunked_loss, _ = IWAE(k=k, chunk_size=2)(model, x, step=0, noise=noise)  # chunks of 2, 2, 1 samples
    chunked_grads = torch.autograd.grad(chunked_loss, list(model.parameters()))
    torch.testing.assert_close(chunked_loss, loss)
    for got, want in zip(chunked_grads, grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)

    # k = 1 is the single-sample ELBO estimate (log q - log p in place of the analytic KL)
    one, _ = IWAE(k=1)(model, x, step=0, noise=[noise[0][:b]])
    torch.testing.assert_close(one, -log_w[0].mean())
