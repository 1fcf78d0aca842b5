"""The score prior of the LSGM plugin against closed forms: SDE identities, the ODE log-likelihood and the
denoising cross-entropy with the exact score of a Gaussian latent, and the identity flow at mixing 0."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor
from vaezoo_lsgm.prior import ScorePrior
from vaezoo_lsgm.sdes import VPSDE, GeometricVPSDE, LinearVPSDE

from vaezoo.interfaces import Denoiser

SDE_CASES = {
    "vp": (LinearVPSDE(0.1, 20.0), {"sde": "vp"}),
    "geometric_vp": (GeometricVPSDE(3e-5, 0.999), {"sde": "geometric_vp"}),
}


@pytest.mark.parametrize("name", sorted(SDE_CASES))
def test_sde_kernel_drift_and_diffusion_are_consistent(name):
    sde, _ = SDE_CASES[name]
    t = torch.linspace(1e-3, 1.0, 97, dtype=torch.float64, requires_grad=True)
    var, alpha = sde.var(t), sde.mean_coef(t)
    torch.testing.assert_close(alpha**2 + var, torch.ones_like(var), rtol=0, atol=1e-12)  # variance preserving
    (dvar,) = torch.autograd.grad(var.sum(), t)
    torch.testing.assert_close(dvar, sde.diffusion2(t) * (1 - var), rtol=1e-9, atol=1e-12)
    (dlog_alpha,) = torch.autograd.grad(torch.log(sde.mean_coef(t)).sum(), t)
    torch.testing.assert_close(dlog_alpha, sde.drift_coef(t), rtol=1e-9, atol=1e-12)  # d/dt log alpha = f(t)
    # the inverse of the variance, which importance sampling of t inverts
    t = t.detach()
    torch.testing.assert_close(sde.time_of_var(sde.var(t)), t, rtol=1e-7, atol=1e-9)
    # d/dt log var = g^2 (1 - var) / var: the density of t when log var is uniform (the paper's importance sampling)
    t.requires_grad_(True)
    (dlog,) = torch.autograd.grad(torch.log(sde.var(t)).sum(), t)
    torch.testing.assert_close(dlog, sde.diffusion2(t) * (1 - sde.var(t)) / sde.var(t), rtol=1e-7, atol=1e-9)


def test_sde_kernel_samples_have_its_moments():
    sde = LinearVPSDE()
    torch.manual_seed(0)
    z0 = torch.full((200_000, 1), 1.5, dtype=torch.float64)
    t = torch.full((200_000,), 0.3, dtype=torch.float64)
    zt = sde.sample_kernel(z0, t, torch.randn_like(z0))
    assert abs(float(zt.mean()) - 1.5 * float(sde.mean_coef(t[:1]))) < 0.01
    assert abs(float(zt.var()) - float(sde.var(t[:1]))) < 0.01


class GaussianScore(Denoiser):
    """The exact noise prediction of the diffusion of N(m0, v0 I): ``eps = std_t (z - alpha_t m0) / (alpha_t^2 v0 +
    var_t)``. Needs the prior's SDE, given after construction."""

    def __init__(self, channels: int, m0: float = 0.7, v0: float = 0.3) -> None:
        super().__init__(channels)
        self.m0, self.v0 = m0, v0
        self.sde: VPSDE | None = None
        self.dummy = torch.nn.Parameter(torch.zeros(()))

    def marginal(self, t: Tensor) -> tuple[Tensor, Tensor]:
        alpha, var = self.sde.mean_coef(t), self.sde.var(t)
        return alpha * self.m0, alpha**2 * self.v0 + var

    def forward(self, z: Tensor, t: Tensor) -> Tensor:
        mean, var = (v.view(-1, *([1] * (z.dim() - 1))) for v in self.marginal(t))
        std = self.sde.std(t).view_as(mean)
        return std * (z - mean) / var + 0 * self.dummy


def _gaussian_prior(sde_args: dict, **kwargs) -> ScorePrior:
    # mixing logit 30: sigmoid = 1 in float32, the network's score alone
    prior = ScorePrior(8, network=GaussianScore, mixing_logit_init=30.0, **sde_args, **kwargs)
    prior.network.sde = prior.sde
    return prior


def _normal_log_density(z: Tensor, mean: float, var: float) -> Tensor:
    return (-0.5 * (z - mean) ** 2 / var - 0.5 * math.log(2 * math.pi * var)).flatten(1).sum(1)


