"""The NVAE objective and regularisers: schedules, KL balancing, loss association, power iteration state."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn
from vaezoo_nvae.objective import (
    NVAEObjective,
    balance_kl,
    kl_balance_alpha,
    kl_warmup_coefficient,
    nelbo,
)
from vaezoo_nvae.regularizers import BatchNormScaleRegularizer, SpectralRegularizer

import vaezoo
from vaezoo.evaluation.bn import readjust_batchnorm
from vaezoo.nn import MaskedWeightNormConv2d, WeightNormConv2d

from .replay import importance_weighted_bound


def _convs() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        WeightNormConv2d(3, 4, 3),
        WeightNormConv2d(3, 4, 3),
        WeightNormConv2d(6, 4, 1, weight_norm=False),  # a 4 x 6 matrix, used as it is
        MaskedWeightNormConv2d(4, 8, 3, zero_diagonal=True),
        nn.Conv2d(3, 4, 3),
        nn.BatchNorm2d(4),
    )


def _exact_spectral_sum(model: nn.Module) -> float:
    total = 0.0
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            w = m.effective_weight() if hasattr(m, "effective_weight") else m.weight
            total += torch.linalg.matrix_norm(w.detach().double().flatten(1), ord=2).item()
    return total


def test_spectral_regularizer_converges_to_the_sum_of_spectral_norms():
    model = _convs()
    reg = SpectralRegularizer(num_power_iterations=50)
    value = reg(model)
    assert value.item() == pytest.approx(_exact_spectral_sum(model), rel=1e-4)
    # weights of equal matrix shape share one stacked iteration: (4, 27) x3 (incl. the plain conv), (4, 6), (8, 36)
    assert {name: tuple(buf.shape) for name, buf in reg.named_buffers()} == {
        "u_4x27": (3, 4), "v_4x27": (3, 27), "u_4x6": (1, 4), "v_4x6": (1, 6), "u_8x36": (1, 8), "v_8x36": (1, 36),
    }  # fmt: skip
    value.backward()
    # its gradient is that of the exact sum (d sigma / dW = u v^T at the top singular pair), by autograd through an
    # SVD-based matrix norm in float64, for every parameter of every conv (weight norms and masks included)
    exact = copy.deepcopy(model).double()
    total = sum(
        torch.linalg.matrix_norm((m.effective_weight() if hasattr(m, "effective_weight") else m.weight).flatten(1), 2)
        for m in exact.modules()
        if isinstance(m, nn.Conv2d)
    )
    total.backward()
    reached = 0
    for (name, p), q in zip(model.named_parameters(), exact.parameters(), strict=True):
        if q.grad is None:  # biases and the BatchNorm: no part of the sum
            assert p.grad is None, name
            continue
        torch.testing.assert_close(p.grad.double(), q.grad, rtol=1e-3, atol=1e-5, msg=name)
        reached += 1
    assert reached == 8  # five conv weights and three weight norms


def test_spectral_regularizer_reuses_the_weights_of_the_forward_pass():
    """While the forward graph lives, the regulariser reads the very weight tensors the convs applied (no second
    weight normalisation), with gradients equal to those of freshly normalised weights; a weight changed since, a
    graph already freed, or a copy of the model gets freshly normalised weights."""
    import copy

    torch.manual_seed(0)
    conv = WeightNormConv2d(3, 4, 3, padding=1)
    x = torch.randn(2, 3, 5, 5)
    out = conv(x)
    assert conv.applied_weight() is conv._applied[0]()  # the forward's tensor
    assert copy.deepcopy(conv).applied_weight() is not conv._applied[0]()

    def grads(reuse: bool) -> list[torch.Tensor]:
        conv.zero_grad()
        y = conv(x)
        reg = SpectralRegularizer(num_power_iterations=20)
        if not reuse:
            conv._applied = None
        (y.square().mean() + reg(conv)).backward()
        return [conv.weight.grad.clone(), conv.log_weight_norm.grad.clone()]

    torch.manual_seed(1)
    reused = grads(True)
    torch.manual_seed(1)
    fresh = grads(False)
    for a, b in zip(reused, fresh, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)

    out = conv(x)
    weight = conv.applied_weight()
    with torch.no_grad():
        conv.weight.add_(1.0)  # an optimiser step: the cached weight is stale
    assert conv.applied_weight() is not weight
    torch.testing.assert_close(conv.applied_weight(), conv.effective_weight())
    del out, weight
    out = conv(x)
    out.sum().backward()
    del out
    assert conv._applied[0]() is None  # nothing held once the graph is gone
    with torch.no_grad():
        conv(x)
    assert conv.applied_weight().requires_grad  # a no-grad forward is not reused when grad is on

    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = conv(x)  # the conv keeps only a bf16 copy: the fp32 weight is held until handed over
    held = conv._applied[0]
    assert out.dtype == torch.bfloat16 and held.dtype == torch.float32
    assert conv.applied_weight(release=True) is held and conv._applied is None


def test_the_power_iteration_runs_in_fp32_under_bf16_autocast():
    """Under bf16 autocast the power iteration and its vectors are float32, bit for bit those of a run without
    autocast, and so is the gradient (``u v^T``); the value ``u^T W v`` itself is summed under the autocast (bf16
    rounding of a logged number)."""
    model, twin = _convs(), _convs()
    torch.manual_seed(5)
    plain = SpectralRegularizer(num_power_iterations=3)
    expected = plain(model)
    torch.manual_seed(5)
    under_bf16 = SpectralRegularizer(num_power_iterations=3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = under_bf16(twin)
    for (name, a), b in zip(plain.named_buffers(), under_bf16.buffers(), strict=True):
        assert b.dtype == torch.float32 and torch.equal(a, b), name
    assert float(value.detach()) == pytest.approx(float(expected.detach()), rel=1e-2)
    expected.backward()
    value.backward()
    for (name, a), b in zip(model.named_parameters(), twin.parameters(), strict=True):
        assert (a.grad is None and b.grad is None) or torch.equal(a.grad, b.grad), name


def test_spectral_first_call_runs_ten_times_the_iterations_from_cpu_draws():
    model = _convs()
    torch.manual_seed(5)
    first = SpectralRegularizer(num_power_iterations=4)(model)
    torch.manual_seed(5)
    manual = SpectralRegularizer(num_power_iterations=40, first_call_multiplier=1)(model)
    torch.testing.assert_close(first, manual, rtol=0, atol=0)


def test_spectral_vectors_are_saved_and_restored_lazily():
    model = _convs()
    objective = NVAEObjective(regularizers=[SpectralRegularizer(), BatchNormScaleRegularizer()], total_steps=10)
    objective.regularizers[0](model)
    state = objective.state_dict()
    assert {k for k in state if ".u_" in k or ".v_" in k} == {
        "regularizers.0.u_4x27", "regularizers.0.v_4x27", "regularizers.0.u_4x6", "regularizers.0.v_4x6",
        "regularizers.0.u_8x36", "regularizers.0.v_8x36",
    }  # fmt: skip
    fresh = NVAEObjective(regularizers=[SpectralRegularizer(), BatchNormScaleRegularizer()], total_steps=10)
    fresh.load_state_dict(state, strict=True)
    torch.testing.assert_close(objective.regularizers[0](model), fresh.regularizers[0](model), rtol=0, atol=0)


def test_batchnorm_regularizer_is_the_sum_of_max_abs_scales():
    model = nn.Sequential(nn.BatchNorm2d(3), nn.BatchNorm2d(2), nn.BatchNorm2d(2, affine=False))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([0.5, -2.0, 1.0]))
        model[1].weight.copy_(torch.tensor([0.25, -0.1]))
    assert BatchNormScaleRegularizer()(model).item() == pytest.approx(2.25)


def test_kl_warmup_and_regularisation_weight_schedules():
    assert kl_warmup_coefficient(3, 1200, 0.3, 1e-4, 1e-4) == pytest.approx(0.008)
    assert kl_warmup_coefficient(0, 1200, 0.3, 1e-4, 1e-4) == 1e-4
    assert kl_warmup_coefficient(1000, 1200, 0.3, 1e-4, 1e-4) == 1.0
    objective = NVAEObjective(regularization_weight=1e-2, regularization_weight_init=1.0, total_steps=100)
    assert objective.regularization_coefficient(0.0) == pytest.approx(1.0)
    assert objective.regularization_coefficient(0.5) == pytest.approx(0.1)
    assert objective.regularization_coefficient(1.0) == pytest.approx(1e-2)
    assert NVAEObjective(regularization_weight=0.1).regularization_coefficient(0.3) == 0.1
    with pytest.raises(ValueError, match="set_total_steps"):
        NVAEObjective().kl_coefficient(1)


def test_kl_balancing():
    # the 'square' scheme: 4^s / (groups at decoder scale s), normalised to min 1
    assert kl_balance_alpha([0, 0, 1, 1]).tolist() == [1, 1, 4, 4]
    assert kl_balance_alpha([0, 0, 1, 1, 1, 1]).tolist() == [1, 1, 2, 2, 2, 2]
    kl = torch.tensor([[1.0, 3.0], [10.0, 30.0], [0.0, 4.0]])  # [G=3, B=2]
    alpha = torch.tensor([1.0, 1.0, 2.0])
    balanced, gamma, vals = balance_kl(kl, 0.5, alpha)
    c = (kl.abs().mean(1) + 0.01) / alpha * (kl.abs().mean(1) + 0.01).sum()
    expected_gamma = c / c.mean()
    torch.testing.assert_close(gamma, expected_gamma)
    torch.testing.assert_close(balanced, 0.5 * (kl * expected_gamma[:, None]).sum(0))
    torch.testing.assert_close(vals, kl.mean(1))
    # no balancing once the warm-up is over
    balanced, gamma, _ = balance_kl(kl, 1.0, alpha)
    torch.testing.assert_close(balanced, kl.sum(0))
    torch.testing.assert_close(gamma, torch.ones(3))


def test_objective_loss_association_and_metrics():
    torch.manual_seed(0)
    model = vaezoo.create("test-nvae")
    objective = NVAEObjective(total_steps=1000, regularization_weight=0.05)
    x = torch.bernoulli(torch.full((3, 1, 8, 8), 0.5))
    noise = [torch.randn(s) for s in model.latent_shapes(3)]
    torch.manual_seed(1)
    loss, metrics = objective(model, x, step=20, noise=noise)
    out = model(x, noise=noise)
    kl_coeff = kl_warmup_coefficient(20, 1000, 0.3, 1e-4, 1e-4)
    balanced, _, _ = balance_kl(out.kl, kl_coeff, kl_balance_alpha(model.group_scales))
    torch.manual_seed(1)
    reference = SpectralRegularizer()
    spectral, bn = reference(model), BatchNormScaleRegularizer()(model)
    expected = torch.mean(out.recon + balanced) + (spectral * 0.05 + bn * 0.05)
    torch.testing.assert_close(loss, expected, rtol=1e-6, atol=0)
    assert metrics["kl_coeff"] == kl_coeff and metrics["regularization_weight"] == 0.05
    torch.testing.assert_close(metrics["nelbo"], nelbo(out).mean())
    loss.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    # without regularisers the loss is the balanced NELBO
    plain, _ = NVAEObjective(total_steps=1000, regularizers=[])(model, x, step=20, noise=noise)
    torch.testing.assert_close(plain, torch.mean(out.recon + balanced))


def test_the_objective_reports_every_metric_by_its_definition():
    """During the warm-up (balancing on, the regularisation weight annealed geometrically from its initial value), the
    loss and each metric from the formulas: kl_coeff, gamma from the batch's |KL| per group over alpha (4^s / groups
    at scale s), lambda = exp((1 - c) log lambda_0 + c log lambda), the regularisers by themselves."""
    torch.manual_seed(0)
    model = vaezoo.create("test-nvae")
    objective = NVAEObjective(total_steps=1000, regularization_weight=0.05, regularization_weight_init=0.5)
    x = torch.bernoulli(torch.full((4, 1, 8, 8), 0.5))  # 4 examples, 3 groups: a sum over the wrong axis shows
    noise = [torch.randn(s) for s in model.latent_shapes(4)]
    torch.manual_seed(1)
    loss, metrics = objective(model, x, step=20, noise=noise)
    out = model(x, noise=noise)
    torch.manual_seed(1)
    spectral, bn = SpectralRegularizer()(model), BatchNormScaleRegularizer()(model)

    c = max(min((20 - 1e-4 * 1000) / (0.3 * 1000), 1.0), 1e-4)
    assert model.group_scales == (0, 1, 1)
    alpha = torch.tensor([1.0, 4.0 / 2, 4.0 / 2])
    kl = out.kl.detach()  # [G, B]
    magnitude = kl.abs().mean(1) + 0.01
    gamma = magnitude / alpha * magnitude.sum()
    gamma = gamma / gamma.mean()
    balanced = c * (kl * gamma[:, None]).sum(0)
    weight = math.exp((1 - c) * math.log(0.5) + c * math.log(0.05))
    nelbo_balanced = (out.recon + balanced).mean()
    expected = {
        "recon": out.recon.mean(), "kl": kl.sum(0).mean(), "nelbo": (out.recon + kl.sum(0)).mean(), "kl_coeffs": gamma,
        "kl_vals": kl.mean(1), "balanced_kl": balanced.mean(), "nelbo_balanced": nelbo_balanced,
        "reg/SpectralRegularizer": spectral, "reg/BatchNormScaleRegularizer": bn,
        "loss": nelbo_balanced + weight * (spectral + bn),
    }  # fmt: skip
    assert set(metrics) == {*expected, "kl_coeff", "regularization_weight"}
    for name, value in expected.items():
        torch.testing.assert_close(metrics[name], value.detach(), rtol=1e-5, atol=1e-6, msg=name)
    torch.testing.assert_close(loss, expected["loss"], rtol=1e-5, atol=1e-6)
    assert metrics["kl_coeff"] == pytest.approx(c) and metrics["regularization_weight"] == pytest.approx(weight)
    torch.testing.assert_close(nelbo(out), out.recon + out.kl.sum(0))  # per example

    # without balancing the warm-up scales the plain sum of the groups' KL
    plain = NVAEObjective(total_steps=1000, regularizers=[], kl_balance=False)
    loss, metrics = plain(model, x, step=20, noise=noise)
    torch.testing.assert_close(loss, (out.recon + c * out.kl.sum(0)).mean(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(metrics["kl_coeffs"], torch.ones(3))


def test_the_balancing_weights_follow_each_layout_and_scheme():
    objective = NVAEObjective(total_steps=10)
    torch.testing.assert_close(objective.balancing_alpha([0, 1, 1], torch.device("cpu")), torch.tensor([1.0, 2.0, 2.0]))
    # another layout (another model) gets its own weights, not the first one's
    square = objective.balancing_alpha([0, 0, 1, 2], torch.device("cpu"))
    torch.testing.assert_close(square, torch.tensor([1.0, 1.0, 8.0, 32.0]))  # 4^s / n_s: 1/2, 1/2, 4, 16 over 1/2
    linear = NVAEObjective(kl_balance_scheme="linear").balancing_alpha([0, 0, 1, 2], torch.device("cpu"))
    torch.testing.assert_close(linear, torch.tensor([1.0, 1.0, 2.0, 4.0]))


def test_objective_settings_and_their_errors():
    """The paper's defaults, and each wrong setting refused in one line naming it."""
    defaults = NVAEObjective()
    assert (defaults.kl_anneal_portion, defaults.kl_const_portion, defaults.kl_const_coeff) == (0.3, 1e-4, 1e-4)
    assert (defaults.kl_balance, defaults.kl_balance_scheme, defaults.regularization_weight) == (True, "square", 1e-2)
    assert defaults.regularization_weight_init is None and defaults.regularization_coefficient(0.3) == 1e-2
    choices = "choose from equal, linear, sqrt, square"
    with pytest.raises(ValueError) as info:
        NVAEObjective(kl_balance_scheme="cube")
    assert str(info.value) == f"unknown kl_balance_scheme 'cube'; {choices}"
    with pytest.raises(ValueError) as info:
        kl_balance_alpha([0, 1], "cube")
    assert str(info.value) == f"unknown KL balancing scheme 'cube'; {choices}"
    for init, weight in [(0.0, 0.1), (-1.0, 0.1), (1.0, 0.0), (1.0, -0.1)]:
        with pytest.raises(ValueError) as info:
            NVAEObjective(regularization_weight_init=init, regularization_weight=weight)
        assert str(info.value) == "annealing the regularisation weight needs positive regularization_weight(_init)"
    with pytest.raises(ValueError) as info:
        NVAEObjective().kl_coefficient(1)
    assert str(info.value).startswith("NVAEObjective needs the run length: call set_total_steps(T)")
    annealed = NVAEObjective(regularization_weight=0.01, regularization_weight_init=0.5)
    assert annealed.regularization_coefficient(0.25) == pytest.approx(
        math.exp(0.75 * math.log(0.5) + 0.25 * math.log(0.01))
    )


