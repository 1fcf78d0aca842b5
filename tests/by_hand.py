"""Numbers the library promises, computed by hand (a helper module, not tests): the evaluation protocol, one forward
pass per importance sample, written from its documentation and the definition of the importance-weighted bound with
none of its code (no batching of samples, no chunking); and one update of the published Adamax and
Adam rules."""

from __future__ import annotations

import math

import torch


@torch.no_grad()
def iw_log_likelihoods(model, x: torch.Tensor, noise: list[list[torch.Tensor]]) -> torch.Tensor:
    """``log (1/k sum_j p(x, z_j) / q(z_j | x))`` per example, one forward pass per draw of ``noise`` (k draws, each
    one standard-normal tensor per latent group), from the output's ``recon``, ``log_q`` and ``log_p``."""
    log_w = []
    for draw in noise:
        out = model(x, noise=draw)
        log_w.append((-out.recon - out.log_q + out.log_p).double())
    log_w = torch.stack(log_w)  # [k, B]
    top = log_w.max(0).values
    return top + torch.log(torch.exp(log_w - top).sum(0)) - math.log(len(noise))


@torch.no_grad()
def evaluation_by_hand(model, dataset, k: int, seed: int = 0, batch_size: int = 100) -> tuple[float, float]:
    """``(ELBO, IW-NLL)`` in nats per example as ``evaluate(model, dataset, k, batch_size, seed=seed)`` documents
    them: the ELBO pass's posterior noise from a CPU generator seeded with ``seed``, then the k importance samples'
    from one seeded with ``seed + 1``, drawn batch after batch, sample after sample, group after group; whatever a
    component draws (a Hutchinson probe) from the evaluation's own named streams, as in an evaluation."""
    from vaezoo.evaluation.paired import owned_randomness

    model.eval()
    batches = [
        torch.stack([dataset[i][0] for i in range(start, min(start + batch_size, len(dataset)))])
        for start in range(0, len(dataset), batch_size)
    ]
    elbo_gen, iw_gen = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed + 1)
    elbo, iw = 0.0, 0.0
    with owned_randomness(seed):
        for x in batches:
            out = model(x, noise=[torch.randn(s, generator=elbo_gen) for s in model.latent_shapes(x.shape[0])])
            elbo += float((-(out.recon + out.kl.sum(0))).double().sum())
        for x in batches:
            draws = [[torch.randn(s, generator=iw_gen) for s in model.latent_shapes(x.shape[0])] for _ in range(k)]
            iw += float(iw_log_likelihoods(model, x, draws).sum())
    count = sum(x.shape[0] for x in batches)
    return elbo / count, -iw / count


def official_adamax(param, grad, state, *, lr, betas, eps, weight_decay):
    """One update of the published Adamax with L2 weight decay, written out (float64 state)."""
    b1, b2 = betas
    grad = grad.double() + weight_decay * param.double()
    state["t"] = state.get("t", 0) + 1
    state["m"] = b1 * state.get("m", torch.zeros_like(grad)) + (1 - b1) * grad
    state["u"] = torch.maximum(b2 * state.get("u", torch.zeros_like(grad)), grad.abs() + eps)
    return param.double() - lr / (1 - b1 ** state["t"]) * state["m"] / state["u"]


def official_adam(param, grad, state, *, lr, betas, eps, weight_decay):
    """One update of the published Adam with L2 weight decay (bias-corrected moments), written out."""
    b1, b2 = betas
    grad = grad.double() + weight_decay * param.double()
    state["t"] = state.get("t", 0) + 1
    state["m"] = b1 * state.get("m", torch.zeros_like(grad)) + (1 - b1) * grad
    state["v"] = b2 * state.get("v", torch.zeros_like(grad)) + (1 - b2) * grad * grad
    m_hat, v_hat = state["m"] / (1 - b1 ** state["t"]), state["v"] / (1 - b2 ** state["t"])
    return param.double() - lr * m_hat / (v_hat.sqrt() + eps)
