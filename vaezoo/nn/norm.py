"""BatchNorm with the settings of the hierarchical cells, and BatchNorm followed by Swish."""

from __future__ import annotations

from torch import Tensor, nn

from .activations import swish

#: BatchNorm settings of the hierarchical cells (NVAE's: momentum 0.05, eps 1e-5)
BN_EPS = 1e-5
BN_MOMENTUM = 0.05


def batch_norm(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class BatchNormSwish(nn.Module):
    """BatchNorm followed by Swish (kept as two steps so SyncBatchNorm conversion still applies)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.bn = batch_norm(channels)

    def forward(self, x: Tensor) -> Tensor:
        return swish(self.bn(x))
