"""``vaezoo evaluate MODEL_OR_RUN``: test ELBO and importance-weighted NLL, and sample-quality metrics (``--metrics``),
each labelled with its protocol."""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from ..data.fit import check_data_fits
from ..data.splits import atomic_write_text
from ..evaluation import evaluate
from ..evaluation.paired import paired_differences
from ..evaluation.protocol import protocol_text
from ..hardware import check_device
from ..provenance import finished, now, provenance
from ..training.memory import keep_freed_memory
from . import _sample_quality
from ._models import build_data, open_model

NAME = "evaluate"
HELP = "Report the test ELBO and the k-sample importance-weighted NLL of a model or run, or sample-quality metrics."


def add_arguments(parser) -> None:
    parser.add_argument(
        "model", type=str, help="run directory, model folder, local-dir:PATH, hf-hub:ORG/REPO or a pretrained name"
    )
    parser.add_argument(
        "--data", type=dict | str | None, default=None, help="data module spec (default: the run's recipe)"
    )
    parser.add_argument("--k", type=int, default=100, help="importance samples (0: ELBO only)")
    parser.add_argument("--batch_size", type=int, default=100, help="test examples per batch")
    parser.add_argument(
        "--max_batch", type=int | None, default=None,
        help="rows per batched forward pass of the k samples (default: 2000 on GPUs, 200 on CPUs)",
    )  # fmt: skip
    parser.add_argument(
        "--channels_last", type=bool, default=True, help="run in the channels_last memory format (faster on CPUs)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the evaluation's own random draws")
    parser.add_argument("--device", type=str, default="cpu", help="cpu, cuda, cuda:1, mps, ...")
    parser.add_argument("--out", type=str | None, default=None, help="also write the results as JSON here")
    parser.add_argument(
        "--compare", type=str | None, default=None,
        help="a second model or run, evaluated on the same data with the same seed (the same posterior noise where "
        "the latent shapes agree): both bounds and the paired per-example difference (MODEL - COMPARE) with its "
        "standard error",
    )  # fmt: skip
    _sample_quality.add_arguments(parser)


def run(cfg) -> int:
    from rich.console import Console

    from ..errors import VaezooError

    if cfg.k < 0:
        raise VaezooError(f"--k must be 0 or more, got {cfg.k}")
    if cfg.batch_size < 1:
        raise VaezooError(f"--batch_size must be positive, got {cfg.batch_size}")
    if cfg.max_batch is not None and cfg.max_batch < 1:
        raise VaezooError(f"--max_batch must be positive, got {cfg.max_batch}")
    check_device(cfg.device, "--device")
    quality = _sample_quality.plan(cfg)  # opens the feature extractors: a missing weights file stops here
    from ..training.distributed import barrier, init_from_environment, shutdown

    ctx, device = init_from_environment(cfg.device)  # under torchrun: one process group, samples split across ranks
    try:
        began = now()
        model, data_spec = open_model(cfg.model, str(device))
        data = build_data(data_spec, cfg.data, model)
        check_data_fits(model, data, "--data" if cfg.data is not None else "the run's data")
        console = Console(soft_wrap=True, quiet=not ctx.is_main)
        # the likelihood metrics run on rank 0 (the test set is small next to the samples); the others wait
        likelihood = quality.likelihood and ctx.is_main
        payload = _likelihood(cfg, model, data, console) if likelihood else {"model": cfg.model}
        barrier(ctx)
        figures = _sample_quality.run(cfg, quality, model, data, data_spec, console, ctx)
        if cfg.out and ctx.is_main:
            payload = {
                **payload,
                **({"sample_quality": figures} if figures else {}),
                "provenance": finished(provenance(started=began)),
                # the record of the run that trained the model, when its folder has one (vaezoo fit writes it)
                "model_provenance": getattr(getattr(model, "card", None), "provenance", None),
            }
            if ctx.enabled:
                payload["processes"] = ctx.world_size
            atomic_write_text(Path(cfg.out), json.dumps(payload, indent=2) + "\n")
        shutdown(together=True)
    finally:
        shutdown()
    return 0


def _likelihood(cfg, model, data, console) -> dict:
    """The test ELBO and IW-NLL (and the ``--compare`` model's, paired), printed; the ``--out`` record."""
    dataset = data.test_dataset()
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    if model.device.type == "cpu":
        keep_freed_memory()  # k passes over large batches: reuse freed blocks instead of faulting them back in
    # a model whose log p is costly (e.g. an ODE per importance sample) says how far k is worth going, and why
    notes, k = model.evaluation_protocol(), cfg.k
    capped = notes.get("max_k") is not None and k > notes["max_k"]
    if capped:
        k = notes["max_k"]
    other = _open_comparison(cfg, model) if cfg.compare else None
    if other is not None:  # both models take the same k: the smaller cap of the two
        other_max = other.evaluation_protocol().get("max_k")
        if other_max is not None and k > other_max:
            k, capped = other_max, True
    started = time.perf_counter()
    result = evaluate(model, dataset, k=k, batch_size=cfg.batch_size, max_batch=cfg.max_batch, seed=cfg.seed)
    seconds = time.perf_counter() - started
    protocol = protocol_text(model, data, k, cfg.max_batch)
    if capped:
        console.print(f"[yellow]note[/]: --k {cfg.k} lowered to {k} for this model: {notes.get('why', '')}")
    console.print(f"[bold]{cfg.model}[/]: {result.describe()}")
    console.print(f"protocol: {protocol}; {seconds:.1f} s")
    compared = {}
    if other is not None:
        other_result = evaluate(other, dataset, k=k, batch_size=cfg.batch_size, max_batch=cfg.max_batch, seed=cfg.seed)
        paired = paired_differences(result, other_result)
        shared = _latent_shapes(other) is not None and _latent_shapes(other) == _latent_shapes(model)
        console.print(f"[bold]{cfg.compare}[/]: {other_result.describe()}")
        noise = "the same posterior noise" if shared else "other latent shapes, so other posterior noise"
        for name, value in paired.items():
            console.print(f"paired difference of the {name.replace('_', ' ')}, model - compared: {value.describe()}")
        console.print(f"paired on seed {cfg.seed}: {noise}")
        compared = {
            "compare": {"model": cfg.compare, **other_result.as_dict(), "same_posterior_noise": shared},
            "paired_difference": {name: value.as_dict() for name, value in paired.items()},
        }
    return {
        **result.as_dict(),
        "protocol": protocol,
        "seconds": seconds,
        "model": cfg.model,
        "torch_threads": torch.get_num_threads(),
        **compared,
    }


def _open_comparison(cfg, model):
    """The ``--compare`` model, refused (one line) when its images are not the model's."""
    from ..errors import VaezooError

    other, _ = open_model(cfg.compare, cfg.device)
    if tuple(other.image_shape) != tuple(model.image_shape):
        raise VaezooError(
            f"--compare {cfg.compare}: its images are {list(other.image_shape)}, the model's {list(model.image_shape)}"
        )
    if cfg.channels_last:
        other.to(memory_format=torch.channels_last)
    return other


def _latent_shapes(model):
    try:
        return model.latent_shapes(1)
    except NotImplementedError:  # a model that draws its own noise: nothing is shared
        return None
