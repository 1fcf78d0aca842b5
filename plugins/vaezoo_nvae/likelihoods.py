"""NVAE's output distributions: the discretised logistic mixture with autoregressive
RGB means, and a soft-clamped continuous Normal."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from vaezoo.distributions import SoftClampedNormal
from vaezoo.interfaces import Example, Likelihood


def reduce_bits(x: Tensor, num_bits: int) -> Tensor:
    """Quantise [0, 1] intensities (8-bit data) to ``num_bits`` bits, back in [0, 1]."""
    if num_bits == 8:
        return x
    x = torch.floor(x * 255 / 2 ** (8 - num_bits))
    return x / (2**num_bits - 1)


class DiscretizedLogisticMixture(Likelihood):
    """Mixture of ``num_mixtures`` discretised logistics over RGB, with the G and B means linear in the lower channels.

    Decoder channels: K mixture logits, then for each of R, G, B: K means, K log-scales (clamped at -7) and
    K coefficients (tanh). Data is scored on ``2^num_bits`` levels; values above 0.99 use the open upper tail
    and values below -0.999 the open lower tail (in [-1, 1] units), as in NVAE.
    """

    def __init__(self, num_mixtures: int = 10, num_bits: int = 8) -> None:
        super().__init__()
        self.num_mixtures, self.num_bits = num_mixtures, num_bits

    def param_channels(self, data_channels: int) -> int:
        if data_channels != 3:
            raise ValueError(f"DiscretizedLogisticMixture models RGB data, got {data_channels} channels")
        return 10 * self.num_mixtures

    def preprocess(self, x: Tensor) -> Tensor:
        return reduce_bits(x, self.num_bits)

    def _split(self, params: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        b, _, h, w = params.shape
        k = self.num_mixtures
        logit_probs = params[:, :k]
        rest = params[:, k:].view(b, 3, 3 * k, h, w)
        means = rest[:, :, :k]
        log_scales = torch.clamp(rest[:, :, k : 2 * k], min=-7.0)
        coeffs = torch.tanh(rest[:, :, 2 * k : 3 * k])
        return logit_probs, means, log_scales, coeffs

    def log_prob_map(self, params: Tensor, x: Tensor) -> Tensor:
        """Per-pixel log-probability ``[B, H, W]`` (summed over RGB, mixed over components)."""
        logit_probs, means, log_scales, coeffs = self._split(params)
        max_value = 2.0**self.num_bits - 1
        x = 2 * x - 1.0
        x = x.unsqueeze(4).expand(-1, -1, -1, -1, self.num_mixtures).permute(0, 1, 4, 2, 3)  # [B, 3, K, H, W]
        mean_r = means[:, 0]
        mean_g = means[:, 1] + coeffs[:, 0] * x[:, 0]
        mean_b = means[:, 2] + coeffs[:, 1] * x[:, 0] + coeffs[:, 2] * x[:, 1]
        centered = x - torch.stack([mean_r, mean_g, mean_b], dim=1)
        inv_scale = torch.exp(-log_scales)
        plus_in = inv_scale * (centered + 1.0 / max_value)
        min_in = inv_scale * (centered - 1.0 / max_value)
        cdf_delta = torch.sigmoid(plus_in) - torch.sigmoid(min_in)
        log_cdf_plus = plus_in - F.softplus(plus_in)
        log_one_minus_cdf_min = -F.softplus(min_in)
        mid_in = inv_scale * centered
        log_pdf_mid = mid_in - log_scales - 2.0 * F.softplus(mid_in)
        # a tiny bin mass falls back to the density at the bin centre times the bin width
        log_prob_inner = torch.where(
            cdf_delta > 1e-5, torch.log(torch.clamp(cdf_delta, min=1e-10)), log_pdf_mid - math.log(max_value / 2)
        )
        # NVAE's edges: 0.99 (not 0.999) at the top, so the two highest 8-bit levels both get the open tail
        log_probs = torch.where(x < -0.999, log_cdf_plus, torch.where(x > 0.99, log_one_minus_cdf_min, log_prob_inner))
        log_probs = torch.sum(log_probs, 1) + F.log_softmax(logit_probs, dim=1)
        return torch.logsumexp(log_probs, dim=1)

    def log_prob(self, params: Tensor, x: Tensor) -> Tensor:
        return torch.sum(self.log_prob_map(params, x), dim=[1, 2])

    @staticmethod
    def _couple(x: Tensor, coeffs: Tensor) -> Tensor:
        """Apply the autoregressive RGB coupling with clamping to [-1, 1]; return an image in [0, 1]."""
        r = torch.clamp(x[:, 0], -1, 1.0)
        g = torch.clamp(x[:, 1] + coeffs[:, 0] * r, -1, 1)
        b = torch.clamp(x[:, 2] + coeffs[:, 1] * r + coeffs[:, 2] * g, -1, 1)
        return torch.stack([r, g, b], dim=1) / 2.0 + 0.5

    def sample(self, params: Tensor, temperature: float = 1.0) -> Tensor:
        logit_probs, means, log_scales, coeffs = self._split(params)
        gumbel = -torch.log(-torch.log(torch.empty_like(logit_probs).uniform_(1e-5, 1.0 - 1e-5)))
        choice = torch.argmax(logit_probs / temperature + gumbel, dim=1)
        select = F.one_hot(choice, self.num_mixtures).permute(0, 3, 1, 2).to(params.dtype).unsqueeze(1)
        means = torch.sum(means * select, dim=2)
        log_scales = torch.sum(log_scales * select, dim=2)
        coeffs = torch.sum(coeffs * select, dim=2)
        u = torch.empty_like(means).uniform_(1e-5, 1.0 - 1e-5)
        x = means + torch.exp(log_scales) * temperature * (torch.log(u) - torch.log(1.0 - u))
        return self._couple(x, coeffs)

    def mean(self, params: Tensor) -> Tensor:
        logit_probs, means, _, coeffs = self._split(params)
        weights = torch.softmax(logit_probs, dim=1).unsqueeze(1)
        return self._couple(torch.sum(means * weights, dim=2), torch.sum(coeffs * weights, dim=2))

    @classmethod
    def example(cls) -> Example:
        params = torch.randn(2, 30, 4, 4, requires_grad=True)
        x = torch.randint(0, 256, (2, 3, 4, 4)).float() / 255
        return Example(
            build=lambda: cls(num_mixtures=3), inputs=(params, x), output_shape=(2,), call=lambda m, i: m.log_prob(*i)
        )


class SoftClampedNormalLikelihood(Likelihood):
    """A continuous soft-clamped Normal on ``2x - 1`` (decoder channels: C means, then C raw log-sigmas)."""

    def __init__(self, num_bits: int = 8) -> None:
        super().__init__()
        self.num_bits = num_bits

    def param_channels(self, data_channels: int) -> int:
        return 2 * data_channels

    def preprocess(self, x: Tensor) -> Tensor:
        return reduce_bits(x, self.num_bits)

    def _dist(self, params: Tensor, temperature: float = 1.0) -> SoftClampedNormal:
        mu, log_sigma = torch.chunk(params, 2, dim=1)
        return SoftClampedNormal(mu, log_sigma, temperature)

    def log_prob(self, params: Tensor, x: Tensor) -> Tensor:
        return torch.sum(self._dist(params).log_prob(2 * x - 1.0), dim=[1, 2, 3])

    def sample(self, params: Tensor, temperature: float = 1.0) -> Tensor:
        x, _ = self._dist(params, temperature).sample()
        return torch.clamp(x, -1, 1.0) / 2.0 + 0.5

    def mean(self, params: Tensor) -> Tensor:
        return torch.clamp(self._dist(params).mu, -1, 1.0) / 2.0 + 0.5

    @classmethod
    def example(cls) -> Example:
        params = torch.randn(2, 6, 4, 4, requires_grad=True)
        x = torch.rand(2, 3, 4, 4)
        return Example(build=cls, inputs=(params, x), output_shape=(2,), call=lambda m, i: m.log_prob(*i))
