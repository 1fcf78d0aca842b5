"""The core's distributions and the Bernoulli likelihood against closed forms: torch.distributions' densities, the
soft clamp written out, the temperature, explicit noise, full precision under half types, the cropped pixels."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Normal

from vaezoo.components.likelihoods import BernoulliLikelihood
from vaezoo.distributions import DiagonalNormal, SoftClampedNormal, full_precision


def _tensors(*shape, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64) * scale


def _is_the_normal(q, mu: torch.Tensor, sigma: torch.Tensor, z: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """``q`` scores ``z`` as N(mu, sigma^2), samples ``mu + sigma * noise`` from given noise, and draws its own noise
    from the global generator in mu's shape and dtype; returns that drawn noise."""
    torch.testing.assert_close(q.log_prob(z), Normal(mu, sigma).log_prob(z))
    sample, used = q.sample(noise)
    assert used is noise
    torch.testing.assert_close(sample, mu + sigma * noise)
    torch.manual_seed(7)
    drawn, drawn_noise = q.sample()
    torch.manual_seed(7)
    expected_noise = torch.randn(mu.shape, dtype=mu.dtype)
    torch.testing.assert_close(drawn_noise, expected_noise)
    torch.testing.assert_close(drawn, mu + sigma * expected_noise)
    return drawn_noise


@pytest.mark.parametrize("temperature", [1.0, 0.6])
def test_diagonal_normal_is_the_normal_of_its_parameters(temperature):
    mu, log_sigma, z, noise = (
        _tensors(2, 3, 4),
        _tensors(2, 3, 4, seed=1),
        _tensors(2, 3, 4, seed=2),
        _tensors(2, 3, 4, seed=3),
    )
    q = DiagonalNormal(mu, log_sigma, temperature)
    sigma = torch.exp(log_sigma) * temperature
    torch.testing.assert_close(q.sigma, sigma)
    torch.testing.assert_close(q.log_sigma, torch.log(sigma))
    _is_the_normal(q, mu, sigma, z, noise)


@pytest.mark.parametrize("temperature, bound, min_sigma", [(1.0, 5.0, 1e-2), (0.7, 5.0, 1e-2), (1.0, 2.0, 0.1)])
def test_soft_clamped_normal_is_the_normal_of_its_clamped_parameters(temperature, bound, min_sigma):
    """``mu = b tanh(raw_mu / b)``, ``sigma = (exp(b tanh(raw_log_sigma / b)) + min_sigma) t``, raw values kept."""
    raw_mu, raw_log_sigma = _tensors(2, 3, 4, scale=8.0), _tensors(2, 3, 4, seed=1, scale=8.0)
    z, noise = _tensors(2, 3, 4, seed=2), _tensors(2, 3, 4, seed=3)
    q = SoftClampedNormal(raw_mu, raw_log_sigma, temperature, bound=bound, min_sigma=min_sigma)
    mu = bound * torch.tanh(raw_mu / bound)
    sigma = (torch.exp(bound * torch.tanh(raw_log_sigma / bound)) + min_sigma) * temperature
    assert q.raw_mu is raw_mu and q.raw_log_sigma is raw_log_sigma
    torch.testing.assert_close(q.mu, mu)
    torch.testing.assert_close(q.sigma, sigma)
    drawn_noise = _is_the_normal(q, mu, sigma, z, noise)
    assert drawn_noise.dtype == torch.float64


def test_the_clamp_bounds_the_mean_and_the_scale():
    q = SoftClampedNormal(torch.tensor([1e4, -1e4, 0.0]), torch.tensor([1e4, -1e4, 0.0]))
    torch.testing.assert_close(q.mu, torch.tensor([5.0, -5.0, 0.0]))
    torch.testing.assert_close(q.sigma, torch.tensor([math.exp(5) + 0.01, math.exp(-5) + 0.01, 1.01]))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_inputs_give_full_precision_densities(dtype):
    """Half-precision parameters (an autocast network's output) are scored in float32; other dtypes are kept."""
    x = _tensors(4).to(dtype)
    assert full_precision(x).dtype == torch.float32 and torch.equal(full_precision(x), x.float())
    for kept in (torch.float32, torch.float64):
        y = _tensors(4).to(kept)
        assert full_precision(y) is y
    mu, log_sigma, z = (_tensors(2, 3, seed=s).to(dtype) for s in range(3))
    for q in (DiagonalNormal(mu, log_sigma), SoftClampedNormal(mu, log_sigma)):
        assert q.mu.dtype == q.sigma.dtype == torch.float32
        assert q.log_prob(z.float()).dtype == torch.float32
    expected = Normal(mu.float(), torch.exp(log_sigma.float())).log_prob(z.float())
    torch.testing.assert_close(DiagonalNormal(mu, log_sigma).log_prob(z.float()), expected)


@pytest.mark.parametrize("crop", [0, 1, 2])
def test_bernoulli_scores_the_uncropped_pixels_in_nats(crop):
    logits = _tensors(3, 1, 8, 8, scale=3.0)
    x = (_tensors(3, 1, 8, 8, seed=1) > 0).double()
    likelihood = BernoulliLikelihood(crop=crop)
    per_pixel = x * torch.log(torch.sigmoid(logits)) + (1 - x) * torch.log(1 - torch.sigmoid(logits))
    torch.testing.assert_close(likelihood.log_prob_map(logits, x), per_pixel)
    inner = per_pixel[..., crop : 8 - crop, crop : 8 - crop]
    torch.testing.assert_close(likelihood.log_prob(logits, x), inner.flatten(1).sum(1))
    assert likelihood.num_scored_dims((1, 8, 8)) == (8 - 2 * crop) ** 2
    assert likelihood.num_scored_dims((3, 10, 6)) == 3 * (10 - 2 * crop) * (6 - 2 * crop)
    assert likelihood.param_channels(3) == 3 and likelihood.report_unit == "nats"


def test_bernoulli_mean_and_samples():
    logits = torch.tensor([[-3.0, 0.0, 2.0]]).view(1, 1, 1, 3)
    likelihood = BernoulliLikelihood()
    assert likelihood.crop == 0 and likelihood.num_scored_dims((1, 28, 28)) == 784  # every pixel by default
    torch.testing.assert_close(likelihood.mean(logits), torch.sigmoid(logits))
    many = torch.stack([likelihood.sample(logits) for _ in range(4000)])
    assert set(many.unique().tolist()) <= {0.0, 1.0}
    torch.testing.assert_close(many.mean(0), torch.sigmoid(logits), rtol=0, atol=0.03)


@pytest.mark.parametrize("family", [DiagonalNormal, SoftClampedNormal])
def test_samples_keep_the_layout_of_channels_last_parameters(family):
    """NCHW noise (drawn, or given) meets channels_last parameters: the sample is channels_last, with the values of
    the NCHW computation (the same noise at the same index), so nothing downstream mixes the two layouts."""
    params = [_tensors(2, 4, 3, 5, seed=s).contiguous(memory_format=torch.channels_last) for s in (0, 1)]
    q, reference = family(*params), family(*(p.contiguous() for p in params))
    noise = _tensors(2, 4, 3, 5, seed=3)
    sample, used = q.sample(noise)
    assert used is noise and sample.is_contiguous(memory_format=torch.channels_last) and not sample.is_contiguous()
    assert torch.equal(sample, reference.sample(noise)[0])
    drawn, drawn_noise = q.sample()
    assert drawn.is_contiguous(memory_format=torch.channels_last) and not drawn.is_contiguous()
    torch.testing.assert_close(drawn, reference.mu + reference.sigma * drawn_noise, rtol=1e-12, atol=1e-12)
