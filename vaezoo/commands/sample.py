"""``vaezoo sample MODEL --n 64 --temperature 0.7 [--readjust_bn ITERS] --out grid.png``."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from ..errors import VaezooError
from ..evaluation.bn import readjust_batchnorm
from ..hardware import check_device
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
    parser.add_argument("--readjust_batch", type=int, default=16, help="samples per batch-norm re-adjustment batch")
    parser.add_argument("--mean", type=bool, default=True, help="save the likelihood mean (false: a sample of it)")
    parser.add_argument(
        "--sampler", type=str | None, default=None, help="a prior sampler the model offers (default: its own)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the noise")
    parser.add_argument("--device", type=str, default="cpu", help="cpu, cuda, cuda:1, mps, ...")
    parser.add_argument("--out", type=str, default="samples.png", help="the PNG grid to write")


def run(cfg) -> int:
    from torchvision.utils import save_image

    if cfg.n < 1:
        raise VaezooError(f"--n must be positive, got {cfg.n}")
    temperature = cfg.temperature
    if isinstance(temperature, list) and not temperature or any(not 0 < t < math.inf for t in _as_list(temperature)):
        raise VaezooError(f"--temperature must be positive and finite, got {temperature}")
    out = Path(cfg.out)
    if out.suffix.lower() not in (".png", ".jpg", ".jpeg"):
        raise VaezooError(f"--out must be a .png or .jpg file, got {cfg.out}")
    if cfg.readjust_bn < 0 or cfg.readjust_bn and cfg.readjust_batch < 1:
        raise VaezooError(
            f"--readjust_bn must be 0 or more and --readjust_batch positive, got {cfg.readjust_bn} and {cfg.readjust_batch}"
        )
    check_device(cfg.device, "--device")
    model, _ = open_model(cfg.model, cfg.device)
    if isinstance(temperature, list):  # the model would raise a ValueError deep inside sampling
        groups = len(model.latent_shapes(1))
        if len(temperature) != groups:
            raise VaezooError(
                f"--temperature: {len(temperature)} values for {groups} latent groups (give one, or one per group)"
            )
    torch.manual_seed(cfg.seed)
    if cfg.readjust_bn:
        readjust_batchnorm(model, cfg.readjust_bn, cfg.readjust_batch, temperature)
    samplers = model.samplers()
    if cfg.sampler is not None and cfg.sampler not in samplers:
        known = ", ".join(samplers) or "none (it samples its priors directly)"
        raise VaezooError(f"--sampler {cfg.sampler!r}: this model's samplers are {known}")
    with torch.no_grad():
        if cfg.sampler is None:
            images = model.sample(cfg.n, temperature=temperature, mean=cfg.mean)
        else:  # the model's sample_params takes the sampler; mean/sample of the likelihood as in sample()
            params = model.sample_params(cfg.n, temperature, sampler=cfg.sampler)
            images = model.likelihood.mean(params) if cfg.mean else model.likelihood.sample(params)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.stem}.tmp{out.suffix}")
    save_image(images.float().cpu(), tmp, nrow=max(1, int(math.sqrt(cfg.n))))
    tmp.replace(out)
    report = model.sample_report()  # e.g. the sampler and its number of function evaluations
    details = "".join(f", {key.replace('_', ' ')} {value}" for key, value in report.items())
    print(f"wrote {cfg.n} samples at temperature {temperature} to {out}{details}")
    return 0


def _as_list(value):
    return value if isinstance(value, list) else [value]
