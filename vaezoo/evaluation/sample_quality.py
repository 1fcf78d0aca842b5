"""Sample quality: the Fréchet distance, the kernel (KID) distance and precision/recall between a model's samples and
a reference set, in the features of a registered feature extractor (:class:`vaezoo.interfaces.FeatureExtractor`).

Features are streamed: samples are drawn and scored batch by batch, and only float64 sums are kept (the count, the
sum of the features and the sum of their outer products), so no image set is ever held in memory; KID and
precision/recall keep at most ``keep`` feature rows per side. Sums add exactly across processes (:meth:`FeatureStatistics.all_reduce`), so the
mean and covariance of n samples split over any number of ranks are those of the n samples at once (rather than
the average of per-rank covariances, which depends on the number of ranks).

Reference statistics are computed once per data set, split, extractor and resize rule and cached under
``$VAEZOO_HOME/reference_statistics/`` (one safetensors file per key, the key a hash of the data set's spec, the
split, the extractor's weights sha256 and its resize rule). The file also records the sha256 of the reference images
themselves; every use re-reads the data set and compares it, and a file whose data, extractor or rule differ from
the current ones is recomputed with a note saying why: a stale cache is never used silently.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from ..hub.store import vaezoo_home
from ..interfaces import FeatureExtractor, GenerativeModel
from ..progress import progress_bar

REFERENCE_DIR = "reference_statistics"
#: the cache file layout; a file of another format is recomputed
CACHE_FORMAT = "vaezoo-reference-statistics-1"
KID_SUBSETS = 100
KID_SUBSET_SIZE = 1000
#: the neighbour whose distance sets a feature row's radius in precision/recall (the paper's k)
PRC_NEIGHBOURS = 3


# ---------------------------------------------------------------------------------------------------------------
# Streamed statistics and the distances
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class FeatureStatistics:
    """Sums of a stream of feature rows in float64: ``count``, ``total`` (sum of rows) and ``outer`` (sum of the
    rows' outer products). Adding two is exact, so shards merge into the statistics of their union."""

    count: int
    total: Tensor
    outer: Tensor

    @classmethod
    def empty(cls, dim: int) -> FeatureStatistics:
        return cls(0, torch.zeros(dim, dtype=torch.float64), torch.zeros(dim, dim, dtype=torch.float64))

    @classmethod
    def of(cls, features: Tensor) -> FeatureStatistics:
        stats = cls.empty(features.shape[1])
        stats.update(features)
        return stats

    def update(self, features: Tensor) -> None:
        rows = features.detach().to("cpu", torch.float64).reshape(len(features), -1)
        self.count += len(rows)
        self.total += rows.sum(0)
        self.outer += rows.T @ rows

    def merged(self, other: FeatureStatistics) -> FeatureStatistics:
        return FeatureStatistics(self.count + other.count, self.total + other.total, self.outer + other.outer)

    def all_reduce(self, device: torch.device | str = "cpu") -> None:
        """Sum the statistics of every process of the default process group in place (nothing when there is
        none). ``device``: where the collective runs (a CUDA device for NCCL)."""
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            return
        dim = len(self.total)
        packed = torch.cat([torch.tensor([float(self.count)], dtype=torch.float64), self.total, self.outer.flatten()])
        packed = packed.to(device)
        dist.all_reduce(packed, op=dist.ReduceOp.SUM)
        packed = packed.cpu()
        self.count = int(round(float(packed[0])))
        self.total = packed[1 : 1 + dim].clone()
        self.outer = packed[1 + dim :].reshape(dim, dim).clone()

    @property
    def mean(self) -> Tensor:
        return self.total / self.count

    @property
    def covariance(self) -> Tensor:
        """The unbiased sample covariance (divided by n - 1)."""
        if self.count < 2:
            raise ValueError(f"a covariance needs at least 2 feature rows, got {self.count}")
        mean = self.mean
        return (self.outer - self.count * torch.outer(mean, mean)) / (self.count - 1)


def _psd_sqrt(matrix: Tensor) -> Tensor:
    values, vectors = torch.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * values.clamp_min(0).sqrt()) @ vectors.T


