"""NVAE's inverse autoregressive flow: a pair of shift-only masked-conv cells, the second mirrored.

Each cell computes ``z' = z - mu(z)`` where ``mu`` is autoregressive in raster-then-channel order (reversed for the
mirrored cell). A shift-only autoregressive map has a unit Jacobian, so ``log_det`` is exactly zero. The context
(encoder features) is accepted but, as in NVAE, not used.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from vaezoo.interfaces import Example, Flow
from vaezoo.nn import MaskedWeightNormConv2d, elu


class AutoregressiveShiftCell(nn.Module):
    """masked 3x3 (no centre diagonal) -> ELU -> masked depthwise kxk -> ELU -> ELU -> masked 1x1 (with bias) = mu."""

    def __init__(
        self,
        latent_channels: int,
        expansion: int = 6,
        kernel_size: int = 5,
        mirror: bool = False,
        mu_scale: float = 0.1,
    ) -> None:
        super().__init__()
        hidden = int(round(latent_channels * expansion))
        self.in_conv = MaskedWeightNormConv2d(latent_channels, hidden, 3, padding=1, zero_diagonal=True, mirror=mirror)
        self.depthwise = MaskedWeightNormConv2d(
            hidden,
            hidden,
            kernel_size,
            padding=(kernel_size - 1) // 2,
            groups=hidden,
            zero_diagonal=False,
            mirror=mirror,
        )
        # a small initial shift keeps the flow close to the identity at the start of training
        self.mu = MaskedWeightNormConv2d(
            hidden,
            latent_channels,
            1,
            bias=True,
            zero_diagonal=False,
            mirror=mirror,
            log_norm_offset=math.log(mu_scale),
        )

    def forward(self, z: Tensor) -> Tensor:
        # in-place ELUs on the conv outputs: their backward then uses the ELU output, as in NVAE (same maths,
        # and it keeps gradients bit-for-bit closer to the reference)
        hidden = elu(self.depthwise(elu(self.in_conv(z))))
        return z - self.mu(elu(hidden))


class PairedAutoregressiveFlow(Flow):
    """Two autoregressive shift cells, the second with mirrored masks (reverse ordering)."""

    def __init__(
        self, latent_channels: int, context_channels: int = 0, expansion: int = 6, kernel_size: int = 5
    ) -> None:
        super().__init__()
        self.cells = nn.ModuleList(
            AutoregressiveShiftCell(latent_channels, expansion, kernel_size, mirror=mirror) for mirror in (False, True)
        )

    def forward(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        for cell in self.cells:
            z = cell(z)
        return z, torch.zeros_like(z)

    @classmethod
    def example(cls) -> Example:
        z = torch.randn(2, 2, 5, 5)
        return Example(build=lambda: cls(2, 4), inputs=(z,), output_shape=(2, 2, 5, 5), call=lambda m, i: m(i[0])[0])
