"""Module modes for a block of code, restored afterwards."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from torch import nn


@contextlib.contextmanager
def evaluation_mode(module: nn.Module, *keep_training: nn.Module) -> Iterator[nn.Module]:
    """``module`` in eval mode (no dropout; BatchNorm uses, and keeps, its running statistics) for the block, except
    the submodules ``keep_training``, which train; every submodule gets back the mode it had before, so a caller that
    freezes part of a model for one computation leaves no mode change behind."""
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    for part in keep_training:
        part.train()
    try:
        yield module
    finally:
        for m, training in modes:
            m.training = training
