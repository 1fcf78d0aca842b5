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
def save_samples(model: GenerativeModel, path: Path, seed: int, num_samples: int, temperature: float = 1.0) -> None:
    """A square-ish grid of ``num_samples`` samples drawn at ``temperature``."""
    was_training = model.training
    model.eval()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        images = model.sample(num_samples, temperature=temperature)
    model.train(was_training)
    save_grid(images, path, nrow=max(1, int(math.sqrt(num_samples))))


@torch.no_grad()
def save_reconstructions(
    model: GenerativeModel, data: DataModule, path: Path, device: torch.device, n: int = 8
) -> None:
    """The first ``n`` test images (odd rows) above their reconstructions (even rows)."""
    test_set = data.test_dataset()
    x = torch.stack([test_set[i][0] for i in range(min(n, len(test_set)))]).to(device)
    was_training = model.training
    model.eval()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        recon = model.reconstruct(x)
    model.train(was_training)
    save_grid(torch.cat([x, recon.to(x.dtype)]), path, nrow=x.shape[0])


def save_grid(images: Tensor, path: Path, nrow: int) -> None:
    from torchvision.utils import save_image

    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    save_image(images.float().cpu(), tmp, nrow=nrow)
    tmp.replace(path)
