"""What the save/load tests compare: a model's outputs for fixed inputs and noise (a helper module, not tests)."""

from __future__ import annotations

import torch


def model_outputs(model, n: int = 3) -> list[torch.Tensor]:
    """A sample, the NELBO, the log importance weight and the likelihood parameters for a seeded batch and noise."""
    torch.manual_seed(1)
    noise = [torch.randn(s) for s in model.latent_shapes(n)]
    x = torch.rand(n, *model.image_shape).round()
    with torch.no_grad():
        out = model(x, noise=noise)
        return [model.sample(n, noise=noise), out.nelbo, out.log_iw, out.params]
