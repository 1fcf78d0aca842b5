"""Optimisers per component: the trainer's ``param_groups``.

By default every parameter trains with one Adamax (NVAE's optimiser). A recipe can give some parameters, chosen by
an fnmatch pattern on their names (``joint_prior.*``), their own optimiser (``adam`` or ``adamax``), learning
rate, weight decay, betas, eps, an EMA (``ema_decay``; ``ema_warmup: true`` lowers its decay in the first steps,
see :class:`~.ema.ExponentialMovingAverage`) and a gradient clipping norm of their own (``grad_clip``: each group's
gradients are clipped apart, so one component's large gradients never scale down another's). Each group follows the trainer's learning-rate schedule
(warm-up, cosine) scaled by ``lr / trainer.optimizer.lr``. Groups with different algorithms become one
:class:`CombinedOptimizer`, which steps, zeroes and saves them together.
"""

from __future__ import annotations

import fnmatch
from typing import Any

import torch
from torch import nn

from ..errors import VaezooError

#: the algorithms a parameter group can name
ALGORITHMS = {"adam": torch.optim.Adam, "adamax": torch.optim.Adamax}
_GROUP_KEYS = {"params", "optimizer", "lr", "weight_decay", "betas", "eps", "ema_decay", "ema_warmup", "grad_clip"}


class CombinedOptimizer:
    """Several torch optimisers stepped as one; ``param_groups`` is the concatenation of theirs (the same dicts,
    so the trainer's per-step learning rates reach them)."""

    def __init__(self, optimizers: list[torch.optim.Optimizer]) -> None:
        self.optimizers = optimizers

    @property
    def param_groups(self) -> list[dict]:
        return [group for optimizer in self.optimizers for group in optimizer.param_groups]

    @property
    def state(self) -> dict:
        return {k: v for optimizer in self.optimizers for k, v in optimizer.state.items()}

    def zero_grad(self, set_to_none: bool = True) -> None:
        for optimizer in self.optimizers:
            optimizer.zero_grad(set_to_none=set_to_none)

    def step(self, closure=None) -> None:
        for optimizer in self.optimizers:
            optimizer.step()

    def state_dict(self) -> dict:
        return {"optimizers": [optimizer.state_dict() for optimizer in self.optimizers]}

    def load_state_dict(self, state: dict) -> None:
        for optimizer, saved in zip(self.optimizers, state["optimizers"], strict=True):
            optimizer.load_state_dict(saved)


def check_param_groups(groups: list[dict] | None) -> list[dict]:
    groups = list(groups or [])
    for i, group in enumerate(groups):
        unknown = sorted(set(group) - _GROUP_KEYS)
        if unknown or "params" not in group:
            raise VaezooError(
                f"trainer.optimizer.param_groups[{i}] needs 'params' (a name pattern) and takes only {sorted(_GROUP_KEYS)}; "
                f"got {sorted(group)}"
            )
        if group.get("optimizer", "adamax") not in ALGORITHMS:
            raise VaezooError(f"trainer.optimizer.param_groups[{i}].optimizer must be one of {sorted(ALGORITHMS)}")
        clip = group.get("grad_clip")
        if clip is not None and not clip > 0:
            raise VaezooError(f"trainer.optimizer.param_groups[{i}].grad_clip must be positive, got {clip}")
        decay = group.get("ema_decay")
        if decay is not None and not 0.0 < decay < 1.0:
            raise VaezooError(f"trainer.optimizer.param_groups[{i}].ema_decay must be in (0, 1), got {decay}")
    return groups


def assign_parameters(model: nn.Module, groups: list[dict]) -> tuple[dict[int, list], list]:
    """Each trainable parameter to the first group whose pattern matches its name (``{group index: parameters}``),
    the others to the rest; a group that matches nothing is one line (a misspelt pattern would train nothing)."""
    assigned: dict[int, list] = {i: [] for i in range(len(groups))}
    rest = []
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            index = next((i for i, g in enumerate(groups) if fnmatch.fnmatchcase(name, g["params"])), None)
            (assigned[index] if index is not None else rest).append(parameter)
    for i, group in enumerate(groups):
        if not assigned[i]:
            raise VaezooError(f"trainer.optimizer.param_groups[{i}]: no parameter matches {group['params']!r}")
    return assigned, rest


