"""Kingma et al.'s inverse autoregressive flow (IAF), conditioned on a context from the encoder.

One IAF step computes, with an autoregressive network over the latent ``z`` that also reads the context ``h``,

    (m, s) = AR-NN(z, h),   sigma = sigmoid(s + gate_bias),   z' = sigma * z + (1 - sigma) * m,

so ``m_i`` and ``s_i`` depend on ``z_<i`` only, the Jacobian ``dz'/dz`` is triangular with diagonal ``sigma`` and
``log|det| = sum_i log sigma_i``. A positive ``gate_bias`` starts every step close to the identity. The ordering is
raster order over pixels, then channel order; consecutive steps alternate it (the second step reverses the raster
order), as the paper recommends.

NVAE's ``PairedAutoregressiveFlow`` is a shift-only, context-free special case (``sigma = 1``); this flow keeps the
paper's gated scale and uses the context, which in the hierarchical assembler is the feature the posterior of the
group is computed from (the paper's ``h``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vaezoo.interfaces import Example, Flow
from vaezoo.nn import MaskedWeightNormConv2d, WeightNormConv2d, elu


class ContextualIAFStep(nn.Module):
    """One gated IAF step. ``mirror`` reverses the raster order of the autoregressive masks."""

    def __init__(
        self,
        latent_channels: int,
        context_channels: int,
        hidden_multiplier: int = 4,
        kernel_size: int = 3,
        mirror: bool = False,
        gate_bias: float = 2.0,
        output_scale: float = 0.1,
    ) -> None:
        super().__init__()
        hidden = latent_channels * hidden_multiplier
        padding = (kernel_size - 1) // 2
        self.gate_bias = gate_bias
        # the first layer never sees its own latent (zero diagonal); later layers may see their own hidden units
        self.in_conv = MaskedWeightNormConv2d(
            latent_channels, hidden, kernel_size, padding=padding, bias=True, zero_diagonal=True, mirror=mirror
        )
        self.context_conv = WeightNormConv2d(context_channels, hidden, 1, bias=False) if context_channels else None
        self.hidden_conv = MaskedWeightNormConv2d(
            hidden, hidden, kernel_size, padding=padding, bias=True, zero_diagonal=False, mirror=mirror
        )
        # small initial outputs keep m and s near their biases at the start
        offset = math.log(output_scale)
        self.shift = MaskedWeightNormConv2d(
            hidden, latent_channels, 1, bias=True, zero_diagonal=False, mirror=mirror, log_norm_offset=offset
        )
        self.gate = MaskedWeightNormConv2d(
            hidden, latent_channels, 1, bias=True, zero_diagonal=False, mirror=mirror, log_norm_offset=offset
        )

    def forward(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        h = self.in_conv(z)
        if self.context_conv is not None:
            if context is None:
                raise ValueError("this IAF step was built with context channels and needs a context")
            h = h + self.context_conv(context)
        h = elu(self.hidden_conv(elu(h)))
        m, s = self.shift(h), self.gate(h) + self.gate_bias
        sigma = torch.sigmoid(s)
        return sigma * z + (1.0 - sigma) * m, F.logsigmoid(s)


class ContextualIAF(Flow):
    """``num_steps`` context-conditioned IAF steps (Kingma et al. 2016), alternating the autoregressive order.

    ``log_det`` is elementwise (the shape of ``z``): ``sum over steps of log sigmoid(s + gate_bias)``.
    """

    def __init__(
        self,
        latent_channels: int,
        context_channels: int = 0,
        num_steps: int = 2,
        hidden_multiplier: int = 4,
        kernel_size: int = 3,
        gate_bias: float = 2.0,
    ) -> None:
        super().__init__()
        if num_steps < 1:
            raise ValueError(f"ContextualIAF needs at least one step, got {num_steps}")
        self.steps = nn.ModuleList(
            ContextualIAFStep(
                latent_channels,
                context_channels,
                hidden_multiplier,
                kernel_size,
                mirror=i % 2 == 1,
                gate_bias=gate_bias,
            )
            for i in range(num_steps)
        )

    def forward(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        log_det = torch.zeros_like(z)
        for step in self.steps:
            z, step_log_det = step(z, context)
            log_det = log_det + step_log_det
        return z, log_det

    @classmethod
    def example(cls) -> Example:
        z, context = torch.randn(2, 2, 4, 4), torch.randn(2, 5, 4, 4)
        return Example(
            build=lambda: cls(2, 5), inputs=(z, context), output_shape=(2, 2, 4, 4), call=lambda m, i: sum(m(*i))
        )
