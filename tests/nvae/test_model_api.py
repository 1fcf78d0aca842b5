"""The hierarchical model's user API: encode/decode, per-group temperature, gradient checkpointing."""

from __future__ import annotations

import copy

import pytest
import torch
from trainers import make_trainer
from vaezoo_datasets import RandomImages

import vaezoo
from vaezoo.evaluation.metrics import active_units

from .conftest import compiled_kernel_expected


@pytest.fixture
def model():
    torch.manual_seed(0)
    return vaezoo.create("test-nvae")


def _x(model, n=3):
    return torch.rand(n, *model.image_shape).round()


def test_decode_of_encode_is_the_zero_noise_reconstruction(model):
    model.eval()
    x = _x(model)
    with torch.no_grad():
        latents = model.encode(x)
        zeros = [torch.zeros(s) for s in model.latent_shapes(3)]
        expected = model.likelihood.mean(model(x, noise=zeros).params)
        decoded = model.decode(latents)
    assert [tuple(z.shape) for z in latents] == [tuple(s) for s in model.latent_shapes(3)]
    torch.testing.assert_close(decoded, expected)
    frames = model.interpolate(x[0], x[1], steps=4)
    assert frames.shape == (4, *model.image_shape)
    torch.testing.assert_close(frames[-1], decoded[1], rtol=1e-5, atol=1e-6)


def test_per_group_temperature(model):
    """Temperature t on a group scales its prior's standard deviation: with noise eps_g, sampling at temperatures
    [t_0, t_1, ...] (top first) is sampling at temperature 1 with the hand-scaled noise [t_0 eps_0, t_1 eps_1, ...]."""
    model.eval()
    noise = [torch.randn(s) for s in model.latent_shapes(2)]
    groups = len(noise)
    temperatures = [0.3, 0.9, 0.6, 1.2, 0.5][:groups]
    assert groups >= 3 and len(set(temperatures)) == groups
    with torch.no_grad():
        listed = model.sample_params(2, temperatures, noise)
        by_hand = model.sample_params(2, 1.0, [t * eps for t, eps in zip(temperatures, noise, strict=True)])
        same = model.sample_params(2, 0.7, noise)
        scaled = model.sample_params(2, 1.0, [0.7 * eps for eps in noise])
    torch.testing.assert_close(listed, by_hand, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(same, scaled, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="temperatures given"):
        model.sample_params(2, [0.7], noise)


def test_gradient_checkpointing_changes_nothing_but_memory(model):
    model.train()
    x = _x(model, 4)
    noise = [torch.randn(s) for s in model.latent_shapes(4)]
    twin = copy.deepcopy(model)
    twin.gradient_checkpointing = True
    for m in (model, twin):
        out = m(x, noise=noise)
        (out.nelbo.mean()).backward()
    for (name, a), b in zip(model.named_parameters(), twin.parameters(), strict=False):
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-5, atol=1e-6, msg=name)
    for (name, a), b in zip(model.named_buffers(), twin.buffers(), strict=False):
        assert torch.equal(a, b), name  # running statistics updated once, not again when recomputing


def test_active_units_per_group(model):
    data = RandomImages(image_shape=model.image_shape, num_examples=50, binary=True)
    units = active_units(model, data.test_dataset(), max_examples=50)
    # by hand, the definition: latent dimensions whose posterior mean (zero noise) varies across the 50 images by
    # more than 0.01 (Burda et al. 2016), per group
    x = torch.stack([data.test_dataset()[i][0] for i in range(50)])
    with torch.no_grad():
        means = model.eval().encode(x)
    expected = [int((m.flatten(1).var(0) > 0.01).sum()) for m in means]
    assert units == expected and len(units) == model.num_groups
    assert 0 < sum(units) < sum(m[0].numel() for m in means)  # some active, some not: the threshold decides


