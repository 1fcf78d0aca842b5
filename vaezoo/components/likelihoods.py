"""Likelihoods that belong to no single paper: independent Bernoulli pixels."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ..interfaces import Example, Likelihood


class BernoulliLikelihood(Likelihood):
    """Independent Bernoulli pixels with logits from the decoder; scored in nats.

    ``crop`` pixels on each side are ignored when scoring (e.g. 2 for MNIST padded to 32x32).
    """

    report_unit = "nats"

    def __init__(self, crop: int = 0) -> None:
        super().__init__()
        self.crop = crop

    def param_channels(self, data_channels: int) -> int:
        return data_channels

    def _cropped(self, t: Tensor) -> Tensor:
        c = self.crop
        return t[..., c:-c, c:-c] if c else t

    def log_prob_map(self, params: Tensor, x: Tensor) -> Tensor:
        """Per-pixel log-probabilities ``[B, C, H, W]``, uncropped."""
        return -F.binary_cross_entropy_with_logits(params, x, reduction="none")

    def log_prob(self, params: Tensor, x: Tensor) -> Tensor:
        return self._cropped(self.log_prob_map(params, x)).flatten(1).sum(1)

    def sample(self, params: Tensor, temperature: float = 1.0) -> Tensor:
        return torch.bernoulli(torch.sigmoid(params))

    def mean(self, params: Tensor) -> Tensor:
        return torch.sigmoid(params)

    def num_scored_dims(self, data_shape: Sequence[int]) -> int:
        c, h, w = data_shape
        return c * (h - 2 * self.crop) * (w - 2 * self.crop)

    @classmethod
    def example(cls) -> Example:
        logits = torch.randn(2, 1, 8, 8, requires_grad=True)
        x = torch.bernoulli(torch.full((2, 1, 8, 8), 0.5))
        return Example(
            build=lambda: cls(crop=1), inputs=(logits, x), output_shape=(2,), call=lambda m, i: m.log_prob(*i)
        )
