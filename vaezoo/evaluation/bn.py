"""Batch-norm re-adjustment before sampling (NVAE, section 6 of the reference).

The running statistics of every BatchNorm are re-estimated from the model's own samples at the
sampling temperature: the model is put in train mode and draws ``iterations`` batches of
``batch_size`` samples under ``no_grad`` (each BN updates its running averages with its own
momentum), then it goes back to eval mode. Only the layers on the sampling path change. A progress bar shows on
a terminal (:mod:`vaezoo.progress`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..errors import VaezooError
from ..interfaces import GenerativeModel
from ..progress import progress_bar


@torch.no_grad()
def readjust_batchnorm(
    model: GenerativeModel,
    iterations: int,
    batch_size: int = 16,
    temperature: float | list[float] = 1.0,
    noise: Sequence[list[Tensor]] | None = None,
    progress=None,
) -> None:
    """``noise[i]``, when given, is the noise of iteration i (one tensor per latent group, top first).
    ``progress``: a rich Progress to add the bar to (default: a new one, drawn only on a terminal).

    A model without BatchNorm layers is refused in one line: there would be nothing to re-adjust."""
    if not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        raise VaezooError(
            f"BN re-adjustment: {type(model).__name__} has no BatchNorm layers, so there is nothing to re-adjust "
            "(drop --readjust_bn)"
        )
    model.train()
    try:
        with progress_bar(progress) as bars:
            task = bars.add_task(f"BN re-adjustment at temperature {temperature}", total=iterations)
            for i in range(iterations):
                model.sample_params(batch_size, temperature, noise[i] if noise is not None else None)
                bars.advance(task)
    finally:
        model.eval()