def test_importance_weighted_bound_and_bn_readjustment():
    torch.manual_seed(0)
    model = vaezoo.create("test-nvae").eval()
    x = torch.bernoulli(torch.full((2, 1, 8, 8), 0.5))
    noise = [[torch.randn(s) for s in model.latent_shapes(2)] for _ in range(3)]
    iw = importance_weighted_bound(model, x, 3, noise=noise)
    with torch.no_grad():
        log_iw = torch.stack([model(x, noise=n).log_iw for n in noise])
    torch.testing.assert_close(iw["log_iw"], log_iw)
    torch.testing.assert_close(iw["neg_log_p"], -(torch.logsumexp(log_iw, 0) - math.log(3)).mean())
    assert iw["neg_log_p"] <= iw["nelbo"] + 1e-4  # the IW bound is tighter than the ELBO on average (K=3 here)

    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    before = [bn.running_mean.clone() for bn in bns]
    readjust_batchnorm(model, iterations=2, batch_size=4, temperature=0.8)
    assert not model.training
    changed = [not torch.equal(b, bn.running_mean) for b, bn in zip(before, bns, strict=True)]
    encoder_bns = {id(m) for m in model.encoder_tower.modules()} | {id(m) for m in model.preprocess.modules()}
    assert any(changed) and not any(c for c, bn in zip(changed, bns, strict=True) if id(bn) in encoder_bns)
