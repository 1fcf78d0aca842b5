"""The score-based prior of LSGM over the top scale's latents, written from the paper (Vahdat, Kreis & Kautz 2021).

It is a :class:`~vaezoo.interfaces.JointPrior`: it sees the concatenated standardised noise ``eps`` of the top
scale's groups (``z_0`` below) and models it with a diffusion on ``t in [time_eps, 1]`` whose end is N(0, I).

Noise prediction with a mixed score. The network's noise prediction is mixed with the one of the Normal prior::

    eps_pred(z_t, t) = (1 - a) * sigma_t * z_t + a * network(z_t, t),   a = sigmoid(per-channel logit)

For a VP SDE, N(0, I) stays N(0, I) for all t, its score is ``-z_t`` and its noise prediction
``-sigma_t * score = sigma_t * z_t``; so at ``a = 0`` the implied score is exactly the Normal one, the
probability-flow drift ``1/2 beta (eps_pred / sigma_t - z)`` vanishes, the ODE is the identity and the prior is
exactly N(0, I). The logits start at -6 so that training starts from the Normal prior.

Training: the cross-entropy by denoising score matching. For ``t`` from ``time_eps`` to 1 (derived from the
Fokker-Planck equations of both marginals and the denoising identity ``E[grad log q_t . s] = E[grad log q(z_t|z_0) .
s]``)::

    CE(q_eps, p_eps) = CE(q_1, N(0, I)) + int [ g^2 / (2 var_t) E||noise - eps_pred||^2 - D (g^2 / (2 var_t) + f) ] dt

The last term integrates in closed form for a VP SDE (``D/2 log(var_eps / var_1)``) and ``CE(q_1, N(0, I))`` is
estimated from ``z_0`` as ``D/2 log 2 pi + 1/2 (alpha_1^2 ||z_0||^2 + D var_1)``. The likelihood weighting
``g^2 / (2 var_t)`` is importance-sampled as in the paper: ``log var_t`` is drawn uniformly between its values at
``time_eps`` and 1, and the weight is ``(log var_1 - log var_eps) / (2 (1 - var_t))``; where the denoising error goes
as ``1 - var_t`` (near N(0, I)) the weighted integrand is then nearly constant in t (see :meth:`sample_time`);
without importance sampling ``t`` is uniform on ``[time_eps, 1]`` and the weight is ``(1 - time_eps) g^2 / (2
var_t)``. The estimate is right in expectation only, so the model marks it as not to be
used inside an importance-weighted logsumexp (``exact_in_training = False``).

Evaluation and sampling: the probability-flow ODE ``dz/dt = f z - 1/2 g^2 score`` with torchdiffeq's ``odeint``,
on ``[ode_eps, 1]`` (``ode_eps`` defaults to ``time_eps``, the smallest t the network is trained at; the paper
evaluates from 1e-5);
``log p(z_0) = log N(z_1; 0, I) + int div F dt`` by the instantaneous change of variables, the divergence by a
Hutchinson estimate whose Rademacher probe is drawn once per solve (or exactly, for small latents in tests). An
Euler-Maruyama sampler of the reverse SDE is the ancestral alternative.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn

from vaezoo.evaluation.paired import evaluation_generator
from vaezoo.interfaces import Denoiser, Example, JointPrior

from .sdes import SDES, VPSDE

DenoiserFactory = Callable[[int], Denoiser]
_LOG_2PI = math.log(2 * math.pi)


def _per_example(t: Tensor, like: Tensor) -> Tensor:
    return t.view((-1,) + (1,) * (like.dim() - 1))


class ScorePrior(JointPrior):
    """LSGM's score-based prior over the top scale's standardised latents (see the module docstring)."""

    exact_in_training: ClassVar[bool] = False
    samplers: ClassVar[dict[str, str]] = {
        "ode": "probability-flow ODE (adaptive solver; reports its function evaluations)",
        "euler_maruyama": "ancestral sampling of the reverse SDE by Euler-Maruyama (sampler_steps steps)",
    }

    def __init__(
        self,
        channels: int,
        network: DenoiserFactory,
        sde: Literal["vp", "geometric_vp"] = "vp",
        beta_min: float = 0.1,
        beta_max: float = 20.0,
        sigma2_min: float = 3e-5,
        sigma2_max: float = 0.999,
        time_eps: float = 1e-2,
        ode_eps: float | None = None,
        mixing_logit_init: float = -6.0,
        importance_sampling: bool = True,
        prior_loss: Literal["likelihood", "unweighted"] = "likelihood",
        ode_method: str = "dopri5",
        ode_rtol: float = 1e-5,
        ode_atol: float = 1e-5,
        trace: Literal["hutchinson", "exact"] = "hutchinson",
        default_sampler: Literal["ode", "euler_maruyama"] = "ode",
        sampler_steps: int = 1000,
        eval_max_k: int = 10,
    ) -> None:
        super().__init__(channels)
        if not 0.0 <= time_eps < 1.0:
            raise ValueError(f"time_eps must be in [0, 1), got {time_eps}")
        if sde == "vp" and time_eps <= 0.0:
            raise ValueError("the linear VP SDE has zero variance at t = 0: time_eps must be positive")
        if ode_eps is not None and not (0.0 < ode_eps < 1.0 or (ode_eps == 0.0 and sde != "vp")):
            raise ValueError(f"ode_eps must be in (0, 1) (0 allowed for the geometric SDE), got {ode_eps}")
        if sampler_steps < 1 or eval_max_k < 1:
            raise ValueError(f"sampler_steps and eval_max_k must be positive, got {sampler_steps}, {eval_max_k}")
        schedule = {"vp": {"beta_min": beta_min, "beta_max": beta_max}}.get(
            sde, {"sigma2_min": sigma2_min, "sigma2_max": sigma2_max}
        )
        self.sde: VPSDE = SDES[sde](**schedule)
        self.time_eps = float(time_eps)
        #: where the probability-flow ODE starts (log p) and ends (ODE samples); None: ``time_eps``, the smallest t
        #: the network is trained at (the paper's evaluation starts at 1e-5)
        self.ode_eps = self.time_eps if ode_eps is None else float(ode_eps)
        self.importance_sampling, self.prior_loss = importance_sampling, prior_loss
        self.ode_method, self.ode_rtol, self.ode_atol, self.trace = ode_method, ode_rtol, ode_atol, trace
        self.default_sampler, self.sampler_steps, self.eval_max_k = default_sampler, sampler_steps, eval_max_k
        self.network = network(channels)
        self.mixing_logit = nn.Parameter(torch.full((1, channels, 1, 1), float(mixing_logit_init)))
        self.last_log_prob_info: dict[str, Any] = {}

    # -- the mixed score -----------------------------------------------------------------------------------------
    def mixing(self) -> Tensor:
        return torch.sigmoid(self.mixing_logit)

    def predict_noise(self, z: Tensor, t: Tensor, detach_network: bool = False) -> Tensor:
        """``eps_pred(z_t, t)`` for ``t`` of shape ``[B]``; ``detach_network`` keeps gradients out of the
        network and the mixing (the VAE's term must not train the prior: it has its own loss)."""
        std = _per_example(self.sde.std(t), z)
        if detach_network:
            params = {k: v.detach() for k, v in self.network.named_parameters()}
            buffers = dict(self.network.named_buffers())
            predicted = torch.func.functional_call(self.network, {**params, **buffers}, (z, t))
            a = torch.sigmoid(self.mixing_logit.detach())
        else:
            predicted, a = self.network(z, t), self.mixing()
        return (1 - a) * std * z + a * predicted

    # -- denoising score matching --------------------------------------------------------------------------------
    def sample_time(self, n: int, device: torch.device, importance_sampling: bool) -> tuple[Tensor, Tensor]:
        """``(t, weight)``, float64 ``[n]``: ``E[weight * ||noise - eps_pred||^2]`` is the likelihood-weighted
        integral ``int_{time_eps}^1 g^2 / (2 var_t) E||noise - eps_pred||^2 dt``.

        With importance sampling (the paper's), ``log var_t`` is uniform on ``[log var_eps, log var_1]``: the
        density of t is ``g^2 (1 - var_t) / (var_t Dlog)`` with ``Dlog = log var_1 - log var_eps``, and the weight
        ``Dlog / (2 (1 - var_t))``. The error of a prediction near the Normal one goes as ``(1 - var_t)``, so the
        weighted integrand is nearly constant in t (for N(0, I) latents at mixing 0 it is ``Dlog/2 chi2_D``)."""
        u = torch.rand(n, device=device, dtype=torch.float64)
        start, end = torch.tensor([self.time_eps, 1.0], device=device, dtype=torch.float64)
        if importance_sampling:
            low, high = torch.log(self.sde.var(start)), torch.log(self.sde.var(end))
            var = torch.exp(low + u * (high - low))
            t = self.sde.time_of_var(var).clamp(self.time_eps, 1.0)
            return t, 0.5 * (high - low) / (1.0 - var)
        t = start + u * (end - start)
        return t, (end - start) * self.sde.diffusion2(t) / (2 * self.sde.var(t))

    def cross_entropy_constant(self, z0: Tensor) -> Tensor:
        """The terms of the cross-entropy that do not involve the network: ``CE(q_1, N(0, I))`` estimated from
        ``z_0`` and ``-D int (g^2 / (2 var) + f) dt = D/2 log(var_eps / var_1)``, ``[B]``."""
        d = z0[0].numel()
        ends = torch.tensor([self.time_eps, 1.0], device=z0.device, dtype=torch.float64)
        var_eps, var_1 = self.sde.var(ends).tolist()
        alpha2_1 = 1.0 - var_1
        squared = z0.double().pow(2).flatten(1).sum(1)
        terminal = 0.5 * d * _LOG_2PI + 0.5 * (alpha2_1 * squared + d * var_1)
        return (terminal + 0.5 * d * math.log(var_eps / var_1)).to(z0.dtype)

    def cross_entropy(
        self, z0: Tensor, importance_sampling: bool | None = None, detach_network: bool = False
    ) -> Tensor:
        """A one-sample estimate of ``-log p(z_0)`` per example whose expectation over ``z_0 ~ q`` is the
        cross-entropy ``CE(q, p)`` (one ``t`` and one noise per example)."""
        importance = self.importance_sampling if importance_sampling is None else importance_sampling
        t, weight = self.sample_time(z0.size(0), z0.device, importance)
        noise = torch.randn_like(z0)
        t = t.to(z0.dtype)
        z_t = self.sde.sample_kernel(z0, t, noise)
        squared = (noise - self.predict_noise(z_t, t, detach_network)).pow(2).flatten(1).sum(1)
        return self.cross_entropy_constant(z0) + weight.to(z0.dtype) * squared

    def training_log_prob(self, noise: Tensor) -> Tensor:
        return -self.cross_entropy(noise, detach_network=True)

    def loss(self, noise: Tensor) -> tuple[Tensor, dict[str, Any]]:
        """The prior's own loss on detached latents: the likelihood-weighted cross-entropy (nats per example) or
        the unweighted noise-prediction error with uniform t (``prior_loss``)."""
        z0 = noise.detach()
        if self.prior_loss == "likelihood":
            ce = self.cross_entropy(z0).mean()
            return ce, {"prior_ce": ce.detach()}
        t, _ = self.sample_time(z0.size(0), z0.device, importance_sampling=False)
        t = t.to(z0.dtype)
        eps = torch.randn_like(z0)
        error = (eps - self.predict_noise(self.sde.sample_kernel(z0, t, eps), t)).pow(2).flatten(1).mean(1).mean()
        return error, {"prior_noise_mse": error.detach()}

    # -- the probability-flow ODE --------------------------------------------------------------------------------
    def ode_drift(self, z: Tensor, t: Tensor) -> Tensor:
        """``f z - 1/2 g^2 score = 1/2 beta (eps_pred / sigma_t - z)``; ``t`` a scalar tensor.

        With the mixed score this is ``1/2 beta a (network / sigma_t - z)``, computed in that form: exactly zero at
        ``a = 0``, and free of the cancellation of two large terms where beta is large (the geometric SDE's beta
        reaches about 1e4 at t = 1)."""
        # adaptive solvers step past the end and interpolate back; beyond [ode_eps, 1] the schedule is undefined
        t = t.clamp(self.ode_eps, 1.0)
        tb = t.reshape(1).expand(z.size(0)).to(z.dtype)
        beta = self.sde.diffusion2(tb).view((-1,) + (1,) * (z.dim() - 1))
        std = self.sde.std(tb).view_as(beta)
        return 0.5 * beta * self.mixing() * (self.network(z, tb) / std - z)

    def _divergence(self, drift: Tensor, z: Tensor, probe: Tensor | None) -> Tensor:
        if probe is not None:  # Hutchinson: E[v^T J v] = tr J for Rademacher v
            (vjp,) = torch.autograd.grad(drift, z, probe, retain_graph=False)
            return (vjp * probe).flatten(1).sum(1)
        flat = drift.flatten(1)
        div = torch.zeros(z.size(0), device=z.device, dtype=z.dtype)
        for i in range(flat.size(1)):
            (row,) = torch.autograd.grad(flat[:, i].sum(), z, retain_graph=True)
            div = div + row.flatten(1)[:, i]
        return div

    @torch.no_grad()
    def log_prob(self, noise: Tensor) -> Tensor:
        """log p(z_0) by the probability-flow ODE from ``ode_eps`` to 1 (no gradients: an evaluation value)."""
        from torchdiffeq import odeint

        z0 = noise.detach()
        probe = None
        if self.trace == "hutchinson":  # one probe for the whole solve, so the ODE the solver sees is smooth
            # from the evaluation's own stream, so that the probes leave the posterior noise of a paired evaluation
            # as it is (torch's global generator outside an evaluation)
            generator = evaluation_generator("hutchinson_probe", z0.device)
            probe = torch.randint(0, 2, z0.shape, device=z0.device, generator=generator).to(z0.dtype) * 2 - 1
        calls = 0

        def dynamics(t: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
            nonlocal calls
            calls += 1
            with torch.enable_grad():
                z = state[0].detach().requires_grad_(True)
                drift = self.ode_drift(z, t)
                div = self._divergence(drift, z, probe)
            return drift.detach(), div.detach()

        times = torch.tensor([self.ode_eps, 1.0], device=z0.device, dtype=z0.dtype)
        start = (z0, torch.zeros(z0.size(0), device=z0.device, dtype=z0.dtype))
        z_path, div_path = odeint(
            dynamics, start, times, method=self.ode_method, rtol=self.ode_rtol, atol=self.ode_atol
        )
        z1, integral = z_path[-1], div_path[-1]
        log_normal = (-0.5 * z1.pow(2) - 0.5 * _LOG_2PI).flatten(1).sum(1)
        self.last_log_prob_info = {"function_evaluations": calls}
        return log_normal + integral

    # -- sampling ------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def sample(
        self, shape: Sequence[int], temperature: float = 1.0, noise: Tensor | None = None, sampler: str | None = None
    ) -> Tensor:
        sampler = sampler or self.default_sampler
        if sampler not in self.samplers:
            raise ValueError(f"unknown sampler {sampler!r}; samplers: {', '.join(self.samplers)}")
        device = self.mixing_logit.device
        start = torch.randn(tuple(shape), device=device) if noise is None else noise.to(device)
        z = start * temperature
        if sampler == "ode":
            return self._sample_ode(z)
        return self._sample_euler_maruyama(z)

    def _sample_ode(self, z1: Tensor) -> Tensor:
        from torchdiffeq import odeint

        calls = 0

        def dynamics(t: Tensor, z: Tensor) -> Tensor:
            nonlocal calls
            calls += 1
            return self.ode_drift(z, t)

        times = torch.tensor([1.0, self.ode_eps], device=z1.device, dtype=z1.dtype)
        z0 = odeint(dynamics, z1, times, method=self.ode_method, rtol=self.ode_rtol, atol=self.ode_atol)[-1]
        self.last_sample_info = {"sampler": "ode", "function_evaluations": calls, "method": self.ode_method}
        return z0

    def _sample_euler_maruyama(self, z: Tensor) -> Tensor:
        # reverse SDE dz = [f z - g^2 score] dt + g dw, from t = 1 down to time_eps; the last step adds no noise
        times = torch.linspace(1.0, self.time_eps, self.sampler_steps + 1, device=z.device, dtype=torch.float64)
        for i in range(self.sampler_steps):
            t, dt = times[i], float(times[i] - times[i + 1])
            tb = t.to(z.dtype).reshape(1).expand(z.size(0))
            beta = float(self.sde.diffusion2(t))
            score = -self.predict_noise(z, tb) / float(self.sde.std(t))
            z = z + (0.5 * beta * z + beta * score) * dt
            if i < self.sampler_steps - 1:
                z = z + math.sqrt(beta * dt) * torch.randn_like(z)
        self.last_sample_info = {
            "sampler": "euler_maruyama",
            "function_evaluations": self.sampler_steps,
        }
        return z

    # -- evaluation ----------------------------------------------------------------------------------------------
    def evaluation_protocol(self) -> dict[str, Any]:
        trace = (
            "a Hutchinson trace with one Rademacher probe per solve" if self.trace == "hutchinson" else "exact trace"
        )
        return {
            "log_p": (
                f"top-scale log p by the probability-flow ODE ({self.ode_method}, rtol {self.ode_rtol:g}, atol "
                f"{self.ode_atol:g}, t from {self.ode_eps:g} to 1, {trace})"
            ),
            "max_k": self.eval_max_k,
            "why": (
                "each importance sample costs one ODE solve (hundreds of network evaluations and vector-Jacobian "
                "products), so k=1000 is out of reach, and the stochastic trace makes the log-mean-exp slightly "
                "biased; the ELBO (k=1) is an unbiased estimate of a bound"
            ),
        }

    @classmethod
    def example(cls) -> Example:
        from .networks import LatentScoreNetwork

        noise = torch.randn(2, 4, 4, 4, requires_grad=True)

        def build() -> ScorePrior:
            return cls(4, network=lambda c: LatentScoreNetwork(c, hidden=8, num_blocks=1, embedding=8))

        def call(module: ScorePrior, inputs: tuple) -> Tensor:
            # the prior's own loss trains its parameters; the VAE's term reaches only the latents
            return torch.stack([module.loss(inputs[0])[0], -module.training_log_prob(inputs[0]).mean()])

        return Example(
            build=build,
            inputs=(noise,),
            output_shape=(2,),
            call=call,
            surrogate_gradient="the VAE's term reaches the latents only (network detached) and the prior's loss reads "
            "detached latents",
        )
