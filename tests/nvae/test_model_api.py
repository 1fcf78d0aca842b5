"""The hierarchical model's user API: encode/decode, per-group temperature, gradient checkpointing."""

from __future__ import annotations

import copy

import pytest
import torch

import vaezoo
from vaezoo.data.random_images import RandomImages
from vaezoo.evaluation.metrics import active_units


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
    model.eval()
    noise = [torch.randn(s) for s in model.latent_shapes(2)]
    groups = len(noise)
    with torch.no_grad():
        same = model.sample_params(2, 0.7, noise)
        listed = model.sample_params(2, [0.7] * groups, noise)
        mixed = model.sample_params(2, [0.7] * (groups - 1) + [0.1], noise)
    torch.testing.assert_close(same, listed)
    assert not torch.allclose(same, mixed)
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
    assert len(units) == model.num_groups
    assert all(
        0 <= u <= model.latent_channels * s[2] * s[3] for u, s in zip(units, model.latent_shapes(1), strict=False)
    )
