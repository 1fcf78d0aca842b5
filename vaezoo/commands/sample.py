"""``vaezoo sample MODEL --n 64 --temperature 0.7 [--readjust_bn ITERS] --out grid.png``."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from ..errors import VaezooError
from ..evaluation.bn import readjust_batchnorm
from ._models import open_model

NAME = "sample"
HELP = "Draw samples from a model into a PNG grid (optionally re-adjusting batch norm first)."


def add_arguments(parser) -> None:
    parser.add_argument(
        "model", type=str, help="run directory, model folder, local-dir:PATH, hf-hub:ORG/REPO or a pretrained name"
    )
    parser.add_argument("--n", type=int, default=64, help="number of samples")
    parser.add_argument(
        "--temperature", type=float | list[float], default=1.0, help="one value, or one per latent group (top first)"
    )
    parser.add_argument(
        "--readjust_bn", type=int, default=0, help="iterations of batch-norm re-adjustment at this temperature"
    )
    parser.add_argument("--readjust_batch", type=int, default=16)
    parser.add_argument("--mean", type=bool, default=True, help="save the likelihood mean (false: a sample of it)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", type=str, default="cpu")
    parser.add_argument("--out", type=str, default="samples.png")


def run(cfg) -> int:
    from torchvision.utils import save_image

    if cfg.n < 1:
        raise VaezooError(f"--n must be positive, got {cfg.n}")
    temperature = cfg.temperature
    if isinstance(temperature, list) and not temperature or any(t <= 0 for t in _as_list(temperature)):
        raise VaezooError(f"--temperature must be positive, got {temperature}")
    out = Path(cfg.out)
    if out.suffix.lower() not in (".png", ".jpg", ".jpeg"):
        raise VaezooError(f"--out must be a .png or .jpg file, got {cfg.out}")
    model, _ = open_model(cfg.model, cfg.device)
    torch.manual_seed(cfg.seed)
    if cfg.readjust_bn:
        readjust_batchnorm(model, cfg.readjust_bn, cfg.readjust_batch, temperature)
    with torch.no_grad():
        images = model.sample(cfg.n, temperature=temperature, mean=cfg.mean)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.stem}.tmp{out.suffix}")
    save_image(images.float().cpu(), tmp, nrow=max(1, int(math.sqrt(cfg.n))))
    tmp.replace(out)
    print(f"wrote {cfg.n} samples at temperature {temperature} to {out}")
    return 0


def _as_list(value):
    return value if isinstance(value, list) else [value]