def test_the_mixture_likelihood_and_its_logsumexp_stay_fp32_under_bf16():
    """An RGB model with the logistic mixture under bf16 autocast: the decoder's output is bf16, the likelihood (a
    logsumexp over the mixture) is computed from it in float32, equal to the float32 computation; the same terms in
    bf16 would be off by far more than the tolerance."""
    torch.manual_seed(0)
    mixture = {"class_path": "DiscretizedLogisticMixture", "init_args": {"num_mixtures": 3}}
    model = vaezoo.create("test-nvae", image_shape=[3, 8, 8], likelihood=mixture).train()
    x = torch.randint(0, 256, (4, 3, 8, 8)).float() / 255
    noise = [torch.randn(s) for s in model.latent_shapes(4)]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x, noise=noise)
    assert out.params.dtype == torch.bfloat16 and out.recon.dtype == torch.float32
    expected = -model.likelihood.log_prob(out.params.float(), model.likelihood.preprocess(x))
    torch.testing.assert_close(out.recon, expected, rtol=1e-6, atol=1e-4)
    in_bf16 = -model.likelihood.log_prob(out.params, model.likelihood.preprocess(x).bfloat16()).float()
    assert float((in_bf16 - expected).detach().abs().max()) > 1e-2


def test_cpu_speed_switches_change_nothing_but_speed(monkeypatch):
    """channels_last and the compiled depthwise weight gradient: the same parameters after two training steps."""
    from vaezoo_nvae.objective import NVAEObjective
    from vaezoo_nvae.regularizers import BatchNormScaleRegularizer, SpectralRegularizer

    from vaezoo.nn import kernels as layers

    calls = []
    original = layers.depthwise_weight_grad
    monkeypatch.setattr(layers, "depthwise_weight_grad", lambda *args: calls.append(1) or original(*args))
    # both runs on oneDNN's dense convs: the small-conv GEMM path (NCHW only) has its own test, and Adamax turns the
    # rounding differences of two conv algorithms on near-zero gradients into differences of the learning rate
    monkeypatch.setattr(layers, "SMALL_CONV_MAX_REDUCTION", 0)
    before = dict(layers.kernel_calls)
    x = torch.rand(4, 1, 8, 8).round()
    results = []
    for levers in ({}, {"channels_last": True, "depthwise_weight_grad": "compiled"}):
        torch.manual_seed(0)
        model = vaezoo.create("test-nvae")
        objective = NVAEObjective(regularizers=[SpectralRegularizer(), BatchNormScaleRegularizer()])
        trainer = make_trainer(max_steps=10, lr=1e-3, progress=False, tensorboard=False, device="cpu", **levers)
        trainer.prepare(model, objective, 4, 40)
        assert any(getattr(m, "depthwise_weight_grad", None) == levers.get("depthwise_weight_grad", "native")
                   for m in model.modules())  # fmt: skip
        torch.manual_seed(1)
        for step in range(2):
            trainer.train_step([x], step)
        results.append({k: v.detach().clone() for k, v in model.state_dict().items()})
    assert len(calls) > 0  # the decoder cells' and flows' depthwise convs took the compiled path
    if compiled_kernel_expected():  # where a compiler works, the compiled kernel computed every one of them
        assert layers.kernel_calls["compiled"] - before["compiled"] == len(calls), layers.kernel_calls
        assert layers.kernel_calls["native"] == before["native"], "the compiled mode fell back to the native kernel"
    for name, value in results[0].items():
        torch.testing.assert_close(results[1][name], value, rtol=1e-4, atol=1e-5, msg=name)


def test_depthwise_weight_grad_switch_needs_a_model_that_has_such_layers():
    from vaezoo.components import ELBO
    from vaezoo.errors import VaezooError

    model = vaezoo.create("vae-mnist", latent_dim=4, hidden_channels=4, hidden_units=16)
    trainer = make_trainer(depthwise_weight_grad="compiled", progress=False, tensorboard=False, device="cpu")
    with pytest.raises(VaezooError, match="depthwise_weight_grad: ConvVAE has no speed switches"):
        trainer.prepare(model, ELBO(), 4, 40)


def test_likelihood_and_kl_are_computed_in_fp32_under_autocast(model):
    """bf16 autocast runs the network in bf16, but the densities, KL terms and the likelihood are float32, and the
    likelihood of the bf16 logits equals the float32 computation from the same logits."""
    model.train()
    x = _x(model, 4)
    noise = [torch.randn(s) for s in model.latent_shapes(4)]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x, noise=noise)
    assert out.params.dtype == torch.bfloat16  # the network itself ran in bf16
    for name in ("recon", "kl", "log_q", "log_p", "log_iw", "nelbo"):
        assert getattr(out, name).dtype == torch.float32, name
    for q in out.extras["posteriors"] + out.extras["priors"]:
        assert q.mu.dtype == q.sigma.dtype == torch.float32
    expected = -model.likelihood.log_prob(out.params.float(), model.likelihood.preprocess(x))
    torch.testing.assert_close(out.recon, expected)