def frechet_distance(mean_a: Tensor, cov_a: Tensor, mean_b: Tensor, cov_b: Tensor) -> float:
    """``|mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2))``, the squared 2-Wasserstein distance of two Gaussians.

    The trace of the matrix square root is computed in float64 from symmetric eigen-decompositions:
    ``tr (S_a S_b)^(1/2) = tr (S_a^(1/2) S_b S_a^(1/2))^(1/2)``, whose argument is symmetric positive semi-definite,
    so singular covariances (more dimensions than samples, dead features) give a real result with no offset."""
    mean_a, mean_b, cov_a, cov_b = (t.to(torch.float64) for t in (mean_a, mean_b, cov_a, cov_b))
    root_a = _psd_sqrt(cov_a)
    middle = root_a @ cov_b @ root_a
    trace_root = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp_min(0).sqrt().sum()
    diff = mean_a - mean_b
    return float(diff @ diff + torch.trace(cov_a) + torch.trace(cov_b) - 2 * trace_root)


def statistics_distance(a: FeatureStatistics, b: FeatureStatistics) -> float:
    return frechet_distance(a.mean, a.covariance, b.mean, b.covariance)


def kernel_distance(
    features_a: Tensor,
    features_b: Tensor,
    subsets: int = KID_SUBSETS,
    subset_size: int = KID_SUBSET_SIZE,
    seed: int = 0,
) -> tuple[float, float, int]:
    """KID: the unbiased squared MMD with the cubic polynomial kernel ``k(x, y) = (x.y / d + 1)^3``, averaged over
    ``subsets`` random subsets of ``m = min(subset_size, n_a, n_b)`` rows of each side (drawn without replacement
    within a subset). Returns ``(mean, standard deviation over the subsets, m)``."""
    a, b = features_a.to(torch.float64), features_b.to(torch.float64)
    m = min(subset_size, len(a), len(b))
    if m < 2:
        raise ValueError(f"KID needs at least 2 feature rows per side, got {len(a)} and {len(b)}")
    dim = a.shape[1]
    generator = torch.Generator().manual_seed(seed)
    values = []
    for _ in range(subsets):
        x = a[torch.randperm(len(a), generator=generator)[:m]]
        y = b[torch.randperm(len(b), generator=generator)[:m]]
        k_xx, k_yy, k_xy = ((p @ q.T / dim + 1) ** 3 for p, q in ((x, x), (y, y), (x, y)))
        within = (k_xx.sum() - k_xx.diagonal().sum() + k_yy.sum() - k_yy.diagonal().sum()) / (m * (m - 1))
        values.append(float(within - 2 * k_xy.mean()))
    spread = torch.tensor(values, dtype=torch.float64)
    return float(spread.mean()), float(spread.std(unbiased=False)), m


def _kth_neighbour_radii(features: Tensor, k: int, chunk: int) -> Tensor:
    """Each row's distance to its ``k``-th nearest other row (the radius of its ball in the manifold estimate)."""
    radii = []
    for start in range(0, len(features), chunk):
        distances = torch.cdist(features[start : start + chunk], features)
        # the k+1 smallest include the row's own distance 0
        radii.append(distances.topk(k + 1, dim=1, largest=False).values[:, k])
    return torch.cat(radii)


def _covered(points: Tensor, centres: Tensor, radii: Tensor, chunk: int) -> Tensor:
    """For each point, whether it lies in at least one ball (``centres``, ``radii``), boundary included."""
    inside = []
    for start in range(0, len(points), chunk):
        distances = torch.cdist(points[start : start + chunk], centres)
        inside.append((distances <= radii[None, :]).any(dim=1))
    return torch.cat(inside)


