"""The layer library every plugin shares: activations, BatchNorm settings, weight-normalised and masked
convolutions, squeeze-and-excitation, skip connections, pre-activation conv blocks and fast kernels.

These are building blocks, not registered components: the registered cells (``vaezoo.components`` and the
plugins) expose their choices as constructor arguments and build themselves from these.
"""

from .activations import ELU, Swish, elu, soft_clamp, swish
from .blocks import BNSwishConv, ELUConv, FactorizedReduce, SqueezeExcitation, UpsampleSkip, skip_connection
from .conv import MaskedWeightNormConv2d, WeightNormConv2d, autoregressive_mask, channel_mask, weight_normalize
from .kernels import depthwise_weight_grad
from .modes import evaluation_mode
from .norm import (
    BN_EPS,
    BN_MOMENTUM,
    BN_SWISH_MODES,
    BatchNormSwish,
    BatchNormSwishFunction,
    batch_norm,
    recompute_bn_swish_outputs,
)

__all__ = [
    "BN_EPS",
    "BN_MOMENTUM",
    "BN_SWISH_MODES",
    "BNSwishConv",
    "BatchNormSwish",
    "BatchNormSwishFunction",
    "ELU",
    "ELUConv",
    "FactorizedReduce",
    "MaskedWeightNormConv2d",
    "SqueezeExcitation",
    "Swish",
    "UpsampleSkip",
    "WeightNormConv2d",
    "autoregressive_mask",
    "batch_norm",
    "channel_mask",
    "depthwise_weight_grad",
    "elu",
    "evaluation_mode",
    "recompute_bn_swish_outputs",
    "skip_connection",
    "soft_clamp",
    "swish",
    "weight_normalize",
]
