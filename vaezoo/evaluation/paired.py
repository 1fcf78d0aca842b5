"""Paired evaluation: random draws an evaluation owns, and the paired difference of two evaluations.

Every random draw of an evaluation comes from a generator the evaluation owns, one per named stream
(:func:`owned_randomness`, :func:`evaluation_generator`): the posterior noise of the ELBO pass, that of the
importance samples, and whatever a component draws while it is scored (a Hutchinson probe of an ODE
log-likelihood, say). A stream's draws do not depend on the other streams, so two models (or one model with two
priors) evaluated with the same seed see the same posterior noise wherever their latent shapes agree, whatever
else either of them draws; their bounds then differ only where the models differ, and the per-example difference
has a small standard error (:func:`paired_difference`).

Outside an evaluation :func:`evaluation_generator` returns None and components draw from torch's global generator.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import asdict, dataclass

import torch
from torch import Tensor


class RandomStreams:
    """Generators by stream name and device, each seeded from the evaluation's seed and the stream's name
    (``seeds`` gives some streams an explicit seed)."""

    def __init__(self, seed: int, seeds: dict[str, int] | None = None) -> None:
        self.seed = int(seed)
        self.seeds = dict(seeds or {})
        self._generators: dict[tuple[str, str], torch.Generator] = {}

    def stream_seed(self, name: str) -> int:
        if name in self.seeds:
            return self.seeds[name]
        return (self.seed * 1_000_003 + zlib.crc32(name.encode())) % (2**63)

    def generator(self, name: str, device: torch.device | str = "cpu") -> torch.Generator:
        device = torch.device(device)
        key = (name, str(device))
        if key not in self._generators:
            generator = torch.Generator(device=device)
            generator.manual_seed(self.stream_seed(name))
            self._generators[key] = generator
        return self._generators[key]


_CURRENT: ContextVar[RandomStreams | None] = ContextVar("vaezoo_evaluation_streams", default=None)


@contextmanager
def owned_randomness(seed: int, seeds: dict[str, int] | None = None) -> Iterator[RandomStreams]:
    """The streams of one evaluation, current for :func:`evaluation_generator` inside the block."""
    streams = RandomStreams(seed, seeds)
    token = _CURRENT.set(streams)
    try:
        yield streams
    finally:
        _CURRENT.reset(token)


def evaluation_generator(name: str, device: torch.device | str = "cpu") -> torch.Generator | None:
    """The current evaluation's generator of stream ``name`` on ``device``; None outside an evaluation."""
    streams = _CURRENT.get()
    return None if streams is None else streams.generator(name, device)


@dataclass
class PairedDifference:
    """``mean`` of ``first - second`` per example and its standard error ``stderr`` (the sample standard deviation
    of the differences over the square root of ``n``), beside the two means."""

    first: float
    second: float
    mean: float
    stderr: float
    n: int

    def as_dict(self) -> dict:
        return asdict(self)

    def describe(self, unit: str = "nats") -> str:
        return f"{self.mean:+.4f} +- {self.stderr:.4f} {unit} (paired, standard error over {self.n} examples)"


def paired_difference(first: Tensor, second: Tensor) -> PairedDifference:
    """The paired difference of two per-example values of the same examples (``[N]`` each)."""
    if first.shape != second.shape or first.dim() != 1 or first.numel() < 1:
        raise ValueError(f"need two [N] tensors of the same examples, got {tuple(first.shape)}, {tuple(second.shape)}")
    a, b = first.double(), second.double()
    diff = a - b
    n = diff.numel()
    stderr = float(diff.std(unbiased=True)) / math.sqrt(n) if n > 1 else math.nan
    return PairedDifference(first=float(a.mean()), second=float(b.mean()), mean=float(diff.mean()), stderr=stderr, n=n)


def paired_differences(first: object, second: object) -> dict[str, PairedDifference]:
    """The paired difference of every per-example value two evaluation results share (``result.per_example``:
    ``elbo``, and ``iw_log_likelihood`` when both ran importance samples), first minus second."""
    a, b = getattr(first, "per_example", None) or {}, getattr(second, "per_example", None) or {}
    return {name: paired_difference(a[name], b[name]) for name in a if name in b}
