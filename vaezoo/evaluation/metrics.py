"""Test-set ELBO and importance-weighted NLL.

The k importance samples are evaluated as batched forward passes (the batch repeated k times, in
chunks of at most ``max_batch`` rows), which gives the same estimate as k sequential passes.
Results are in nats per example and, for bits/dim likelihoods, in bits per scored dimension.
A progress bar (examples, then importance samples) shows on a terminal (:mod:`vaezoo.progress`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields

import torch
from torch.utils.data import DataLoader, Dataset

from ..interfaces import GenerativeModel
from ..progress import progress_bar
from .paired import evaluation_generator, owned_randomness


@dataclass
class EvaluationResult:
    elbo_nats: float
    iw_nll_nats: float | None
    k: int
    num_examples: int
    scored_dims: int
    unit: str
    #: per-example values in nats, ``{"elbo": [N], "iw_log_likelihood": [N] (when k > 0)}``, in the data set's
    #: order, for paired comparisons (:func:`~vaezoo.evaluation.paired.paired_difference`); not in :meth:`as_dict`
    per_example: dict[str, torch.Tensor] | None = field(default=None, repr=False, compare=False)

    @property
    def nelbo_bpd(self) -> float:
        return -self.elbo_nats / (math.log(2) * self.scored_dims)

    @property
    def iw_nll_bpd(self) -> float | None:
        return None if self.iw_nll_nats is None else self.iw_nll_nats / (math.log(2) * self.scored_dims)

    def as_dict(self) -> dict:
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "per_example"}
        out.update(nelbo_bpd=self.nelbo_bpd, iw_nll_bpd=self.iw_nll_bpd)
        return out

    def describe(self) -> str:
        if self.unit == "nats":
            elbo = f"test ELBO {self.elbo_nats:.2f} nats"
            iw = f", test IW-NLL (k={self.k}) {self.iw_nll_nats:.2f} nats" if self.iw_nll_nats is not None else ""
        else:
            elbo = f"test NELBO {self.nelbo_bpd:.4f} bits/dim"
            iw = f", test IW-NLL (k={self.k}) {self.iw_nll_bpd:.4f} bits/dim" if self.iw_nll_bpd is not None else ""
        return f"{elbo}{iw} on {self.num_examples} examples"


def default_max_batch(device: torch.device) -> int:
    """Rows per forward pass of the batched importance samples. GPUs want large batches; on CPUs a pass of a
    couple of hundred rows keeps the activations in cache, and larger passes are slower (the quickstart NVAE, k=100
    on 500 digits in batches of 100: 66 s at one sample per pass, 65 s at two, 82 s at five)."""
    return 2000 if device.type == "cuda" else 200


def is_channels_last(model: torch.nn.Module) -> bool:
    """Whether the model's 4-D weights are stored channels_last (``trainer.speed.channels_last``)."""
    for parameter in model.parameters():
        if parameter.dim() == 4 and parameter.shape[1] > 1 and parameter.shape[2] * parameter.shape[3] > 1:
            return parameter.is_contiguous(memory_format=torch.channels_last) and not parameter.is_contiguous()
    return False


@torch.no_grad()
def evaluate(
    model: GenerativeModel,
    dataset: Dataset,
    k: int = 0,
    batch_size: int = 100,
    max_batch: int | None = None,
    seed: int = 0,
    progress=None,
) -> EvaluationResult:
    """ELBO (one sample per example) and, when ``k > 0``, the k-sample importance-weighted NLL.

    The k samples run batched, ``max_batch`` rows per forward pass (default :func:`default_max_batch`); inputs take
    the model's memory format (channels_last models get channels_last batches). ``progress``: a rich Progress to
    add the bars to (default: a new one, drawn only on a terminal).

    Every random draw comes from generators this evaluation owns (:mod:`.paired`): the ELBO pass's posterior noise
    from a stream seeded with ``seed``, the importance samples' from one seeded with ``seed + 1``, anything a
    component draws (e.g. a Hutchinson probe) from its own named stream. Two models evaluated with the same seed
    thus see the same posterior noise where their latent shapes agree; ``result.per_example`` holds the values to
    pair.
    """
    was_training = model.training
    model.eval()
    device = model.device
    max_batch = max_batch or default_max_batch(device)
    memory_format = torch.channels_last if is_channels_last(model) else torch.contiguous_format
    cpu_rng = torch.get_rng_state()
    torch.manual_seed(seed)  # anything still drawn from the global generator is seeded too
    elbo_values: list[torch.Tensor] = []
    iw_values: list[torch.Tensor] = []
    try:
        with (
            owned_randomness(seed, {"posterior": seed, "importance_posterior": seed + 1}),
            progress_bar(progress) as bars,
        ):
            total = _length(dataset)
            elbo_task = bars.add_task("test ELBO (examples)", total=total)
            iw_task = bars.add_task(f"test IW-NLL, k={k} (samples)", total=total * k if total else None) if k else None
            # two passes with their own seeds, so that the ELBO does not depend on k
            elbo_sum, iw_sum, count = 0.0, 0.0, 0
            posterior = evaluation_generator("posterior", device)
            for x, *_ in DataLoader(dataset, batch_size=batch_size, shuffle=False):
                noise = _draw_noise(model, x.shape[0], device, posterior)
                out = model(x.to(device).contiguous(memory_format=memory_format), noise=noise)
                elbo_values.append((-out.nelbo).detach().double().cpu())
                elbo_sum += float(elbo_values[-1].sum())
                count += x.shape[0]
                bars.advance(elbo_task, x.shape[0])
            if k > 0:
                torch.manual_seed(seed + 1)
                generator = evaluation_generator("importance_posterior", device)
                for x, *_ in DataLoader(dataset, batch_size=batch_size, shuffle=False):
                    x = x.to(device).contiguous(memory_format=memory_format)
                    done = lambda n: bars.advance(iw_task, n)  # noqa: E731 - per chunk of samples
                    values = iw_log_likelihood(model, x, k, max_batch, on_samples=done, generator=generator)
                    iw_values.append(values.double().cpu())
                    iw_sum += float(iw_values[-1].sum())
    finally:
        torch.set_rng_state(cpu_rng)
        model.train(was_training)
    scored = model.likelihood.num_scored_dims(model.image_shape)
    return EvaluationResult(
        elbo_nats=elbo_sum / count,
        iw_nll_nats=(-iw_sum / count) if k > 0 else None,
        k=k,
        num_examples=count,
        scored_dims=scored,
        unit=model.likelihood.report_unit,
        per_example={"elbo": torch.cat(elbo_values), **({"iw_log_likelihood": torch.cat(iw_values)} if k > 0 else {})},
    )


