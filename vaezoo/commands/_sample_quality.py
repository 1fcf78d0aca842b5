"""The sample-quality part of ``vaezoo evaluate``: ``--metrics fid,kid,prc,fd_digits`` and the options of their protocol.

A metric name comes from a registered feature extractor (its ``metric``: the Fréchet distance in its features, its
``kid_metric`` or its ``prc_metric``: improved precision and recall); ``likelihood`` is the test ELBO and IW-NLL. Extractors are opened before the model, so a missing
weights file is refused in one line within seconds, before anything is computed or written.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from ..errors import VaezooError
from ..evaluation.sample_quality import (
    KID_SUBSET_SIZE,
    KID_SUBSETS,
    PRC_NEIGHBOURS,
    generated_features,
    kernel_distance,
    precision_recall,
    reference_statistics,
    shard_size,
    statistics_distance,
)
from ..registry import unknown_name_message

LIKELIHOOD = "likelihood"
#: feature rows kept per side for KID (its subsets are drawn from these) and for precision/recall
KID_MAX_ROWS = 10_000


def add_arguments(parser) -> None:
    parser.add_argument(
        "--metrics", type=str, default=LIKELIHOOD,
        help="comma-separated: likelihood (test ELBO and IW-NLL), and sample-quality metrics of the registered feature "
        "extractors (vaezoo list feature_extractor): fd_digits, kid_digits, prc_digits, fid, kid, prc",
    )  # fmt: skip
    parser.add_argument("--n_samples", type=int, default=50_000, help="samples generated for sample-quality metrics")
    parser.add_argument("--temperature", type=float, default=1.0, help="sampling temperature of those samples")
    parser.add_argument(
        "--decoder_output", type=str, default="mean", help="mean: score the decoder's mean (NVAE); sample: a sample"
    )
    parser.add_argument("--readjust_bn", type=int, default=0, help="BN re-adjustment iterations before sampling")
    parser.add_argument("--readjust_batch", type=int, default=16, help="batch size of the BN re-adjustment passes")
    parser.add_argument(
        "--reference", type=str, default="train", help="the data split the samples are compared with (train or test)"
    )
    parser.add_argument(
        "--fid_weights", type=str | None, default=None,
        help="the Inception weights file for fid/kid (pt_inception-2015-12-05-6726825d.pth; default $VAEZOO_FID_WEIGHTS)",
    )  # fmt: skip


@dataclass
class SampleQuality:
    """What ``--metrics`` asks for: the likelihood metrics or not, and the opened extractors with their metrics."""

    likelihood: bool
    #: (extractor, [(metric name, "fd" or "kid")])
    extractors: list[tuple[Any, list[tuple[str, str]]]] = field(default_factory=list)


def plan(cfg) -> SampleQuality:
    """Parse ``--metrics`` and the protocol options; open the extractors (a missing weights file fails here)."""
    from ..plugins import get_registry

    names = [name.strip() for name in str(cfg.metrics).split(",") if name.strip()]
    if not names:
        raise VaezooError("--metrics is empty: give likelihood and/or sample-quality metrics, comma-separated")
    offered: dict[str, tuple[Any, str]] = {}
    for entry in get_registry().entries("feature_extractor"):
        offered[entry.target.metric] = (entry.target, "fd")
        if entry.target.kid_metric:
            offered[entry.target.kid_metric] = (entry.target, "kid")
        if entry.target.prc_metric:
            offered[entry.target.prc_metric] = (entry.target, "prc")
    wanted: dict[type, list[tuple[str, str]]] = {}
    for name in dict.fromkeys(names):
        if name == LIKELIHOOD:
            continue
        if name not in offered:
            raise VaezooError("--metrics: " + unknown_name_message("metric", name, [LIKELIHOOD, *sorted(offered)]))
        cls, what = offered[name]
        wanted.setdefault(cls, []).append((name, what))
    if LIKELIHOOD not in names and getattr(cfg, "compare", None):
        raise VaezooError("--compare pairs the likelihood metrics: add likelihood to --metrics")
    if wanted:
        if cfg.n_samples < 2:
            raise VaezooError(f"--n_samples must be 2 or more, got {cfg.n_samples}")
        if not 0 < cfg.temperature < float("inf"):
            raise VaezooError(f"--temperature must be positive and finite, got {cfg.temperature}")
        if cfg.decoder_output not in ("mean", "sample"):
            raise VaezooError(f"--decoder_output must be mean or sample, got {cfg.decoder_output!r}")
        if cfg.reference not in ("train", "test"):
            raise VaezooError(f"--reference must be train or test, got {cfg.reference!r}")
        if cfg.readjust_bn < 0 or cfg.readjust_bn and cfg.readjust_batch < 1:
            raise VaezooError(
                f"--readjust_bn must be 0 or more and --readjust_batch positive, got {cfg.readjust_bn} and "
                f"{cfg.readjust_batch}"
            )
    return SampleQuality(LIKELIHOOD in names, [(cls.open(cfg.fid_weights), metrics) for cls, metrics in wanted.items()])


def _gather_rows(rows: Tensor | None, wanted: int, ctx) -> Tensor | None:
    """Every rank's kept feature rows, in rank order (each rank kept its share of ``wanted``); None without rows."""
    from ..training.distributed import all_gather_tensors

    if not ctx.enabled or rows is None:
        return rows
    longest = shard_size(wanted, 0, ctx.world_size)
    padded = torch.zeros(longest, rows.shape[1], dtype=rows.dtype)
    padded[: len(rows)] = rows
    gathered = all_gather_tensors(padded, ctx)
    return torch.cat([g[: shard_size(wanted, r, ctx.world_size)] for r, g in enumerate(gathered)])