def precision_recall(
    real: Tensor, generated: Tensor, k: int = PRC_NEIGHBOURS, chunk: int = 1024
) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al., NeurIPS 2019): each set's manifold is the union of balls
    around its feature rows, of radius the distance to the row's ``k``-th nearest neighbour in its own set (k = 3 in
    the paper). Precision is the fraction of generated rows inside the real manifold (how many samples look real),
    recall the fraction of real rows inside the generated manifold (how much of the data the samples cover). Float64
    distances, computed ``chunk`` rows at a time."""
    a, b = real.to(torch.float64), generated.to(torch.float64)
    if min(len(a), len(b)) <= k:
        raise ValueError(f"precision/recall with k = {k} needs more than {k} feature rows per side, got {len(a)} "
                         f"and {len(b)}")  # fmt: skip
    precision = _covered(b, a, _kth_neighbour_radii(a, k, chunk), chunk).double().mean()
    recall = _covered(a, b, _kth_neighbour_radii(b, k, chunk), chunk).double().mean()
    return float(precision), float(recall)


# ---------------------------------------------------------------------------------------------------------------
# Features of samples and of data, streamed
# ---------------------------------------------------------------------------------------------------------------
def shard_size(n: int, rank: int, world_size: int) -> int:
    """How many of ``n`` samples rank ``rank`` of ``world_size`` draws (the first ``n % world_size`` one more)."""
    return n // world_size + (1 if rank < n % world_size else 0)


@torch.no_grad()
def generated_features(
    model: GenerativeModel,
    extractor: FeatureExtractor,
    n: int,
    *,
    batch_size: int = 100,
    temperature: float | list[float] = 1.0,
    decoder_output: str = "mean",
    seed: int = 0,
    keep: int = 0,
    rank: int = 0,
    world_size: int = 1,
    progress=None,
) -> tuple[FeatureStatistics, Tensor | None]:
    """Statistics of the features of ``n`` samples (this rank's share of them when ``world_size`` > 1; call
    :meth:`FeatureStatistics.all_reduce` to sum the ranks), drawn in batches under the seed (each rank its own
    stream) and never all in memory; plus the first ``keep`` feature rows (for KID; None when ``keep`` is 0).
    ``decoder_output``: ``mean`` scores the likelihood's mean, ``sample`` a sample of it."""
    if decoder_output not in ("mean", "sample"):
        raise ValueError(f"decoder_output must be 'mean' or 'sample', got {decoder_output!r}")
    count = shard_size(n, rank, world_size)
    stats, kept, kept_rows = FeatureStatistics.empty(extractor.feature_dim), [], 0
    devices = [model.device] if model.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), progress_bar(progress) as bars:
        torch.manual_seed(seed + 1_000_003 * rank)
        task = bars.add_task(f"samples at temperature {temperature}, features", total=count)
        done = 0
        while done < count:
            size = min(batch_size, count - done)
            images = model.sample(size, temperature=temperature, mean=decoder_output == "mean")
            features = extractor(images.float().contiguous())
            stats.update(features)
            if kept_rows < keep:
                kept.append(features[: keep - kept_rows].detach().float().cpu())
                kept_rows += len(kept[-1])
            done += size
            bars.advance(task, size)
    return stats, (torch.cat(kept) if kept else None)


@torch.no_grad()
def dataset_features(
    dataset: Dataset,
    extractor: FeatureExtractor | None,
    *,
    batch_size: int = 100,
    keep: int = 0,
    device: torch.device | str = "cpu",
    progress=None,
    description: str = "reference features",
) -> tuple[FeatureStatistics | None, Tensor | None, str]:
    """Statistics of the features of every image of ``dataset`` (in order), the first ``keep`` feature rows, and
    the sha256 of the images as loaded (float32 bytes, in order). With ``extractor`` None only the hash is computed
    (a check of a cached file)."""
    hasher = hashlib.sha256()
    stats = FeatureStatistics.empty(extractor.feature_dim) if extractor is not None else None
    kept, kept_rows = [], 0
    with progress_bar(progress) as bars:
        task = bars.add_task(description, total=len(dataset))
        for x, *_ in DataLoader(dataset, batch_size=batch_size, shuffle=False):
            hasher.update(x.to(torch.float32).contiguous().numpy().tobytes())
            if extractor is not None:
                features = extractor(x.to(device, torch.float32))
                stats.update(features)
                if kept_rows < keep:
                    kept.append(features[: keep - kept_rows].detach().float().cpu())
                    kept_rows += len(kept[-1])
            bars.advance(task, len(x))
    return stats, (torch.cat(kept) if kept else None), hasher.hexdigest()


