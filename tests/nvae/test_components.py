"""Behaviour of the NVAE components against known answers (closed forms, invariants, the reference's quirks)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from vaezoo_nvae.distributions import FixedNormalPrior, ResidualNormalPosterior
from vaezoo_nvae.flows import AutoregressiveShiftCell, PairedAutoregressiveFlow
from vaezoo_nvae.likelihoods import DiscretizedLogisticMixture, reduce_bits

import vaezoo
from vaezoo.components import BernoulliLikelihood
from vaezoo.components.latents import NormalPosterior
from vaezoo.distributions import SoftClampedNormal
from vaezoo.nn import MaskedWeightNormConv2d, WeightNormConv2d, channel_mask

from .conftest import compiled_kernel_expected


def test_weight_norm_starts_near_the_raw_weight():
    conv = WeightNormConv2d(3, 5, 3)
    norm = conv.weight.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    expected = conv.weight * (norm + 1e-2) / (norm + 1e-5)
    torch.testing.assert_close(conv.effective_weight(), expected)
    assert WeightNormConv2d(3, 5, 1, weight_norm=False).effective_weight() is not None


def test_channel_masks():
    # dense, more outputs than inputs: outputs 2i, 2i+1 see inputs < i (zero diagonal) or <= i
    assert channel_mask(2, 1, 4, True).tolist() == [[0, 0], [0, 0], [1, 0], [1, 0]]
    assert channel_mask(2, 1, 4, False).tolist() == [[1, 0], [1, 0], [1, 1], [1, 1]]
    # dense, fewer outputs: output i sees inputs < (i + 1) * ratio
    assert channel_mask(4, 1, 2, False).tolist() == [[1, 1, 0, 0], [1, 1, 1, 1]]
    assert channel_mask(4, 4, 4, True).flatten().tolist() == [0, 0, 0, 0]


@pytest.mark.parametrize("mirror", [False, True])
def test_autoregressive_cell_has_a_unit_triangular_jacobian(mirror):
    """z' = z - mu(z) with mu autoregressive: the Jacobian is unit lower-triangular in raster-then-channel order
    (raster order reversed for the mirrored cell), so log|det| = 0 exactly."""
    torch.manual_seed(0)
    c, h, w = 2, 3, 3
    cell = AutoregressiveShiftCell(c, mirror=mirror)
    with torch.no_grad():  # make every masked weight matter
        for conv in (cell.in_conv, cell.depthwise, cell.mu):
            conv.log_weight_norm.add_(1.0)
    z = torch.randn(1, c, h, w)
    jac = torch.autograd.functional.jacobian(lambda t: cell(t.view(1, c, h, w)).flatten(), z.flatten())
    # order index of (channel, row, col) in the autoregressive ordering
    rows = torch.arange(h).view(1, h, 1).expand(c, h, w)
    cols = torch.arange(w).view(1, 1, w).expand(c, h, w)
    chans = torch.arange(c).view(c, 1, 1).expand(c, h, w)
    if mirror:
        rows, cols = h - 1 - rows, w - 1 - cols
    order = ((rows * w + cols) * c + chans).flatten()
    permuted = jac[order.argsort()][:, order.argsort()]
    torch.testing.assert_close(permuted.diagonal(), torch.ones(c * h * w))
    assert torch.count_nonzero(torch.triu(permuted, diagonal=1)) == 0
    assert torch.count_nonzero(torch.tril(permuted, diagonal=-1)) > 0


def test_flow_log_det_is_zero_and_masks_are_not_saved():
    flow = PairedAutoregressiveFlow(2, 8)
    z = torch.randn(2, 2, 4, 4)
    out, log_det = flow(z)
    assert out.shape == z.shape and torch.count_nonzero(log_det) == 0
    assert not any(k.endswith("mask") for k in flow.state_dict())
    masked = [m for m in flow.modules() if isinstance(m, MaskedWeightNormConv2d)]
    assert len(masked) == 6 and all(m.mask.shape == m.weight.shape for m in masked)


def test_soft_clamped_normal_and_top_prior():
    prior = FixedNormalPrior()(torch.zeros(1), (2, 3, 4, 4), temperature=0.8)
    assert torch.allclose(prior.sigma, torch.full((2, 3, 4, 4), 1.01 * 0.8)) and torch.count_nonzero(prior.mu) == 0
    big = SoftClampedNormal(torch.tensor([100.0, -100.0]), torch.tensor([100.0, -100.0]))
    torch.testing.assert_close(big.mu, torch.tensor([5.0, -5.0]))
    torch.testing.assert_close(big.sigma, torch.tensor([math.exp(5.0) + 0.01, math.exp(-5.0) + 0.01]))
    noise = torch.randn(2)
    z, eps = big.sample(noise)
    assert eps is noise and torch.allclose(z, noise * big.sigma + big.mu)
    expected = torch.distributions.Normal(big.mu, big.sigma).log_prob(z)
    torch.testing.assert_close(big.log_prob(z), expected)


def test_residual_posterior_sums_raw_parameters_before_clamping():
    torch.manual_seed(0)
    features = torch.randn(1, 4, 2, 2)
    prior = SoftClampedNormal(torch.full((1, 2, 2, 2), 4.0), torch.full((1, 2, 2, 2), 3.0))
    residual, plain = ResidualNormalPosterior(4, 2), NormalPosterior(4, 2)
    plain.load_state_dict(residual.state_dict())
    raw_mu, raw_log_sigma = residual.conv(features).chunk(2, dim=1)
    q = residual(features, prior)
    torch.testing.assert_close(q.mu, 5 * torch.tanh((raw_mu + 4.0) / 5))
    torch.testing.assert_close(q.sigma, torch.exp(5 * torch.tanh((raw_log_sigma + 3.0) / 5)) + 0.01)
    torch.testing.assert_close(plain(features, prior).mu, 5 * torch.tanh(raw_mu / 5))


def test_bernoulli_scores_only_the_crop():
    likelihood = BernoulliLikelihood(crop=2)
    logits, x = torch.randn(2, 1, 32, 32), torch.bernoulli(torch.full((2, 1, 32, 32), 0.5))
    changed = x.clone()
    changed[..., :2, :] = 1 - changed[..., :2, :]
    torch.testing.assert_close(likelihood.log_prob(logits, x), likelihood.log_prob(logits, changed))
    expected = torch.distributions.Bernoulli(logits=logits).log_prob(x)[..., 2:30, 2:30].sum(dim=[1, 2, 3])
    torch.testing.assert_close(likelihood.log_prob(logits, x), expected)
    assert likelihood.report_unit == "nats" and likelihood.num_scored_dims((1, 32, 32)) == 784


def _channel_log_prob(value: float, mean: float, log_scale: float) -> float:
    """One discretised logistic channel in [-1, 1] units with NVAE's edges (closed form)."""
    x, inv_s, half = 2 * value - 1, math.exp(-log_scale), 1 / 255
    cdf = lambda t: 1 / (1 + math.exp(-t))  # noqa: E731
    if x < -0.999:
        return math.log(cdf(inv_s * (x - mean + half)))
    if x > 0.99:
        return math.log(1 - cdf(inv_s * (x - mean - half)))
    return math.log(cdf(inv_s * (x - mean + half)) - cdf(inv_s * (x - mean - half)))