def _draw_noise(
    model: GenerativeModel, batch: int, device: torch.device, generator: torch.Generator | None
) -> list[torch.Tensor] | None:
    """One standard-normal tensor per latent group from ``generator`` (None for a model without latent shapes:
    it then draws its own)."""
    try:
        shapes = model.latent_shapes(batch)
    except NotImplementedError:
        return None
    return [torch.randn(shape, device=device, generator=generator) for shape in shapes]


def importance_samples(
    model: GenerativeModel,
    x: torch.Tensor,
    k: int,
    max_batch: int = 2000,
    noise: Sequence[list[torch.Tensor]] | None = None,
    on_samples: Callable[[int], None] | None = None,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(log_w, nelbo)``, both ``[k, B]``: the log importance weight ``-recon - log q + log p`` and the
    negative ELBO of each of k posterior samples of every example (in float32).

    The k samples run as batched forward passes of the batch repeated, ``max_batch // B`` samples at a time.
    The noise of sample j is drawn in order, one standard-normal tensor per latent group (or taken from
    ``noise[j]``), so the result does not depend on the chunking: it equals k sequential passes.
    ``on_samples(n)`` is called after each pass with the number of (example, sample) pairs it scored; the noise is
    drawn from ``generator`` (default: torch's global one).
    """
    b = x.shape[0]
    per_chunk = max(1, max_batch // b)
    shapes = model.latent_shapes(b)
    log_w, nelbo = [], []
    done = 0
    while done < k:
        n = min(per_chunk, k - done)
        if noise is not None:
            draws = [noise[done + j] for j in range(n)]
        else:
            draws = [[torch.randn(shape, device=x.device, generator=generator) for shape in shapes] for _ in range(n)]
        stacked = [torch.cat([draw[g] for draw in draws]) for g in range(len(shapes))]
        out = model(x.repeat(n, *([1] * (x.ndim - 1))), noise=stacked)
        if out.extras.get("log_p_exact") is False:  # e.g. a denoising estimate: a bound in expectation only
            raise ValueError("log p of this output is an estimate right only in expectation: evaluate in eval mode")
        log_w.append(out.log_iw.float().view(n, b))
        nelbo.append(out.nelbo.float().view(n, b))
        done += n
        if on_samples is not None:
            on_samples(n * b)
    return torch.cat(log_w), torch.cat(nelbo)


def iw_log_likelihood(
    model: GenerativeModel,
    x: torch.Tensor,
    k: int,
    max_batch: int = 2000,
    noise: Sequence[list[torch.Tensor]] | None = None,
    on_samples: Callable[[int], None] | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """log p(x) estimated as ``logsumexp_k(log w_k) - log k`` per example (see :func:`importance_samples`)."""
    log_w, _ = importance_samples(model, x, k, max_batch, noise, on_samples, generator)
    return torch.logsumexp(log_w, dim=0) - math.log(k)


def _length(dataset: Dataset) -> int | None:
    try:
        return len(dataset)  # type: ignore[arg-type]
    except TypeError:  # an iterable data set: the bar counts without a total
        return None


@torch.no_grad()
def active_units(
    model: GenerativeModel, dataset: Dataset, max_examples: int = 500, threshold: float = 0.01
) -> list[int] | None:
    """Active units per latent group (Burda et al. 2016): latent dimensions whose posterior mean varies
    across data, ``Cov_x(E_q[z_u | x]) > threshold``. None when the model cannot encode."""
    was_training = model.training
    model.eval()
    try:
        means: list[list[torch.Tensor]] = []
        seen = 0
        for x, *_ in DataLoader(dataset, batch_size=100, shuffle=False):
            try:
                latents = model.encode(x[: max_examples - seen].to(model.device))
            except NotImplementedError:
                return None
            means.append([z.flatten(1).float() for z in latents])
            seen += x.shape[0]
            if seen >= max_examples:
                break
    finally:
        model.train(was_training)
    per_group = zip(*means, strict=True)
    return [int((torch.cat(group).var(0) > threshold).sum()) for group in per_group]
