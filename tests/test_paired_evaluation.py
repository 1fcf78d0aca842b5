"""Paired evaluation: the draws an evaluation owns and the paired difference with its standard error."""

from __future__ import annotations

import math

import torch
from torch.utils.data import TensorDataset

import vaezoo
from vaezoo.evaluation import evaluate, paired_difference


def test_paired_difference_is_the_mean_difference_with_its_standard_error():
    first, second = torch.tensor([1.0, 2.0, 3.0, 4.0]), torch.tensor([0.5, 2.5, 2.0, 3.0])
    # by hand: differences 0.5, -0.5, 1, 1; mean 0.5; squared deviations 0, 1, 0.25, 0.25 sum to 1.5, over n - 1 = 3
    # a variance of 0.5, so a standard error of sqrt(0.5 / 4)
    paired = paired_difference(first, second)
    assert (paired.first, paired.second, paired.n) == (2.5, 2.0, 4)
    assert abs(paired.mean - 0.5) < 1e-12 and abs(paired.stderr - math.sqrt(0.5 / 4)) < 1e-12


class _DrawsFromTheGlobalGenerator(torch.nn.Module):
    """Wraps a model and draws from torch's global generator before every forward (as a stochastic trace would)."""

    def __init__(self, model):
        super().__init__()
        self.inner = model

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.inner, name)

    def forward(self, x, noise=None):
        torch.randn(7)
        return self.inner(x, noise=noise)


def test_evaluation_draws_its_posterior_noise_from_its_own_generator():
    torch.manual_seed(0)
    model = vaezoo.create("test-nvae").eval()
    x = torch.bernoulli(torch.full((10, *model.image_shape), 0.5))
    data = TensorDataset(x)
    result = evaluate(model, data, k=0, batch_size=4, seed=5)
    # by hand: a generator seeded with the seed, one standard-normal tensor per group, top first, batch by batch
    generator = torch.Generator().manual_seed(5)
    expected = []
    with torch.no_grad():
        for batch in x.split(4):
            noise = [torch.randn(shape, generator=generator) for shape in model.latent_shapes(len(batch))]
            expected.append(-model(batch, noise=noise).nelbo)
    torch.testing.assert_close(result.per_example["elbo"].float(), torch.cat(expected), rtol=0, atol=1e-5)
    assert abs(result.elbo_nats - float(torch.cat(expected).double().mean())) < 1e-5
    # a model that draws from the global generator between the posterior draws sees the same posterior noise
    again = evaluate(_DrawsFromTheGlobalGenerator(model), data, k=3, batch_size=4, seed=5)
    torch.testing.assert_close(again.per_example["elbo"], result.per_example["elbo"], rtol=0, atol=0)
    plain = evaluate(model, data, k=3, batch_size=4, seed=5)
    torch.testing.assert_close(
        again.per_example["iw_log_likelihood"], plain.per_example["iw_log_likelihood"], rtol=0, atol=0
    )
    assert "per_example" not in result.as_dict()