# ---------------------------------------------------------------------------------------------------------------
# Cached reference statistics
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class Reference:
    """Reference statistics with what they are of; ``status`` says whether they were computed now, read from the
    cache, or recomputed (and why)."""

    stats: FeatureStatistics
    features: Tensor | None
    info: dict[str, Any]
    path: Path
    status: str
    notes: list[str] = field(default_factory=list)


def reference_dir() -> Path:
    return vaezoo_home() / REFERENCE_DIR


def reference_key(data_identity: dict, split: str, extractor_protocol: dict) -> dict[str, Any]:
    """What cached statistics are of, except the content hash of the data (checked separately)."""
    return {
        "format": CACHE_FORMAT,
        "data": data_identity,
        "split": split,
        "extractor": extractor_protocol.get("name"),
        "extractor_sha256": extractor_protocol.get("weights_sha256"),
        "resize": extractor_protocol.get("resize"),
    }


def reference_path(key: dict, cache_dir: Path | None = None) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:24]
    safe_name = "".join(c if c.isalnum() or c in "-_." else "_" for c in str(key["extractor"]))
    return (cache_dir or reference_dir()) / f"{safe_name}-{key['split']}-{digest}.safetensors"


def _read_cache(path: Path) -> tuple[dict, FeatureStatistics, Tensor | None]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        info = json.loads((handle.metadata() or {})["info"])
        tensors = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118 (safe_open has no iter)
    stats = FeatureStatistics(int(tensors["count"][0]), tensors["total"], tensors["outer"])
    return info, stats, tensors.get("features")


def _write_cache(path: Path, info: dict, stats: FeatureStatistics, features: Tensor | None) -> None:
    from safetensors.torch import save_file

    tensors = {"count": torch.tensor([stats.count], dtype=torch.int64), "total": stats.total, "outer": stats.outer}
    if features is not None:
        tensors["features"] = features.contiguous()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    save_file(tensors, str(tmp), metadata={"info": json.dumps(info, sort_keys=True)})
    os.replace(tmp, path)


def reference_statistics(
    dataset: Dataset,
    extractor: FeatureExtractor,
    *,
    data_identity: dict,
    split: str,
    batch_size: int = 100,
    keep: int = 0,
    device: torch.device | str = "cpu",
    cache_dir: Path | None = None,
    progress=None,
) -> Reference:
    """The reference statistics of ``dataset`` (the ``split`` of the data set ``data_identity`` names, e.g. its
    class path and init args) in ``extractor``'s features, from the cache when the cached file is of the same data
    (same spec and same image content), the same extractor weights and the same resize rule; computed (and cached)
    otherwise. ``keep``: feature rows to keep as well (KID); a cached file with fewer is recomputed."""
    protocol = extractor.protocol()
    key = reference_key(data_identity, split, protocol)
    path = reference_path(key, cache_dir)
    notes: list[str] = []
    status = "computed"
    if path.is_file():
        try:
            info, stats, features = _read_cache(path)
        except Exception as exc:  # noqa: BLE001 - any unreadable file is recomputed, and said so
            notes.append(f"cached reference statistics {path} unreadable ({type(exc).__name__}): recomputed")
            status = "recomputed"
        else:
            stale = [name for name in key if info.get(name) != key[name]]
            if not stale:
                _, _, content = dataset_features(
                    dataset, None, batch_size=batch_size, progress=progress, description="reference data check"
                )
                if info.get("content_sha256") != content:
                    stale.append("content_sha256")
            short = features is None and keep > 0 or features is not None and len(features) < min(keep, stats.count)
            if not stale and not short:
                kept = features[:keep] if keep and features is not None else None
                return Reference(stats, kept, info, path, "cached", notes)
            why = f"other {', '.join(stale)}" if stale else f"fewer than {keep} feature rows kept"
            notes.append(f"cached reference statistics {path} were not for this reference ({why}): recomputed")
            status = "recomputed"
    stats, features, content = dataset_features(
        dataset, extractor, batch_size=batch_size, keep=keep, device=device, progress=progress
    )
    info = {**key, "content_sha256": content, "size": stats.count}
    _write_cache(path, info, stats, features)
    return Reference(stats, features, info, path, status, notes)
