"""Batch-norm re-adjustment before sampling (NVAE, section 6 of the reference).

The running statistics of every BatchNorm are re-estimated from the model's own samples at the
sampling temperature: the model is put in train mode and draws ``iterations`` batches of
``batch_size`` samples under ``no_grad`` (each BN updates its running averages with its own
momentum), then it goes back to eval mode. Only the layers on the sampling path change.
"""

from __future__ import annotations

import torch

from ..interfaces import GenerativeModel


@torch.no_grad()
def readjust_batchnorm(model: GenerativeModel, iterations: int, batch_size: int = 16, temperature: float | list[float] = 1.0) -> None:
    model.train()
    try:
        for _ in range(iterations):
            model.sample_params(batch_size, temperature)
    finally:
        model.eval()