@pytest.mark.parametrize("red", [0, 1, 128, 253, 254, 255])
def test_logistic_mixture_matches_the_closed_form(red):
    # one component, zero coupling coefficients: the RGB channels are independent logistics
    likelihood = DiscretizedLogisticMixture(num_mixtures=1, num_bits=8)
    means, log_scales = [0.3, -0.2, 0.9], [-2.0, -3.0, -2.5]
    params = torch.tensor(
        [0.0] + [means[0], log_scales[0], 0.0, means[1], log_scales[1], 0.0, means[2], log_scales[2], 0.0]
    )
    values = [red / 255, 100 / 255, 250 / 255]
    x = torch.tensor(values).view(1, 3, 1, 1)
    expected = sum(_channel_log_prob(v, m, s) for v, m, s in zip(values, means, log_scales, strict=True))
    got = likelihood.log_prob(params.view(1, 10, 1, 1), x).item()
    assert got == pytest.approx(expected, rel=1e-5)


def test_logistic_mixture_top_edge_quirk_and_mean():
    torch.manual_seed(0)
    likelihood = DiscretizedLogisticMixture(num_mixtures=3)
    params = torch.randn(2, 30, 1, 1).expand(2, 30, 1, 1).contiguous()
    # only the blue channel differs (no other channel depends on it)
    x = torch.tensor([[0.2, 0.7, 254 / 255], [0.2, 0.7, 255 / 255]]).view(2, 3, 1, 1)
    params[1] = params[0]
    log_p = likelihood.log_prob(params, x)
    # 254/255 = 0.992 > 0.99: level 254 takes the whole upper tail from its lower bin edge, which contains all of
    # level 255's mass (the closed-form values are checked above)
    assert log_p[0] > log_p[1]
    assert likelihood.param_channels(3) == 30 and likelihood.report_unit == "bits/dim"
    mean = likelihood.mean(params)
    assert mean.shape == (2, 3, 1, 1) and 0 <= mean.min() and mean.max() <= 1


def test_bit_reduction():
    x = torch.arange(256.0) / 255
    reduced = reduce_bits(x, 5)
    assert reduced.unique().numel() == 32 and reduced.min() == 0 and reduced.max() == 1
    torch.testing.assert_close(reduced[8:16], torch.full((8,), 1 / 31))
    assert reduce_bits(x, 8) is x


