"""Replay of reference runs of the official NVAE implementation (fixture folders with ``checkpoint.pt``,
``reference.safetensors`` and ``reference.json``) through vaezoo's NVAE.

:func:`replay_fixture` returns ``{quantity: (ours, reference)}`` for every recorded quantity that vaezoo computes:
the forward pass with the recorded noise, the training loss and its parts, sampling, the importance-weighted bound,
BatchNorm re-adjustment and the gradients of one training step. The fidelity tests compare each pair; the
benchmark script prints the largest differences.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import Tensor
from vaezoo_nvae.convert import load_official_checkpoint, model_from_official_checkpoint, official_key_map
from vaezoo_nvae.objective import NVAEObjective, balance_kl, nelbo
from vaezoo_nvae.presets import objective_spec_from_official_args
from vaezoo_nvae.regularizers import SpectralRegularizer

import vaezoo
from vaezoo.evaluation.bn import readjust_batchnorm
from vaezoo.evaluation.metrics import importance_samples
from vaezoo.training import Trainer

Pairs = dict[str, tuple[Tensor, Tensor]]


def _objective(args: dict) -> NVAEObjective:
    objective = vaezoo.build(objective_spec_from_official_args(args), kind="objective")
    objective.set_total_steps(int(args["num_total_iter"]))
    return objective


def _spectral(objective: NVAEObjective) -> SpectralRegularizer:
    return next(r for r in objective.regularizers if isinstance(r, SpectralRegularizer))


def _noise(ref: dict[str, Tensor], prefix: str, num_groups: int) -> list[Tensor]:
    return [ref[f"{prefix}/{i}"] for i in range(num_groups)]


def _scalar(value: float | Tensor) -> Tensor:
    return torch.as_tensor(value, dtype=torch.float64)


def _vectors(ref: dict[str, Tensor], prefix: str) -> dict[tuple[int, int], tuple[Tensor, Tensor]]:
    out = {}
    for key in ref:
        if key.startswith(f"{prefix}/sr_u/"):
            name = key.rsplit("/", 1)[1]
            rows, cols = (int(n) for n in name.split("x"))
            out[(rows, cols)] = (ref[key], ref[f"{prefix}/sr_v/{name}"])
    return out


def importance_weighted_bound(model, x: Tensor, num_samples: int, noise: Sequence[list[Tensor]]) -> dict[str, Tensor]:
    """The official ``test()`` numbers from vaezoo's batched estimator: ``log_iw [K, B]``, ``neg_log_p`` (batch
    mean of ``-(logsumexp_k log_iw - log K)``) and ``nelbo`` (mean over examples and samples)."""
    with torch.no_grad():
        log_iw, nelbos = importance_samples(model, x, num_samples, noise=noise)
    log_px = torch.logsumexp(log_iw, dim=0) - math.log(num_samples)
    return {"log_iw": log_iw, "neg_log_p": -torch.mean(log_px), "nelbo": torch.mean(nelbos)}


def _balanced_kl(objective: NVAEObjective, model, out, metrics: dict) -> Tensor:
    """Per-example balanced KL (the objective's metrics keep only its mean)."""
    alpha = objective.balancing_alpha(model.group_scales, out.kl.device) if objective.kl_balance else None
    balanced, _, _ = balance_kl(out.kl.detach(), metrics["kl_coeff"], alpha)
    return balanced


def replay_fixture(fixture_dir: str | Path) -> Pairs:
    fixture_dir = Path(fixture_dir)
    ref = load_file(str(fixture_dir / "reference.safetensors"))
    info = json.loads((fixture_dir / "reference.json").read_text())
    checkpoint = load_official_checkpoint(fixture_dir / "checkpoint.pt")
    args = checkpoint["args"]
    key_map = official_key_map(checkpoint["state_dict"].keys())
    pairs: Pairs = {}

    def add(name: str, ours: Tensor | float, reference: Tensor | float) -> None:
        pairs[name] = (torch.as_tensor(ours).detach(), torch.as_tensor(reference))

    # -- forward with the recorded noise (eval mode) -------------------------------------------------
    model = model_from_official_checkpoint(checkpoint)
    num_groups = model.num_groups
    x = ref["input/x"]
    noise = _noise(ref, "forward/eps", num_groups)
    with torch.no_grad():
        out = model(x, noise=noise)
    add("forward/logits", out.params, ref["forward/logits"])
    for i, (q, p) in enumerate(zip(out.extras["posteriors"], out.extras["priors"], strict=True)):
        add(f"forward/q_mu/{i}", q.mu, ref[f"forward/q_mu/{i}"])
        add(f"forward/q_sigma/{i}", q.sigma, ref[f"forward/q_sigma/{i}"])
        add(f"forward/p_mu/{i}", p.mu.expand_as(q.mu), ref[f"forward/p_mu/{i}"])
        add(f"forward/p_sigma/{i}", p.sigma.expand_as(q.sigma), ref[f"forward/p_sigma/{i}"])
    for j, z in enumerate(out.extras["flow_outputs"]):
        add(f"forward/flow_out/{j}", z, ref[f"forward/flow_out/{j}"])
    with torch.no_grad():
        add("forward/log_prob_map", model.likelihood.log_prob_map(out.params, x), ref["forward/log_prob_map"])
        if "forward/output_mean" in ref:
            add("forward/output_mean", model.likelihood.mean(out.params), ref["forward/output_mean"])
    add("forward/log_q", out.log_q, ref["forward/log_q"])
    add("forward/log_p", out.log_p, ref["forward/log_p"])
    add("forward/kl_all", out.kl, ref["forward/kl_all"])
    add("forward/kl_diag", out.extras["kl_diag"], ref["forward/kl_diag"])
    add("forward/recon_loss", out.recon, ref["forward/recon_loss"])
    add("forward/nelbo", nelbo(out), ref["forward/nelbo"])
    add("forward/log_iw", out.log_iw, ref["forward/log_iw"])

    # -- training loss at the checkpoint's step, same forward (power-iteration vectors as recorded) ---
    objective = _objective(args)
    spectral = _spectral(objective)
    for (rows, cols), (u, v) in _vectors(ref, "loss").items():
        spectral.set_vectors(rows, cols, u, v)
    spectral.num_power_iterations = 0  # the training-time vector state is not in official checkpoints
    with torch.no_grad():
        loss, metrics = objective(model, x, step=int(checkpoint["global_step"]), noise=noise)
    add("loss/kl_coeff", _scalar(metrics["kl_coeff"]), ref["loss/kl_coeff"])
    add("loss/alpha_i", objective.balancing_alpha(model.group_scales, x.device), ref["loss/alpha_i"])
    add("loss/kl_coeffs", metrics["kl_coeffs"], ref["loss/kl_coeffs"])
    add("loss/kl_vals", metrics["kl_vals"], ref["loss/kl_vals"])
    add("loss/balanced_kl", _balanced_kl(objective, model, out, metrics), ref["loss/balanced_kl"])
    add("loss/nelbo_mean", metrics["nelbo_balanced"], ref["loss/nelbo_mean"])
    add("loss/norm_loss", metrics["reg/SpectralRegularizer"], ref["loss/norm_loss"])
    add("loss/bn_loss", metrics["reg/BatchNormScaleRegularizer"], ref["loss/bn_loss"])
    add("loss/wdn_coeff", _scalar(metrics["regularization_weight"]), ref["loss/wdn_coeff"])
    add("loss/total", loss, ref["loss/total"])
    with torch.no_grad():
        exact = sum(
            torch.linalg.matrix_norm(w.double().reshape(w.shape[0], -1), ord=2)
            for w in (layer.effective_weight() for group in spectral.conv_groups(model).values() for layer in group)
        )
    add("loss/spectral_exact", exact, ref["loss/spectral_exact"])

    # -- sampling at t = 0.8 ------------------------------------------------------------------------
    t = float(info["sample"]["t"])
    sample_noise = _noise(ref, "sample/eps", num_groups)
    with torch.no_grad():
        logits = model.sample_params(sample_noise[0].shape[0], t, sample_noise)
    add("sample/logits", logits, ref["sample/logits"])
    if "sample/output_mean" in ref:
        add("sample/output_mean", model.likelihood.mean(logits), ref["sample/output_mean"])

    # -- importance-weighted bound ------------------------------------------------------------------
    k = int(info["iw_samples"])
    iw = importance_weighted_bound(model, x, k, noise=[_noise(ref, f"iw/eps/{s}", num_groups) for s in range(k)])
    for name in ("log_iw", "neg_log_p", "nelbo"):
        add(f"iw/{name}", iw[name], ref[f"iw/{name}"])

    # -- BatchNorm re-adjustment (train-mode sampling), then an eval-mode sample --------------------
    model = model_from_official_checkpoint(checkpoint)
    iterations = int(info["bn_readjust_iters"])
    readjust_noise = [_noise(ref, f"bn_readjust/eps/{it}", num_groups) for it in range(iterations)]
    readjust_batchnorm(model, iterations, readjust_noise[0][0].shape[0], t, readjust_noise)
    state = model.state_dict()
    for key in ref:
        if key.startswith("bn_readjust/bn/"):
            official = key[len("bn_readjust/bn/") :]
            add(key, state[key_map[official]], ref[key])
    with torch.no_grad():
        logits = model.sample_params(sample_noise[0].shape[0], t, sample_noise)
    add("bn_readjust/sample/logits_mean_hw", logits.mean(dim=[2, 3]), ref["bn_readjust/sample/logits_mean_hw"])
    add("bn_readjust/sample/output_mean", model.likelihood.mean(logits), ref["bn_readjust/sample/output_mean"])

    # -- one training step: fresh noise and fresh power-iteration vectors from the seeded CPU generator --
    model = model_from_official_checkpoint(checkpoint).train()
    objective = _objective(args)
    torch.manual_seed(int(info["seeds"]["train_step"]))
    out = model(x)
    loss, metrics = objective.loss_from_output(model, out, step=int(checkpoint["global_step"]))
    loss.backward()
    for i, eps in enumerate(out.noise):
        add(f"train_step/eps/{i}", eps, ref[f"train_step/eps/{i}"])
    add("train_step/recon_loss", out.recon, ref["train_step/recon_loss"])
    add("train_step/kl_all", out.kl, ref["train_step/kl_all"])
    add("train_step/log_q", out.log_q, ref["train_step/log_q"])
    add("train_step/log_p", out.log_p, ref["train_step/log_p"])
    add("train_step/logits_mean_hw", out.params.mean(dim=[2, 3]), ref["train_step/logits_mean_hw"])
    add("train_step/loss", loss, ref["train_step/loss"])
    add("train_step/kl_coeff", _scalar(metrics["kl_coeff"]), ref["train_step/kl_coeff"])
    add("train_step/balanced_kl", _balanced_kl(objective, model, out, metrics), ref["train_step/balanced_kl"])
    add("train_step/kl_coeffs", metrics["kl_coeffs"], ref["train_step/kl_coeffs"])
    add("train_step/nelbo_mean", metrics["nelbo_balanced"], ref["train_step/nelbo_mean"])
    add("train_step/norm_loss", metrics["reg/SpectralRegularizer"], ref["train_step/norm_loss"])
    add("train_step/bn_loss", metrics["reg/BatchNormScaleRegularizer"], ref["train_step/bn_loss"])
    add("train_step/wdn_coeff", _scalar(metrics["regularization_weight"]), ref["train_step/wdn_coeff"])
    spectral = _spectral(objective)
    for (rows, cols), (u, v) in _vectors(ref, "train_step").items():
        ours_u, ours_v = spectral.vectors(rows, cols)
        add(f"train_step/sr_u/{rows}x{cols}", ours_u, u)
        add(f"train_step/sr_v/{rows}x{cols}", ours_v, v)
    state = model.state_dict()
    for key in ref:
        if key.startswith("train_step/bn/"):
            official = key[len("train_step/bn/") :]
            add(key, state[key_map[official]], ref[key])
    parameters = dict(model.named_parameters())
    grads = {official: parameters[key_map[official]].grad for official in info["parameter_names"]}
    for key in ref:
        if key.startswith("train_step/grad/"):
            official = key[len("train_step/grad/") :]
            add(key, grads[official], ref[key])
    norms = torch.stack(
        [g.double().norm() if g is not None else torch.zeros((), dtype=torch.float64) for g in grads.values()]
    )
    add("train_step/grad_norm", norms, ref["train_step/grad_norm"])

    # -- the learning rate of that step and the Adamax update, from the checkpoint's optimiser state ------------
    trainer = _trainer(args)
    lr, opt = trainer.lr_at(int(checkpoint["global_step"])), trainer.settings.optimizer
    add("train_step/lr", _scalar(lr), ref["train_step/lr"])
    ordered = [parameters[key_map[official]] for official in info["parameter_names"]]
    optimizer = torch.optim.Adamax(ordered, lr=lr, betas=opt.betas, eps=opt.eps, weight_decay=opt.weight_decay)
    for index, parameter in enumerate(ordered):  # official state: one entry per parameter, in that order
        state = checkpoint["optimizer"]["state"][index]
        optimizer.state[parameter] = {
            "step": torch.tensor(float(state["step"])),
            "exp_avg": state["exp_avg"].clone(),
            "exp_inf": state["exp_inf"].clone(),
        }
    before = [p.detach().clone() for p in ordered]
    optimizer.step()
    deltas = torch.stack([(p.detach() - b).double().norm() for p, b in zip(ordered, before, strict=True)])
    add("train_step/delta_norm", deltas, ref["train_step/delta_norm"])
    return pairs


def _trainer(args: dict) -> Trainer:
    """vaezoo's trainer set up as the official run was: Adamax settings, per-epoch cosine from the arguments."""
    epochs, total = int(args["epochs"]), int(args["num_total_iter"])
    trainer = Trainer(
        max_steps=total,
        optimizer={"lr": float(args["learning_rate"]), "weight_decay": float(args["weight_decay"])},
        schedule={
            "lr_min": float(args["learning_rate_min"]),
            "warmup_steps": int(args["warmup_epochs"]) * (total // epochs),
            "decay": "cosine_epoch",
        },
    )
    trainer.steps_per_epoch = total // epochs
    return trainer


#: the quantities of the bf16 replay: per-example terms of the bound and the per-group KL
BF16_QUANTITIES = ("forward/nelbo", "forward/log_iw", "forward/recon_loss", "forward/kl_all", "forward/log_q",
                   "forward/log_p")  # fmt: skip


def replay_forward_bf16(fixture_dir: str | Path) -> Pairs:
    """The forward pass with the recorded noise as ``trainer.precision: bf16`` runs it (the networks under bf16
    autocast on the CPU; densities, KL terms and the likelihood in fp32), against the official fp32 values."""
    fixture_dir = Path(fixture_dir)
    ref = load_file(str(fixture_dir / "reference.safetensors"))
    model = model_from_official_checkpoint(load_official_checkpoint(fixture_dir / "checkpoint.pt"))
    noise = _noise(ref, "forward/eps", model.num_groups)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(ref["input/x"], noise=noise)
    ours = {"forward/nelbo": nelbo(out), "forward/log_iw": out.log_iw, "forward/recon_loss": out.recon,
            "forward/kl_all": out.kl, "forward/log_q": out.log_q, "forward/log_p": out.log_p}  # fmt: skip
    return {name: (ours[name].detach().float(), ref[name]) for name in BF16_QUANTITIES}
