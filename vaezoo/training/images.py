"""Preview images of a run: grids of samples and of test images above their reconstructions.

Both draw their noise inside :func:`torch.random.fork_rng` from a fixed seed, so that saving previews does not perturb
the training RNG stream on CPU (a run with previews trains exactly like one without) and previews of successive steps
are comparable. Files are written to a temporary name and renamed, so a kill never leaves a half-written PNG.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import Tensor

from ..interfaces import DataModule, GenerativeModel


@torch.no_grad()
def sample_grid(model: GenerativeModel, seed: int, num_samples: int, temperature: float = 1.0) -> Tensor:
    """A square-ish grid of ``num_samples`` samples drawn at ``temperature``: float ``[3, H, W]`` on the CPU."""
    was_training = model.training
    model.eval()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        images = model.sample(num_samples, temperature=temperature)
    model.train(was_training)
    return make_grid(images, nrow=max(1, int(math.sqrt(num_samples))))


@torch.no_grad()
def reconstruction_grid(model: GenerativeModel, data: DataModule, device: torch.device, n: int = 8) -> Tensor:
    """The first ``n`` test images (top row) above their reconstructions (bottom row): float ``[3, H, W]`` on the
    CPU."""
    test_set = data.test_dataset()
    x = torch.stack([test_set[i][0] for i in range(min(n, len(test_set)))]).to(device)
    was_training = model.training
    model.eval()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        recon = model.reconstruct(x)
    model.train(was_training)
    return make_grid(torch.cat([x, recon.to(x.dtype)]), nrow=x.shape[0])


def save_samples(model: GenerativeModel, path: Path, seed: int, num_samples: int, temperature: float = 1.0) -> None:
    """:func:`sample_grid` as a PNG."""
    save_grid(sample_grid(model, seed, num_samples, temperature), path)


def save_reconstructions(
    model: GenerativeModel, data: DataModule, path: Path, device: torch.device, n: int = 8
) -> None:
    """:func:`reconstruction_grid` as a PNG."""
    save_grid(reconstruction_grid(model, data, device, n), path)


def make_grid(images: Tensor, nrow: int) -> Tensor:
    """Images ``[N, C, H, W]`` in [0, 1] tiled ``nrow`` to a row with 2-pixel gaps: ``[3, H', W']`` float32 on the
    CPU (one channel is repeated to three)."""
    from torchvision.utils import make_grid as tile

    return tile(images.detach().float().cpu(), nrow=nrow)


def save_grid(grid: Tensor, path: Path) -> None:
    """A grid (:func:`make_grid`) written as a PNG, through a temporary file."""
    from torchvision.utils import save_image

    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    save_image(grid, tmp)
    tmp.replace(path)
