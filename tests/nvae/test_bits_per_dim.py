"""bits/dim on RGB data against closed forms: the discretised logistic mixture at 8 and 5 bits, and what
``vaezoo.evaluation.evaluate`` reports for a tiny colour NVAE (``bpd = nats / (ln 2 * C * H * W)``).

The references here are written from the formulas, not from the likelihood's code: a logistic of mean ``mu`` and
scale ``s`` gives the bin ``[x - h, x + h]`` (``h = 1 / (2^bits - 1)`` in [-1, 1] units) the mass
``sigmoid((x + h - mu) / s) - sigmoid((x - h - mu) / s)``; NVAE's edges give ``x < -0.999`` the open lower tail
``sigmoid((x + h - mu) / s)`` and ``x > 0.99`` the open upper tail ``1 - sigmoid((x - h - mu) / s)``; an inner bin
of mass at most 1e-5 is scored by the density at its centre times ``2h``.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch.utils.data import TensorDataset
from vaezoo_nvae.likelihoods import DiscretizedLogisticMixture

import vaezoo
from vaezoo.evaluation import evaluate


def _bin_log_mass(x: torch.Tensor, mu: torch.Tensor, s: torch.Tensor, bits: int) -> torch.Tensor:
    """log P(bin of x) under one logistic, with NVAE's open tails at the edges (float64). An inner bin whose mass is
    at most 1e-5 is, as in NVAE, the density at its centre times its width ``2h`` (the difference of two sigmoids
    loses its digits there)."""
    h = 1.0 / (2**bits - 1)
    upper, lower = torch.sigmoid((x + h - mu) / s), torch.sigmoid((x - h - mu) / s)
    z = (x - mu) / s
    density = torch.sigmoid(z) * torch.sigmoid(-z) / s  # the logistic density at the bin centre
    inner = torch.where(upper - lower > 1e-5, upper - lower, density * 2 * h)
    upper_tail = torch.sigmoid(-(x - h - mu) / s)  # = 1 - lower, without cancelling digits
    mass = torch.where(x < -0.999, upper, torch.where(x > 0.99, upper_tail, inner))
    return torch.log(mass)


def _single_logistic_params(mu: torch.Tensor, log_s: torch.Tensor) -> torch.Tensor:
    """Decoder output of a one-component mixture ``[B, 10, H, W]``: logit, then per channel mean, log-scale, and
    a raw coefficient of 0 (tanh(0) = 0: no RGB coupling)."""
    b, _, h, w = mu.shape
    per_channel = torch.stack([mu, log_s, torch.zeros_like(mu)], dim=2)  # [B, 3, 3, H, W]
    return torch.cat([torch.zeros(b, 1, h, w, dtype=mu.dtype), per_channel.reshape(b, 9, h, w)], dim=1)


@pytest.mark.parametrize("bits", [8, 5])
def test_one_logistic_component_scores_the_closed_form_bin_mass(bits):
    torch.manual_seed(0)
    likelihood = DiscretizedLogisticMixture(num_mixtures=1, num_bits=bits)
    # every 8-bit level, in one row of pixels per channel (so the edges and the inner bins all occur)
    levels = torch.arange(256, dtype=torch.float64) / 255
    x8 = levels.view(1, 1, 16, 16).expand(2, 3, 16, 16).clone()
    mu = torch.empty(2, 3, 16, 16, dtype=torch.float64).uniform_(-0.9, 0.9)
    log_s = torch.empty(2, 3, 16, 16, dtype=torch.float64).uniform_(math.log(0.05), math.log(0.5))
    params = _single_logistic_params(mu, log_s)

    x = likelihood.preprocess(x8)
    expected_levels = torch.floor(x8 * 255 / 2 ** (8 - bits)) / (2**bits - 1)  # 8-bit data reduced to `bits`
    torch.testing.assert_close(x, expected_levels, rtol=0, atol=1e-12)
    assert len(torch.unique(x)) == 2**bits

    ours = likelihood.log_prob_map(params, x)  # [B, H, W], summed over RGB
    expected = _bin_log_mass(2 * x - 1, mu, log_s.exp(), bits).sum(1)
    torch.testing.assert_close(ours, expected, rtol=1e-7, atol=1e-7)
    torch.testing.assert_close(likelihood.log_prob(params, x), expected.sum(dim=(1, 2)), rtol=1e-9, atol=1e-7)

    # the edge cases, explicitly: the lowest level takes the lower tail, the top level the upper tail; at 8 bits
    # the second-highest level (254/255 -> 0.992 > 0.99) also takes the upper tail, at 5 bits (29/31 -> 0.87) not
    one = torch.zeros(1, 3, 1, 1, dtype=torch.float64)
    single = _single_logistic_params(one + 0.3, one + math.log(0.2))
    h = 1.0 / (2**bits - 1)

    def at(level: int) -> float:
        value = torch.full((1, 3, 1, 1), level / (2**bits - 1), dtype=torch.float64)
        return float(likelihood.log_prob_map(single, value)) / 3

    def sigmoid(v: float) -> float:
        return 1 / (1 + math.exp(-v))

    assert at(0) == pytest.approx(math.log(sigmoid((-1 + h - 0.3) / 0.2)), rel=1e-9)
    top = 2**bits - 1
    assert at(top) == pytest.approx(math.log(1 - sigmoid((1 - h - 0.3) / 0.2)), rel=1e-9)
    x_second = 2 * (top - 1) / top - 1
    upper_tail = math.log(1 - sigmoid((x_second - h - 0.3) / 0.2))
    inner = math.log(sigmoid((x_second + h - 0.3) / 0.2) - sigmoid((x_second - h - 0.3) / 0.2))
    assert at(top - 1) == pytest.approx(upper_tail if bits == 8 else inner, rel=1e-9)


def _mixture_log_prob(params: torch.Tensor, x: torch.Tensor, bits: int, k: int) -> torch.Tensor:
    """log p(x) per example of a K-component mixture with the autoregressive RGB means, from the formulas."""
    b, _, height, width = params.shape
    params, x = params.double(), 2 * x.double() - 1  # [B, 3, H, W] in [-1, 1]
    weights = torch.log_softmax(params[:, :k], dim=1)  # [B, K, H, W]
    rest = params[:, k:].view(b, 3, 3 * k, height, width)
    means, log_s, coeffs = rest[:, :, :k], rest[:, :, k : 2 * k].clamp(min=-7), torch.tanh(rest[:, :, 2 * k :])
    r, g = x[:, 0:1], x[:, 1:2]  # broadcast over the K components
    mu = torch.stack(
        [means[:, 0], means[:, 1] + coeffs[:, 0] * r, means[:, 2] + coeffs[:, 1] * r + coeffs[:, 2] * g], dim=1
    )
    per_channel = _bin_log_mass(x.unsqueeze(2), mu, log_s.exp(), bits)  # [B, 3, K, H, W]
    return torch.logsumexp(per_channel.sum(1) + weights, dim=1).sum(dim=(1, 2))


@pytest.mark.parametrize("bits", [8, 5])
def test_evaluate_reports_bits_per_dim_of_the_independently_computed_nats(bits):
    k, shape = 2, [3, 8, 8]
    torch.manual_seed(0)
    model = vaezoo.create(
        "test-nvae",
        image_shape=shape,
        likelihood={"class_path": "DiscretizedLogisticMixture", "init_args": {"num_mixtures": k, "num_bits": bits}},
    ).eval()
    x8 = torch.randint(0, 256, (6, *shape)).float() / 255  # 8-bit data; the model scores it at `bits`
    draws = []
    forward = model.forward

    def recording_forward(x, noise=None):  # keep the posterior noise evaluate drew
        out = forward(x, noise)
        draws.append([eps.clone() for eps in out.noise])
        return out

    model.forward = recording_forward
    result = evaluate(model, TensorDataset(x8), k=0, batch_size=6, seed=11)
    del model.forward
    (noise,) = draws  # one batch, one pass (k=0: the ELBO only)

    # the same draws, passed explicitly; the likelihood from the formulas, the KL as log q - log p
    with torch.no_grad():
        out = model(x8, noise=noise)
    reduced = torch.floor(x8 * 255 / 2 ** (8 - bits)) / (2**bits - 1)
    log_px_z = _mixture_log_prob(out.params, reduced, bits, k)
    elbo = log_px_z - (out.log_q - out.log_p).double()  # nats per example
    nats = float(elbo.mean())

    dims = 3 * 8 * 8
    assert result.unit == "bits/dim" and result.scored_dims == dims and result.num_examples == 6
    assert result.elbo_nats == pytest.approx(nats, rel=1e-5)
    assert result.nelbo_bpd == pytest.approx(-nats / (math.log(2) * dims), rel=1e-5)
    assert result.as_dict()["nelbo_bpd"] == pytest.approx(-nats / (math.log(2) * dims), rel=1e-5)
    assert "bits/dim" in result.describe() and f"{-nats / (math.log(2) * dims):.4f}" in result.describe()