def run(cfg, quality: SampleQuality, model, data, data_spec, console, ctx=None) -> list[dict[str, Any]]:
    """Every requested sample-quality figure with its protocol, printed and returned (for ``--out``).

    Under torchrun (``ctx`` of several processes) each rank draws its share of the samples from its own seeded stream
    and scores them; the feature sums are added across ranks (exactly) and the kept rows gathered in rank order, and
    rank 0 alone computes the reference statistics (and writes their cache), the figures and the output. Ranks other
    than 0 return no figures."""
    from ..config import namespace_to_dict
    from ..training.distributed import DistributedContext

    ctx = ctx or DistributedContext()

    if not quality.extractors:
        return []
    if cfg.readjust_bn:
        from ..evaluation.bn import readjust_batchnorm

        with torch.random.fork_rng():
            torch.manual_seed(cfg.seed)
            readjust_batchnorm(model, cfg.readjust_bn, cfg.readjust_batch, cfg.temperature)
    spec = namespace_to_dict(cfg.data) if cfg.data is not None else data_spec
    spec = {"class_path": spec} if isinstance(spec, str) else spec
    identity = {"spec": spec, "describe": data.describe()}
    dataset = data.train_dataset() if cfg.reference == "train" else data.test_dataset()
    figures = []
    for extractor, metrics in quality.extractors:
        extractor.to(model.device)
        protocol = extractor.protocol()
        kid = any(what in ("kid", "prc") for _, what in metrics)  # both need feature rows, not only sums
        started = time.perf_counter()
        reference = None
        if ctx.is_main:  # one rank reads or writes the cache
            reference = reference_statistics(
                dataset, extractor, data_identity=identity, split=cfg.reference, batch_size=cfg.batch_size,
                keep=KID_MAX_ROWS if kid else 0, device=model.device,
            )  # fmt: skip
            for note in reference.notes:
                console.print(f"[yellow]note[/]: {note}")
        wanted = min(cfg.n_samples, KID_MAX_ROWS) if kid else 0
        generated, kept = generated_features(
            model, extractor, cfg.n_samples, batch_size=cfg.batch_size, temperature=cfg.temperature,
            decoder_output=cfg.decoder_output, seed=cfg.seed, keep=shard_size(wanted, ctx.rank, ctx.world_size),
            rank=ctx.rank, world_size=ctx.world_size,
        )  # fmt: skip
        generated.all_reduce(model.device)  # the sums of every rank's samples (nothing in one process)
        kept = _gather_rows(kept, wanted, ctx)
        seconds = time.perf_counter() - started
        if not ctx.is_main:
            continue
        for name, what in metrics:
            record: dict[str, Any] = {"metric": name, "label": extractor.label}
            if what == "fd":
                record["value"] = statistics_distance(generated, reference.stats)
            elif what == "prc":
                precision, recall = precision_recall(reference.features, kept, PRC_NEIGHBOURS)
                record.update(
                    precision=precision, recall=recall, k=PRC_NEIGHBOURS,
                    label=f"improved precision and recall (Kynkaanniemi et al. 2019, k = {PRC_NEIGHBOURS}) in the "
                    f"features of {protocol['name']}",
                    kid_rows=f"the first {len(kept)} generated and {len(reference.features)} reference feature rows",
                )  # fmt: skip
            else:
                value, spread, size = kernel_distance(kept, reference.features, KID_SUBSETS, KID_SUBSET_SIZE, cfg.seed)
                record.update(
                    value=value, std=spread, subsets=KID_SUBSETS, subset_size=size,
                    label=f"KID in the features of {protocol['name']} (unbiased MMD^2, cubic polynomial kernel)",
                    kid_rows=f"subsets drawn from the first {len(kept)} generated and {len(reference.features)} "
                    "reference feature rows",
                )  # fmt: skip
            record.update(
                feature_extractor=protocol["name"], extractor_weights=protocol["weights"],
                extractor_sha256=protocol["weights_sha256"], features=protocol["features"], resize=protocol["resize"],
                n_generated=generated.count, temperature=cfg.temperature, decoder_output=cfg.decoder_output,
                readjust_bn=cfg.readjust_bn, readjust_batch=cfg.readjust_batch if cfg.readjust_bn else None,
                seed=cfg.seed,
                reference={
                    "data": data.describe(), "split": cfg.reference, "size": reference.stats.count,
                    "content_sha256": reference.info["content_sha256"], "statistics": reference.status,
                    "cache": str(reference.path),
                },
                seconds=seconds,
            )  # fmt: skip
            figures.append(record)
            console.print(f"[bold]{name}[/] = {_format(record)}: {record['label']}")
            console.print(f"protocol: {describe_protocol(record)}")
    return figures