@pytest.mark.parametrize("time_eps,ode_eps", [(1e-3, None), (0.1, 1e-3)], ids=["ode_eps=time_eps", "ode_eps=1e-3"])
@pytest.mark.parametrize("name", sorted(SDE_CASES))
def test_ode_log_likelihood_of_a_gaussian_latent_is_its_closed_form(name, time_eps, ode_eps):
    # float64: the Gaussian's own drift subtracts two terms of size beta, up to 1e4 for the geometric SDE; the ODE
    # starts at ode_eps = 1e-3 whatever time_eps (the training's smallest t) is
    prior = _gaussian_prior(
        SDE_CASES[name][1], trace="exact", time_eps=time_eps, ode_eps=ode_eps, ode_rtol=1e-7, ode_atol=1e-7
    ).double()
    torch.manual_seed(0)
    z = 0.7 + 0.6 * torch.randn(4, 8, 1, 1, dtype=torch.float64)
    # the flow of a Gaussian diffusion is affine: it maps N(m_eps, v_eps) onto N(m_1, v_1), and the model then
    # scores z_1 under N(0, I), so its closed form is log N(z_1; 0, I) + D/2 log(v_1 / v_eps)
    (m_eps, m_1), (v_eps, v_1) = (v.tolist() for v in prior.network.marginal(torch.tensor([1e-3, 1.0]).double()))
    z1 = m_1 + (z - m_eps) * math.sqrt(v_1 / v_eps)
    expected = _normal_log_density(z1, 0.0, 1.0) + 4 * math.log(v_1 / v_eps)
    got = prior.log_prob(z)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-4)  # the solver's tolerances (1e-7), over 8 dims
    # ... which is near the Gaussian's own log-density at t = time_eps: N(0, I) is nearly its end (alpha_1^2 is 4e-5
    # for the linear SDE, 1e-3 for the geometric one)
    torch.testing.assert_close(got, _normal_log_density(z, m_eps, v_eps), rtol=0, atol=0.25)
    assert prior.last_log_prob_info["function_evaluations"] > 10
    # Hutchinson's estimate (one Rademacher probe per solve) is unbiased: its mean over many solves agrees
    prior.trace, prior.ode_rtol, prior.ode_atol = "hutchinson", 1e-5, 1e-5
    hutchinson = prior.log_prob(z.repeat(64, 1, 1, 1)).view(64, 4).mean(0)
    torch.testing.assert_close(hutchinson, expected, rtol=0, atol=0.15)


def _cross_entropy_closed_form(prior: ScorePrior, mu_q: float, var_q: float, d: int) -> float:
    """CE(q_eps, p_eps) of the diffused q = N(mu_q, var_q) and the diffused Gaussian prior at t = time_eps."""
    t = torch.tensor([prior.time_eps], dtype=torch.float64)
    alpha, var_t = float(prior.sde.mean_coef(t)), float(prior.sde.var(t))
    mean_p, var_p = (float(v) for v in prior.network.marginal(t))
    mean_q, var_qt = alpha * mu_q, alpha**2 * var_q + var_t
    return d * (0.5 * math.log(2 * math.pi * var_p) + 0.5 * ((mean_q - mean_p) ** 2 + var_qt) / var_p)


@pytest.mark.parametrize("importance_sampling", [True, False], ids=["importance", "uniform"])
@pytest.mark.parametrize("name", sorted(SDE_CASES))
def test_denoising_cross_entropy_matches_the_closed_form_in_expectation(name, importance_sampling):
    # time_eps 0.1: the (1 - time_eps) density of uniform t is a 10% effect here, well above the noise
    prior = _gaussian_prior(SDE_CASES[name][1], time_eps=0.1, importance_sampling=importance_sampling)
    mu_q, var_q, n = -0.4, 0.5, 400_000
    torch.manual_seed(0)
    z0 = mu_q + math.sqrt(var_q) * torch.randn(n, 8, 1, 1, dtype=torch.float64)
    with torch.no_grad():
        estimates = prior.cross_entropy(z0.float().double()).double()
    expected = _cross_entropy_closed_form(prior, mu_q, var_q, 8)
    mean, stderr = float(estimates.mean()), float(estimates.std()) / math.sqrt(n)
    assert abs(mean - expected) < 4 * stderr + 0.02, (mean, expected, stderr)
    assert stderr < 0.1  # precise enough to see a missing (1 - time_eps) factor


@pytest.mark.parametrize("name", sorted(SDE_CASES))
def test_importance_sampling_draws_log_variance_uniformly_with_the_papers_weight(name):
    """The paper's importance sampling of t: log var_t uniform on [log var_eps, log var_1], and the weight that makes
    ``E[weight h(t)] = int g^2 / (2 var_t) h(t) dt``: ``(log var_1 - log var_eps) / (2 (1 - var_t))``."""
    prior = ScorePrior(8, network=GaussianScore, **SDE_CASES[name][1])
    torch.manual_seed(0)
    t, weight = prior.sample_time(100_000, torch.device("cpu"), importance_sampling=True)
    ends = torch.tensor([prior.time_eps, 1.0], dtype=torch.float64)
    low, high = torch.log(prior.sde.var(ends)).tolist()
    var = prior.sde.var(t)
    u = ((torch.log(var) - low) / (high - low)).sort().values
    # Kolmogorov-Smirnov distance to the uniform distribution (its 1% critical value at n = 1e5 is 0.0052)
    assert float((u - torch.linspace(0, 1, len(u), dtype=torch.float64)).abs().max()) < 0.0052
    torch.testing.assert_close(weight, (high - low) / (2 * (1 - var)), rtol=1e-9, atol=0)


