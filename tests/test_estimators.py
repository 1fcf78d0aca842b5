"""The evaluation estimators against closed forms: a linear-Gaussian model has an exact log p(x).

The model: ``z ~ N(0, I_d)`` (two latent groups of ``d/2`` dimensions, top first), ``x | z ~ N(W z + b, s^2 I_D)``, so
``p(x) = N(b, W W^T + s^2 I)``. With the exact posterior every importance weight equals ``p(x)``, so the k-sample
importance-weighted estimate is ``log p(x)`` exactly, for every k; with any other proposal the estimate is
``logsumexp_k(log w_k) - log k``, checked here against log-weights written out by hand from the Gaussian densities.
The bits/dim figures are ``-log p(x) / (D ln 2)`` of those closed forms.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor
from torch.distributions import MultivariateNormal, Normal
from torch.utils.data import TensorDataset

from vaezoo.evaluation.metrics import EvaluationResult, active_units, evaluate, importance_samples, iw_log_likelihood
from vaezoo.interfaces import GenerativeModel, Likelihood, ModelOutput

D_LATENT, IMAGE_SHAPE, NOISE_STD = 4, (1, 2, 3), 0.7
D_DATA = math.prod(IMAGE_SHAPE)


class _GaussianLikelihood(Likelihood):
    """Scores continuous data (bits/dim is reported, as for discretised intensities)."""

    report_unit = "bits/dim"

    def param_channels(self, data_channels: int) -> int:
        return data_channels

    def log_prob(self, params: Tensor, x: Tensor) -> Tensor:
        return Normal(params, NOISE_STD).log_prob(x).flatten(1).sum(1)

    def sample(self, params: Tensor, temperature: float = 1.0) -> Tensor:
        return params

    def mean(self, params: Tensor) -> Tensor:
        return params


class LinearGaussian(GenerativeModel):
    """``p(z) = N(0, I)``, ``p(x|z) = N(Wz + b, s^2 I)``; proposal: the exact posterior, or (``exact=False``) a
    diagonal Gaussian with the exact posterior's mean shifted by 0.3 and its variances scaled by 1.7."""

    image_shape = IMAGE_SHAPE

    def __init__(self, exact: bool = True, seed: int = 0, log_p_exact: bool | None = None) -> None:
        super().__init__()
        self.log_p_exact = log_p_exact  # what the output's extras say (None: nothing)
        g = torch.Generator().manual_seed(seed)
        self.W = torch.nn.Parameter(torch.randn(D_DATA, D_LATENT, generator=g, dtype=torch.float64) * 0.8)
        self.b = torch.nn.Parameter(torch.randn(D_DATA, generator=g, dtype=torch.float64) * 0.5)
        self.likelihood = _GaussianLikelihood()
        self.exact = exact

    def latent_shapes(self, batch_size: int) -> list[tuple[int, ...]]:
        return [(batch_size, D_LATENT // 2), (batch_size, D_LATENT - D_LATENT // 2)]

    def posterior(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Mean ``[B, d]`` and covariance ``[d, d]`` of the exact posterior."""
        precision = torch.eye(D_LATENT, dtype=self.W.dtype) + self.W.T @ self.W / NOISE_STD**2
        cov = torch.linalg.inv(precision)
        mean = (x.flatten(1).to(self.W.dtype) - self.b) @ self.W @ cov.T / NOISE_STD**2
        return mean, cov

    def proposal(self, x: Tensor) -> MultivariateNormal:
        mean, cov = self.posterior(x)
        if not self.exact:
            mean, cov = mean + 0.3, torch.diag(torch.diagonal(cov) * 1.7)
        return MultivariateNormal(mean, cov.expand(x.shape[0], -1, -1))

    def forward(self, x: Tensor, noise: list[Tensor] | None = None) -> ModelOutput:
        q = self.proposal(x)
        eps = torch.cat(noise, 1).to(self.W.dtype) if noise is not None else torch.randn(q.mean.shape).double()
        z = q.mean + (q.scale_tril @ eps.unsqueeze(-1)).squeeze(-1)
        params = (z @ self.W.T + self.b).view(-1, *IMAGE_SHAPE)
        recon = -self.likelihood.log_prob(params, x.to(self.W.dtype))
        log_q = q.log_prob(z)
        log_p = Normal(0.0, 1.0).log_prob(z).sum(1)
        kl = torch.stack([log_q - log_p, torch.zeros_like(log_q)])  # one-sample estimate, all in the first row
        extras = {} if self.log_p_exact is None else {"log_p_exact": self.log_p_exact}
        return ModelOutput(
            recon=recon, kl=kl, log_q=log_q, log_p=log_p, params=params, noise=list(noise or []), extras=extras
        )

    def encode(self, x: Tensor) -> list[Tensor]:
        """The exact posterior means of the two groups."""
        mean, _ = self.posterior(x)
        return list(mean.float().split([s[1] for s in self.latent_shapes(1)], dim=1))

    def sample_params(self, n: int, temperature: float = 1.0, noise: list[Tensor] | None = None) -> Tensor:
        raise NotImplementedError

    def sample(self, n: int, temperature: float = 1.0, noise: list[Tensor] | None = None, mean: bool = True):
        raise NotImplementedError


def exact_log_p(model: LinearGaussian, x: Tensor) -> Tensor:
    """log N(x; b, W W^T + s^2 I) per example: the marginal, computed without any latent."""
    with torch.no_grad():
        cov = model.W @ model.W.T + NOISE_STD**2 * torch.eye(D_DATA, dtype=torch.float64)
        return MultivariateNormal(model.b, cov).log_prob(x.flatten(1).double())


def _data(n: int = 5, seed: int = 1) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, *IMAGE_SHAPE, generator=g)


def _log_weight_by_hand(model: LinearGaussian, x: Tensor, draw: list[Tensor]) -> Tensor:
    """``log p(x, z) - log q(z | x)`` of the shifted, widened diagonal proposal (``exact=False``) at ``z`` drawn from
    ``draw`` (one standard-normal tensor per group), from the Gaussian densities written out."""
    eps = torch.cat(draw, 1).double()
    mean, cov = model.posterior(x)
    mean, std = mean + 0.3, torch.sqrt(torch.diagonal(cov) * 1.7)
    z = mean + std * eps
    log_joint = Normal(0.0, 1.0).log_prob(z).sum(1) + Normal(z @ model.W.T + model.b, NOISE_STD).log_prob(
        x.flatten(1).double()
    ).sum(1)
    return (log_joint - Normal(mean, std).log_prob(z).sum(1)).detach()


@pytest.mark.parametrize("k", [1, 3, 8])
def test_iw_estimate_with_the_exact_posterior_is_log_p_of_x(k):
    """Every weight is p(x): logsumexp of k equal terms minus log k gives log p(x), for any k (a bound without its
    ``- log k`` would be off by exactly log k)."""
    model, x = LinearGaussian(exact=True), _data()
    with torch.no_grad():
        estimate = iw_log_likelihood(model, x, k, max_batch=2 * x.shape[0])  # chunks of two samples
    torch.testing.assert_close(estimate.double(), exact_log_p(model, x), rtol=0, atol=1e-4)


def test_iw_estimate_of_a_poor_proposal_is_its_logsumexp_minus_log_k():
    """With a proposal that is not the posterior and explicit noise, the estimate equals the hand-written
    ``log(1/k sum_j p(x, z_j) / q(z_j | x))``, whatever the chunking; it lies between the ELBO and log p(x) on
    average, and closes on log p(x) as k grows."""
    model, x = LinearGaussian(exact=False), _data()
    k, b = 6, x.shape[0]
    noise = [[torch.randn(s) for s in model.latent_shapes(b)] for _ in range(k)]
    hand = torch.stack([_log_weight_by_hand(model, x, draw) for draw in noise])
    expected = torch.log(torch.exp(hand).mean(0))
    for max_batch in (b, 4 * b, 100 * b):
        with torch.no_grad():
            estimate = iw_log_likelihood(model, x, k, max_batch=max_batch, noise=noise)
        torch.testing.assert_close(estimate.double(), expected, rtol=0, atol=1e-4)
    with torch.no_grad():
        log_w, nelbo = importance_samples(model, x, k, noise=noise)
    torch.testing.assert_close(log_w.double(), hand, rtol=0, atol=1e-4)
    torch.testing.assert_close(-nelbo.double(), hand, rtol=0, atol=1e-4)  # one sample: the ELBO's estimate is log w

    # many samples: the estimate closes on the exact log p(x) (the bound's gap shrinks like 1/k)
    torch.manual_seed(0)
    with torch.no_grad():
        many = iw_log_likelihood(model, x, 4000, max_batch=4000 * b).double()
    exact = exact_log_p(model, x)
    assert torch.all(many <= exact + 0.02) and torch.all(exact - many < 0.05), (many, exact)


def test_evaluate_reports_the_exact_nll_in_nats_and_bits_per_dim():
    """``evaluate`` with k > 0 on the exact-posterior model: the IW-NLL is -mean log p(x) in nats, and
    ``-mean log p(x) / (D ln 2)`` in bits/dim (D = scored dimensions); the ELBO is log p(x) too (exact posterior)."""
    model, x = LinearGaussian(exact=True), _data(7)
    nll = float(-exact_log_p(model, x).mean())
    result = evaluate(model, TensorDataset(x), k=5, batch_size=3, max_batch=6)
    assert result.k == 5 and result.num_examples == 7 and result.scored_dims == D_DATA == 6
    assert result.unit == "bits/dim"
    assert result.iw_nll_nats == pytest.approx(nll, abs=1e-4)
    assert result.elbo_nats == pytest.approx(-nll, abs=1e-4)
    bits = nll / (D_DATA * math.log(2))
    assert result.iw_nll_bpd == pytest.approx(bits, abs=1e-5)
    assert result.nelbo_bpd == pytest.approx(bits, abs=1e-5)
    assert result.as_dict()["iw_nll_bpd"] == pytest.approx(bits, abs=1e-5)
    assert f"test IW-NLL (k=5) {bits:.4f} bits/dim" in result.describe()
    assert f"test NELBO {bits:.4f} bits/dim" in result.describe()


class _DrawsFromTheGlobalGenerator(LinearGaussian):
    """Draws from torch's global generator before every forward, as a stochastic layer would."""

    def forward(self, x: Tensor, noise: list[Tensor] | None = None) -> ModelOutput:
        torch.randn(3)
        return super().forward(x, noise)


def test_evaluate_draws_each_posterior_sample_from_its_own_seeded_stream():
    """``evaluate`` takes the ELBO pass's posterior noise from a generator seeded with ``seed`` and the k importance
    samples' from one seeded with ``seed + 1`` (batch after batch, sample after sample, group after group), whatever
    the model draws from torch's global generator: per example, the ELBO is log w of its draw and the IW estimate
    ``logsumexp_k(log w_k) - log k``, both written out from the Gaussian densities on that noise."""
    model, x = _DrawsFromTheGlobalGenerator(exact=False), _data(5)
    k, seed = 3, 11
    result = evaluate(model, TensorDataset(x), k=k, batch_size=2, max_batch=4, seed=seed)  # 2 samples a pass
    elbo_stream, iw_stream = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed + 1)
    elbo, iw = [], []
    for batch in x.split(2):
        draw = [torch.randn(s, generator=elbo_stream) for s in model.latent_shapes(len(batch))]
        elbo.append(_log_weight_by_hand(model, batch, draw))
    for batch in x.split(2):
        draws = [[torch.randn(s, generator=iw_stream) for s in model.latent_shapes(len(batch))] for _ in range(k)]
        log_w = torch.stack([_log_weight_by_hand(model, batch, draw) for draw in draws])
        iw.append(torch.log(torch.exp(log_w).mean(0)))
    elbo, iw = torch.cat(elbo), torch.cat(iw)
    torch.testing.assert_close(result.per_example["elbo"], elbo, rtol=0, atol=1e-4)
    torch.testing.assert_close(result.per_example["iw_log_likelihood"], iw, rtol=0, atol=1e-4)
    assert result.elbo_nats == pytest.approx(float(elbo.mean()), abs=1e-4)
    assert result.iw_nll_nats == pytest.approx(-float(iw.mean()), abs=1e-4)


def test_bits_per_dim_of_given_nats():
    """The conversion by itself: 1000 nats over 100 dimensions is 1000 / (100 ln 2) = 14.4270 bits/dim."""
    result = EvaluationResult(
        elbo_nats=-1000.0, iw_nll_nats=900.0, k=10, num_examples=1, scored_dims=100, unit="bits/dim"
    )
    assert result.nelbo_bpd == pytest.approx(14.426950408889634, rel=1e-12)
    assert result.iw_nll_bpd == pytest.approx(12.984255368000671, rel=1e-12)
    assert result.describe() == "test NELBO 14.4270 bits/dim, test IW-NLL (k=10) 12.9843 bits/dim on 1 examples"
    nats = EvaluationResult(elbo_nats=-80.5, iw_nll_nats=79.25, k=3, num_examples=2, scored_dims=784, unit="nats")
    assert nats.describe() == "test ELBO -80.50 nats, test IW-NLL (k=3) 79.25 nats on 2 examples"
    without_iw = EvaluationResult(-1000.0, None, 0, 1, 100, "bits/dim")
    assert without_iw.iw_nll_bpd is None
    assert without_iw.describe() == "test NELBO 14.4270 bits/dim on 1 examples"
    assert without_iw.as_dict() == {
        "elbo_nats": -1000.0, "iw_nll_nats": None, "k": 0, "num_examples": 1, "scored_dims": 100, "unit": "bits/dim",
        "nelbo_bpd": pytest.approx(14.426950408889634, rel=1e-12), "iw_nll_bpd": None,
    }  # fmt: skip
    assert EvaluationResult(-80.5, None, 0, 2, 784, "nats").describe() == "test ELBO -80.50 nats on 2 examples"


def test_an_estimate_right_only_in_expectation_is_refused():
    """An output that says its log p is not exact (a denoising estimate, training mode) cannot be importance
    weighted; one that says it is exact, or says nothing, can."""
    x = _data(2)
    with pytest.raises(
        ValueError, match=r"^log p of this output is an estimate right only in expectation: evaluate in eval mode$"
    ):
        iw_log_likelihood(LinearGaussian(log_p_exact=False), x, 2)
    for flag in (True, None):
        model = LinearGaussian(log_p_exact=flag)
        torch.testing.assert_close(iw_log_likelihood(model, x, 2).double(), exact_log_p(model, x), rtol=0, atol=1e-4)


def test_the_progress_callback_counts_every_scored_pair():
    """``on_samples(n)`` after each pass, n = (samples in the pass) x (examples): k x B in all."""
    model, x = LinearGaussian(), _data(3)
    seen = []
    iw_log_likelihood(model, x, 7, max_batch=6, on_samples=seen.append)  # two samples per pass: 2, 2, 2, 1
    assert seen == [6, 6, 6, 3]
    seen.clear()  # a pass holds at most max_batch rows, and at least one sample
    iw_log_likelihood(model, x, 3, max_batch=5, on_samples=seen.append)
    assert seen == [3, 3, 3]


def test_active_units_count_the_latents_the_data_move():
    """A latent whose column of W is zero never reaches x: its exact posterior mean is 0 for every example (inactive);
    the others' means vary across the data with variance well above the 0.01 threshold. Zeroing latent 3 (second
    group) and latent 0 (first group) leaves [1, 1] active; zeroing none leaves [2, 2]."""
    x = _data(200, seed=4)
    model = LinearGaussian()
    assert active_units(model, TensorDataset(x), max_examples=150) == [2, 2]
    with torch.no_grad():
        model.W[:, 3] = 0.0
        model.W[:, 0] = 0.0
    assert active_units(model, TensorDataset(x), max_examples=150) == [1, 1]
    means = torch.cat(model.encode(x[:150]), 1)
    assert means[:, [0, 3]].abs().max() < 1e-6 and means[:, [1, 2]].var(0).min() > 0.05
    # a threshold above every variance leaves none active
    assert active_units(model, TensorDataset(x), threshold=1e6) == [0, 0]