def check_groups_fit(model: nn.Module, groups: list[dict]) -> None:
    """The groups against a model, before anything is written: each matches a parameter, at most one has an EMA."""
    assign_parameters(model, groups)
    ema_keys(model, groups)


def build_optimizer(model: nn.Module, groups: list[dict], defaults: dict[str, Any], foreach: bool | None = None):
    """The optimiser of ``model``: parameters matching no group take ``defaults`` (Adamax). Each torch param
    group carries ``lr_ratio``, its learning rate relative to the trainer's."""
    assigned, rest = assign_parameters(model, groups)
    by_algorithm: dict[str, list[dict]] = {}
    if rest:
        by_algorithm.setdefault("adamax", []).append({"params": rest, **defaults, "lr_ratio": 1.0})
    for i, group in enumerate(groups):
        settings = {k: group.get(k, defaults[k]) for k in ("lr", "weight_decay", "betas", "eps")}
        settings["betas"] = tuple(settings["betas"])
        settings["lr_ratio"] = settings["lr"] / defaults["lr"]
        by_algorithm.setdefault(group.get("optimizer", "adamax"), []).append({"params": assigned[i], **settings})
    optimizers = [
        ALGORITHMS[name](param_groups, lr=defaults["lr"], foreach=foreach)
        for name, param_groups in by_algorithm.items()
    ]
    return optimizers[0] if len(optimizers) == 1 else CombinedOptimizer(optimizers)


def ema_keys(model: nn.Module, groups: list[dict]) -> tuple[float, list[str]] | None:
    """``(decay, state keys)`` of the one group with an ``ema_decay`` (None when no group has one)."""
    with_ema = [g for g in groups if g.get("ema_decay") is not None]
    if not with_ema:
        return None
    if len(with_ema) > 1:
        raise VaezooError("trainer.optimizer.param_groups: only one group may have an ema_decay")
    pattern = with_ema[0]["params"]
    keys = [k for k, v in model.state_dict().items() if v.is_floating_point() and fnmatch.fnmatchcase(k, pattern)]
    return with_ema[0]["ema_decay"], keys


def clip_sets(model: nn.Module, groups: list[dict], default_clip: float | None) -> list[tuple[list, float | None]]:
    """The parameters whose gradients are clipped together, with their largest norm: each param group's (its
    ``grad_clip``, by default the trainer's), and the rest together (the trainer's ``grad_clip``); None: no clip."""
    assigned: list[list] = [[] for _ in groups]
    rest = []
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        index = next((i for i, g in enumerate(groups) if fnmatch.fnmatchcase(name, g["params"])), None)
        (assigned[index] if index is not None else rest).append(parameter)
    sets = [(rest, default_clip)] if rest else []
    sets += [(params, group.get("grad_clip", default_clip)) for params, group in zip(assigned, groups, strict=True)]
    return [(params, clip) for params, clip in sets if params]


def clip_gradients(sets: list[tuple[list, float | None]]) -> torch.Tensor:
    """Clip each set's gradients to its norm; returns the norm of all of them together, before clipping.

    The multi-tensor kernels on every device (torch's default takes them on GPUs only; on CPUs they save two ops per
    parameter, the same values bit for bit), and no rescaling at all for a set without a clip (``clip_grad_norm_``
    with an infinite norm multiplies every gradient by 1)."""
    norms = []
    for params, clip in sets:
        grads = [p.grad for p in params if p.grad is not None]
        norm = torch.nn.utils.get_total_norm(grads, foreach=True) if grads else torch.tensor(0.0)
        if clip is not None and grads:
            torch.nn.utils.clip_grads_with_norm_(params, clip, norm, foreach=True)
        norms.append(norm)
    return norms[0] if len(norms) == 1 else torch.linalg.vector_norm(torch.stack(norms))