@pytest.mark.parametrize("channels,size,n", [(8, 1, 40_000), (32, 4, 6_000)], ids=["D=8", "D=512"])
def test_cross_entropy_estimate_at_mixing_zero_has_the_papers_variance(channels, size, n):
    """For z_0 ~ N(0, I) and the mixing at 0 the prediction is ``sigma_t z_t``, the error ``noise - sigma_t z_t``
    is ``alpha_t w`` with w ~ N(0, I), and with the paper's weight every example's estimate is ``C(z_0) +
    Dlog/2 chi2_D``: its standard deviation is ``Dlog/2 sqrt(2 D)`` up to the tiny ``alpha_1^2 ||z_0||^2 / 2`` of
    C (12.4 nats at D = 8, 99.5 at D = 512 for the linear SDE with time_eps 0.01). The sampler uniform in
    logit(var_t) gives about 33 and 1,750. Tolerance: 5% (the sampling error of the standard deviation is 0.7%
    at D = 8, 0.9% at D = 512, so 5% is over 5 standard errors)."""
    from vaezoo_lsgm.networks import LatentScoreNetwork

    prior = ScorePrior(channels, network=lambda c: LatentScoreNetwork(c, 8, 1, 8), mixing_logit_init=-math.inf)
    ends = torch.tensor([prior.time_eps, 1.0], dtype=torch.float64)
    low, high = torch.log(prior.sde.var(ends)).tolist()
    d = channels * size * size
    expected = 0.5 * (high - low) * math.sqrt(2 * d)
    torch.manual_seed(0)
    z0 = torch.randn(n, channels, size, size)
    with torch.no_grad():
        estimates = prior.cross_entropy(z0).double()
    std = float(estimates.std())
    assert abs(std - expected) < 0.05 * expected, (std, expected)
    # unbiased: its mean is the Normal cross-entropy D/2 log(2 pi e) within 4 standard errors
    assert abs(float(estimates.mean()) - 0.5 * d * math.log(2 * math.pi * math.e)) < 4 * std / math.sqrt(n)


def test_mixing_zero_is_the_identity_flow():
    from vaezoo_lsgm.networks import LatentScoreNetwork

    prior = ScorePrior(
        4, network=lambda c: LatentScoreNetwork(c, 8, 1, 8), mixing_logit_init=-math.inf, sampler_steps=50
    )
    torch.nn.init.normal_(prior.network.conv_out.weight)  # a network that would move the latents if mixed in
    prior.eval()
    torch.manual_seed(0)
    noise = torch.randn(3, 4, 2, 2)
    normal = (-0.5 * noise**2 - 0.5 * math.log(2 * math.pi)).flatten(1).sum(1)
    torch.testing.assert_close(prior.log_prob(noise), normal, rtol=0, atol=1e-4)
    for sampler in ("ode", "euler_maruyama"):
        out = prior.sample(noise.shape, noise=noise, sampler=sampler)
        if sampler == "ode":
            torch.testing.assert_close(out, noise, rtol=0, atol=1e-4)
            assert prior.last_sample_info["function_evaluations"] >= 2
        else:  # Euler-Maruyama on the reverse SDE with the exact score of N(0, I), -z, by hand: same Brownian draws
            torch.manual_seed(1)
            out = prior.sample(noise.shape, noise=noise, sampler=sampler)
            torch.manual_seed(1)
            times = torch.linspace(1.0, prior.time_eps, 51, dtype=torch.float64).tolist()
            z = noise.double()
            for i in range(50):
                beta, dt = 0.1 + (20.0 - 0.1) * times[i], times[i] - times[i + 1]  # the linear VP schedule
                z = z + (0.5 * beta * z + beta * -z) * dt  # dz = [f z - g^2 score] dt, backwards in time
                if i < 49:  # the last step adds no noise
                    z = z + math.sqrt(beta * dt) * torch.randn(noise.shape).double()
            torch.testing.assert_close(out.double(), z, rtol=1e-4, atol=1e-5)
    draws = prior.sample((4000, 4, 1, 1), sampler="euler_maruyama")
    assert abs(float(draws.mean())) < 0.05 and abs(float(draws.var()) - 1) < 0.05
    # with mixing 0 the denoising estimate's expectation is the Normal cross-entropy
    z0 = torch.randn(50_000, 4, 2, 2)
    with torch.no_grad():
        estimates = prior.cross_entropy(z0)
    exact = (0.5 * z0**2 + 0.5 * math.log(2 * math.pi)).flatten(1).sum(1)
    stderr = float(estimates.std()) / math.sqrt(len(z0))
    assert abs(float(estimates.mean() - exact.mean())) < 4 * stderr