def test_model_noise_is_explicit_and_reproducible():
    model = vaezoo.create("test-nvae").eval()
    x = torch.bernoulli(torch.full((2, 1, 8, 8), 0.5))
    noise = [torch.randn(s) for s in model.latent_shapes(2)]
    with torch.no_grad():
        first, second = model(x, noise=noise), model(x, noise=noise)
        drawn = model(x)
    torch.testing.assert_close(first.params, second.params, rtol=0, atol=0)
    assert all(a is b for a, b in zip(first.noise, noise, strict=True))
    assert [tuple(n.shape) for n in drawn.noise] == model.latent_shapes(2)
    torch.testing.assert_close(first.log_iw, -first.recon - first.log_q + first.log_p)
    with torch.no_grad():
        torch.testing.assert_close(model.sample_params(2, 0.5, noise), model.sample_params(2, 0.5, noise))


def test_kl_is_analytic_without_flows_and_sampled_with_them():
    torch.manual_seed(0)
    with_flows = vaezoo.create("test-nvae").eval()
    without = vaezoo.create("test-nvae", num_flows=0, flow=None).eval()
    x = torch.bernoulli(torch.full((2, 1, 8, 8), 0.5))
    with torch.no_grad():
        out = without(x)
        q, p = out.extras["posteriors"][1], out.extras["priors"][1]
        torch.testing.assert_close(out.kl[1], q.kl(p).sum(dim=[1, 2, 3]))
        out = with_flows(x)
        z = out.extras["flow_outputs"][1]
        q, p = out.extras["posteriors"][1], out.extras["priors"][1]
        eps = out.noise[1]
        expected = (q.log_prob(eps * q.sigma + q.mu) - p.log_prob(z)).sum(dim=[1, 2, 3])
        torch.testing.assert_close(out.kl[1], expected)


def test_core_assembler_has_no_paper_specific_names():
    import inspect

    import vaezoo.models.hierarchical as hierarchical

    source = inspect.getsource(hierarchical).lower()
    assert "vaezoo_nvae" not in source and "nvae-" not in source and "1.01" not in source


def test_meta_build_allocates_nothing():
    with torch.device("meta"):
        model = vaezoo.create("nvae-mnist")
    assert all(p.device.type == "meta" for p in model.parameters())
    assert all(isinstance(m, nn.Module) for m in model.modules())


@pytest.mark.parametrize("channels_last", [False, True])
def test_depthwise_conv_with_the_compiled_weight_gradient_matches_torch(channels_last):
    """trainer.speed.depthwise_weight_grad=compiled: same outputs and gradients as torch's depthwise conv (the forward and
    the input gradient are torch's own; the weight gradient is the fused k*k-tap reduction)."""
    torch.manual_seed(0)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    conv = WeightNormConv2d(6, 6, 3, padding=1, groups=6).to(memory_format=fmt)
    x = torch.randn(2, 6, 7, 5).to(memory_format=fmt).requires_grad_()
    grad = torch.randn(2, 6, 7, 5)

    def run(mode: str) -> list[torch.Tensor]:
        conv.depthwise_weight_grad = mode
        conv.zero_grad()
        x.grad = None
        out = conv(x)
        out.backward(grad)
        return [out.detach(), x.grad, conv.weight.grad, conv.log_weight_norm.grad, conv.bias.grad]

    from vaezoo.nn import kernels

    before = dict(kernels.kernel_calls)
    native, compiled = run("native"), run("compiled")
    for a, b in zip(native, compiled, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)
    if compiled_kernel_expected():  # else "compiled" silently ran the native kernel: native against native
        assert kernels.compiled_depthwise_available()
        assert kernels.kernel_calls["compiled"] == before["compiled"] + 1, kernels.kernel_calls
        assert kernels.kernel_calls["native"] == before["native"], "the compiled mode fell back to the native kernel"


def test_depthwise_weight_gradient_falls_back_to_torch_without_a_compiler(monkeypatch):
    from vaezoo.nn import kernels as layers

    def no_compiler(*args, **kwargs):
        raise RuntimeError("no working C++ compiler\nmore detail")

    monkeypatch.setattr(layers, "_compiled_taps", no_compiler)
    x, g = torch.randn(2, 4, 6, 6), torch.randn(2, 4, 6, 6)
    with pytest.warns(UserWarning, match="no working C\\+\\+ compiler"):
        fallback = layers.depthwise_weight_grad(g, x, 5, 2)
    assert layers._compiled_taps is False
    expected = layers._depthwise_weight_grad_taps(g, x, 5, 2)
    torch.testing.assert_close(fallback, expected, rtol=1e-5, atol=1e-5)


def test_vectorised_elu_matches_torch_in_value_and_gradient():
    from vaezoo.nn import elu

    x = torch.cat([torch.randn(1000) * 3, torch.randn(1000) * 1e-4, torch.tensor([0.0, -30.0, 30.0])])
    x = x.double().requires_grad_()
    ours, theirs = elu(x), torch.nn.functional.elu(x)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-15)
    grad = torch.randn_like(x)
    torch.testing.assert_close(torch.autograd.grad(ours, x, grad)[0], torch.autograd.grad(theirs, x, grad)[0])
    x32 = x.detach().float()
    assert (elu(x32) - torch.nn.functional.elu(x32)).abs().max() < 1e-7