def _format(record: dict) -> str:
    if "precision" in record:
        return f"precision {record['precision']:.4f}, recall {record['recall']:.4f}"
    if "std" in record:
        return f"{record['value']:.6g} +- {record['std']:.2g}"
    return f"{record['value']:.6g}"


def describe_protocol(record: dict) -> str:
    """One line: everything a sample-quality figure depends on."""
    bn = (
        f"BN re-adjusted ({record['readjust_bn']} x {record['readjust_batch']} samples)"
        if record["readjust_bn"]
        else "no BN re-adjustment"
    )
    ref = record["reference"]
    kid = (
        f"; {record['subsets']} subsets of {record['subset_size']}, {record['kid_rows']}" if "subsets" in record else ""
    )
    if "precision" in record:
        kid = f"; {record['kid_rows']}"
    return (
        f"{record['feature_extractor']} (weights {record['extractor_weights']}, sha256 {record['extractor_sha256'][:16]}); "
        f"features: {record['features']}; resize: {record['resize']}; {record['n_generated']:,} samples at temperature "
        f"{record['temperature']}, decoder {record['decoder_output']}, {bn}, seed {record['seed']}; reference: "
        f"{ref['data']}, {ref['split']} split, {ref['size']:,} images ({ref['statistics']} statistics){kid}; "
        f"{record['seconds']:.1f} s"
    )
