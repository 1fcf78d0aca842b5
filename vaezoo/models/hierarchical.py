"""A generic top-down hierarchical VAE assembled from registered components.

Layout (channels double at every down-sampling and halve at every up-sampling)::

    x -> stem -> pre-processing blocks (last cell of a block: stride 2)
      -> encoder tower: per scale (highest resolution first), per group: cells, then an encoder combiner slot
         (the encoder feature is remembered there); a stride-2 cell between scales
      -> encoder head
    learned constant -> decoder tower: per scale (lowest resolution first), per group: cells (none before the
         first group), then a decoder combiner that merges the group's latent; a stride -1 cell between scales
      -> post-processing blocks (first cell of a block: stride -1) -> decoder head -> likelihood parameters

Latent group ``i`` (top first) has prior ``priors[i](decoder state)`` (``priors[0]`` is the unconditional top
prior) and posterior ``posteriors[i](features, prior)`` where the features are the encoder head's output for the
top group and ``encoder_combiner(encoder feature, decoder state)`` otherwise; encoder features are consumed in
reverse order. Each posterior sample goes through ``num_flows`` flows. The KL of a group is analytic without
flows and the single-sample ``log q - log p`` with them.

Sub-components that are built many times are given as factories (jsonargparse ``Callable`` types), e.g. in a
recipe ``encoder_cell: {class_path: ResidualCell, init_args: {use_se: true}}``; the assembler calls them with the
channel counts and strides it needs:

- cells and heads: ``(in_channels, out_channels, stride)``, stride 1, 2 (down) or -1 (up);
- combiners (:class:`~vaezoo.interfaces.Combiner`): ``(in_channels, out_channels, aux_channels)``, called as
  ``combiner(x, aux)``;
- posteriors and the priors below the top (:class:`~vaezoo.interfaces.ConditionalPrior`):
  ``(feature_channels, latent_channels)``; flows: ``(latent_channels, context_channels)``; the top prior is one
  :class:`~vaezoo.interfaces.UnconditionalPrior` instance;
- the optional joint prior: ``(channels)``, the latent channels of all the top scale's groups together.

With a ``joint_prior`` (a :class:`~vaezoo.interfaces.JointPrior`), the groups of the top (lowest-resolution) scale
keep their own priors only to standardise: the joint prior scores the concatenation of their
``eps_g = (z_g - mu_g) / sigma_g``, ``log p(z_top) = log p_joint(eps) - sum log sigma``, and in sampling it draws
``eps``, passed as the noise of those groups' priors (at temperature 1: the joint prior applies the temperature).
Their rows of ``kl`` are ``log q - log p`` with the joint term shared equally between them (it does not split by
group); ``kl_diag`` stays the per-channel KL against their own priors, the signal KL balancing needs. Without
one, nothing of the above exists (no parameters, no extra outputs).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from ..distributions import full_precision
from ..errors import VaezooError
from ..hub.mixin import ModelHubMixin
from ..interfaces import (
    Cell,
    Combiner,
    ConditionalPrior,
    Example,
    Flow,
    GenerativeModel,
    GroupPosterior,
    JointPrior,
    LatentDistribution,
    Likelihood,
    ModelOutput,
    SpeedSwitches,
    UnconditionalPrior,
)
from ..nn import BN_SWISH_MODES, BatchNormSwish, WeightNormConv2d, recompute_bn_swish_outputs
from ..testing.doubles import hierarchical_arguments

CellFactory = Callable[[int, int, int], Cell]
CombinerFactory = Callable[[int, int, int], Combiner]
PosteriorFactory = Callable[[int, int], GroupPosterior]
PriorFactory = Callable[[int, int], ConditionalPrior]
FlowFactory = Callable[[int, int], Flow]
JointPriorFactory = Callable[[int], JointPrior]


def expand_groups_per_scale(
    num_scales: int, groups: int | list[int], adaptive: bool = False, min_groups: int = 1
) -> list[int]:
    """Groups per latent scale, highest resolution first.

    An int ``n`` gives ``n`` groups at every scale, or with ``adaptive`` ``n`` at the highest resolution and then
    ``max(min_groups, previous // 2)`` at each lower one. A list is taken as it is.
    """
    if isinstance(groups, (list, tuple)):
        out = [int(g) for g in groups]
        if len(out) != num_scales:
            raise ValueError(f"groups_per_scale lists {len(out)} scales, num_latent_scales is {num_scales}")
    else:
        out = [int(groups)]
        for _ in range(num_scales - 1):
            out.append(max(min_groups, out[-1] // 2) if adaptive else int(groups))
    if min(out) < 1:
        raise ValueError(f"every latent scale needs at least one group, got {out}")
    return out


@contextmanager
def _frozen_batch_norm(module: nn.Module) -> Iterator[None]:
    """BatchNorm layers keep their running statistics while a checkpointed cell is recomputed."""
    layers = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [(m.momentum, m.num_batches_tracked.clone() if m.num_batches_tracked is not None else None) for m in layers]
    for m in layers:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, (momentum, tracked) in zip(layers, saved, strict=False):
            m.momentum = momentum
            if tracked is not None:
                m.num_batches_tracked.copy_(tracked)


class HierarchicalVAE(ModelHubMixin, SpeedSwitches, GenerativeModel):
    """A multi-scale top-down hierarchical VAE built from cell, posterior, prior, flow and likelihood
    components. See the module docstring for the layout and the factory signatures."""

    supports_gradient_checkpointing = True

    def __init__(
        self,
        image_shape: list[int],
        likelihood: Likelihood,
        stem: CellFactory,
        preprocess_cell: CellFactory,
        encoder_cell: CellFactory,
        encoder_combiner: CombinerFactory,
        encoder_head: CellFactory,
        posterior: PosteriorFactory,
        top_prior: UnconditionalPrior,
        prior: PriorFactory,
        decoder_cell: CellFactory,
        decoder_combiner: CombinerFactory,
        postprocess_cell: CellFactory,
        decoder_head: CellFactory,
        flow: FlowFactory | None = None,
        num_flows: int = 0,
        encoder_channels: int = 32,
        decoder_channels: int = 32,
        latent_channels: int = 20,
        num_latent_scales: int = 1,
        groups_per_scale: int | list[int] = 1,
        adaptive_groups: bool = False,
        min_groups_per_scale: int = 1,
        encoder_cells_per_group: int = 2,
        decoder_cells_per_group: int = 2,
        preprocess_blocks: int = 1,
        preprocess_cells: int = 2,
        postprocess_blocks: int = 1,
        postprocess_cells: int = 2,
        channel_multiplier: int = 2,
        center_input: bool = True,
        joint_prior: JointPriorFactory | None = None,
    ) -> None:
        super().__init__()
        if len(image_shape) != 3 or min(image_shape) < 1:
            raise ValueError(f"image_shape must be [C, H, W] with positive sizes, got {image_shape}")
        for name, value, minimum in (
            ("encoder_channels", encoder_channels, 1),
            ("decoder_channels", decoder_channels, 1),
            ("latent_channels", latent_channels, 1),
            ("num_latent_scales", num_latent_scales, 1),
            ("channel_multiplier", channel_multiplier, 1),
            ("num_flows", num_flows, 0),
            ("encoder_cells_per_group", encoder_cells_per_group, 0),
            ("decoder_cells_per_group", decoder_cells_per_group, 0),
            ("preprocess_blocks", preprocess_blocks, 0),
            ("preprocess_cells", preprocess_cells, 1),
            ("postprocess_blocks", postprocess_blocks, 0),
            ("postprocess_cells", postprocess_cells, 1),
        ):
            if value < minimum:
                raise ValueError(f"{name} must be at least {minimum}, got {value}")
        if num_flows and flow is None:
            raise ValueError("num_flows > 0 needs a flow component")
        if preprocess_blocks != postprocess_blocks:
            raise ValueError(
                f"preprocess_blocks ({preprocess_blocks}) and postprocess_blocks ({postprocess_blocks}) must match "
                "for the output to have the input's resolution"
            )
        self.image_shape = tuple(int(s) for s in image_shape)
        data_channels, height, width = self.image_shape
        reduction = 2 ** (preprocess_blocks + num_latent_scales - 1)
        if height % reduction or width % reduction:
            raise ValueError(
                f"image size {height}x{width} must be divisible by {reduction} (2^(preprocess_blocks + scales - 1))"
            )
        self.groups_per_scale = expand_groups_per_scale(
            num_latent_scales, groups_per_scale, adaptive_groups, min_groups_per_scale
        )
        self.num_latent_scales = num_latent_scales
        self.latent_channels = latent_channels
        self.num_flows = num_flows
        self.center_input = center_input
        self.likelihood = likelihood
        #: recompute cells in the backward pass instead of keeping their activations (trainer switch)
        self.gradient_checkpointing = False
        mult = channel_multiplier
        enc, dec = encoder_channels, decoder_channels

        # ``scale`` is the channel factor relative to encoder_channels / decoder_channels: encoder features have
        # enc * scale channels and the decoder state at the same resolution dec * scale.
        # Registration order below is the order of module traversal, which regularisers that stack weights rely on.
        top_scale = mult ** (preprocess_blocks + num_latent_scales - 1)
        self.decoder_input = nn.Parameter(torch.rand(dec * top_scale, height // reduction, width // reduction))
        self.stem = stem(data_channels, enc, 1)

        scale = 1
        self.preprocess = nn.ModuleList()
        for _ in range(preprocess_blocks):
            for cell in range(preprocess_cells):
                if cell == preprocess_cells - 1:
                    self.preprocess.append(preprocess_cell(enc * scale, enc * scale * mult, 2))
                    scale *= mult
                else:
                    self.preprocess.append(preprocess_cell(enc * scale, enc * scale, 1))

        # encoder: "cell" entries transform the state, "combiner" entries remember it for a decoder group
        self.encoder_tower = nn.ModuleList()
        encoder_roles = []
        for level, groups in enumerate(self.groups_per_scale):
            for group in range(groups):
                for _ in range(encoder_cells_per_group):
                    self.encoder_tower.append(encoder_cell(enc * scale, enc * scale, 1))
                    encoder_roles.append("cell")
                if not (level == num_latent_scales - 1 and group == groups - 1):
                    self.encoder_tower.append(encoder_combiner(enc * scale, enc * scale, dec * scale))
                    encoder_roles.append("combiner")
            if level < num_latent_scales - 1:
                self.encoder_tower.append(encoder_cell(enc * scale, enc * scale * mult, 2))
                encoder_roles.append("cell")
                scale *= mult
        self.encoder_roles = tuple(encoder_roles)
        self.encoder_head = encoder_head(enc * scale, enc * scale, 1)

        # per latent group (top first): posterior, flows, prior
        self.posteriors = nn.ModuleList()
        self.priors = nn.ModuleList()
        self.flows = nn.ModuleList()
        group_scales = []
        for level in range(num_latent_scales):
            for _ in range(self.groups_per_scale[num_latent_scales - 1 - level]):
                self.posteriors.append(posterior(enc * scale, latent_channels))
                for _ in range(num_flows):
                    self.flows.append(flow(latent_channels, enc * scale))
                self.priors.append(top_prior if not group_scales else prior(dec * scale, latent_channels))
                group_scales.append(level)
            if level < num_latent_scales - 1:
                scale //= mult
        self.group_scales = tuple(group_scales)

        # decoder: "cell" entries transform the state, "combiner" entries merge the next latent group
        scale = top_scale
        self.decoder_tower = nn.ModuleList()
        decoder_roles = []
        for level in range(num_latent_scales):
            for group in range(self.groups_per_scale[num_latent_scales - 1 - level]):
                if not (level == 0 and group == 0):
                    for _ in range(decoder_cells_per_group):
                        self.decoder_tower.append(decoder_cell(dec * scale, dec * scale, 1))
                        decoder_roles.append("cell")
                self.decoder_tower.append(decoder_combiner(dec * scale, dec * scale, latent_channels))
                decoder_roles.append("combiner")
            if level < num_latent_scales - 1:
                self.decoder_tower.append(decoder_cell(dec * scale, dec * scale // mult, -1))
                decoder_roles.append("cell")
                scale //= mult
        self.decoder_roles = tuple(decoder_roles)

        self.postprocess = nn.ModuleList()
        for _ in range(postprocess_blocks):
            for cell in range(postprocess_cells):
                if cell == 0:
                    self.postprocess.append(postprocess_cell(dec * scale, dec * scale // mult, -1))
                    scale //= mult
                else:
                    self.postprocess.append(postprocess_cell(dec * scale, dec * scale, 1))
        self.decoder_head = decoder_head(dec * scale, likelihood.param_channels(data_channels), 1)

        # built last, so that the seeded initialisation of everything above does not depend on it
        self.num_top_groups = self.groups_per_scale[-1]
        self.joint_prior: JointPrior | None = None
        if joint_prior is not None:
            self.joint_prior = joint_prior(latent_channels * self.num_top_groups)
            if not isinstance(self.joint_prior, JointPrior):
                raise TypeError(f"joint_prior must build a JointPrior, got {type(self.joint_prior).__name__}")
        self._use_joint_prior = True

    # -- speed switches ----------------------------------------------------------------------------
    def _set_layer_mode(self, switch: str, mode: str, modes: tuple, layer_type: type, attribute: str, fallback) -> int:
        """Set ``attribute = mode`` on every ``layer_type`` layer; ``fallback`` (the interface's refusal) where there
        is none."""
        if mode not in modes:
            raise ValueError(f"{switch} must be one of {modes}")
        layers = [m for m in self.modules() if isinstance(m, layer_type)]
        if not layers:
            return fallback(mode)
        for layer in layers:
            setattr(layer, attribute, mode)
        return len(layers)

    def set_depthwise_weight_grad(self, mode: str) -> int:
        modes, fallback = WeightNormConv2d.DEPTHWISE_WEIGHT_GRAD_MODES, super().set_depthwise_weight_grad
        return self._set_layer_mode(
            "depthwise_weight_grad", mode, modes, WeightNormConv2d, "depthwise_weight_grad", fallback
        )

    def set_bn_swish(self, mode: str) -> int:
        count = self._set_layer_mode("bn_swish", mode, BN_SWISH_MODES, BatchNormSwish, "mode", super().set_bn_swish)
        self._bn_swish_input_only = mode == "input_only"
        return count

    # -- shapes ----------------------------------------------------------------------------------
    @property
    def num_groups(self) -> int:
        return len(self.group_scales)

    def latent_shapes(self, batch_size: int) -> list[tuple[int, ...]]:
        _, h, w = self.decoder_input.shape
        return [(batch_size, self.latent_channels, h * 2**s, w * 2**s) for s in self.group_scales]

    # -- encoder / decoder -------------------------------------------------------------------------
    def encoder_features(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        """The encoder head's output and the remembered encoder features (in the decoder's order)."""
        s = self._cell(self.stem, 2 * x - 1.0 if self.center_input else x)
        for cell in self.preprocess:
            s = self._cell(cell, s)
        features = []
        for role, module in zip(self.encoder_roles, self.encoder_tower, strict=True):
            if role == "combiner":
                features.append(s)
            else:
                s = self._cell(module, s)
        features.reverse()
        return self.encoder_head(s), features

    def _encoder_combiners(self) -> list[nn.Module]:
        combiners = [m for role, m in zip(self.encoder_roles, self.encoder_tower, strict=True) if role == "combiner"]
        combiners.reverse()
        return combiners

    _bn_swish_input_only = False  # set_bn_swish("input_only"): see vaezoo.nn.norm

    def forward(self, x: Tensor, noise: list[Tensor] | None = None) -> ModelOutput:
        """The bottom-up encoder, then the top-down decoder with one posterior sample per group (from ``noise``,
        one standard-normal tensor per group, top first, when given), the flows and the priors: the reconstruction
        term, the KL per group, log q and log p per example (:class:`~vaezoo.interfaces.ModelOutput`); with a
        joint prior, its log p scores the top scale."""
        if self._bn_swish_input_only and self.training and torch.is_grad_enabled():
            with recompute_bn_swish_outputs():  # the convolutions fed by BN-Swish do not keep their inputs
                return self._forward(x, noise)
        return self._forward(x, noise)

    def _forward(self, x: Tensor, noise: list[Tensor] | None) -> ModelOutput:
        x = self.likelihood.preprocess(x)
        top_features, features = self.encoder_features(x)
        combiners = self._encoder_combiners()
        state = self.decoder_input.unsqueeze(0).expand(x.size(0), -1, -1, -1)
        with_flows = self.num_flows > 0

        posteriors: list[LatentDistribution] = []
        priors: list[LatentDistribution] = []
        flow_outputs: list[Tensor] = []
        drawn: list[Tensor] = []
        latents: list[Tensor] = []
        kl, kl_diag, log_q, log_p = [], [], None, None
        top_groups = self.num_top_groups if self.joint_prior is not None else 0
        joint = self.joint_prior if self._use_joint_prior else None
        prior_noise: list[Tensor] = []
        group = 0
        for role, module in zip(self.decoder_roles, self.decoder_tower, strict=True):
            if role == "cell":
                state = self._cell(module, state)
                continue
            shape = (x.size(0), self.latent_channels, *state.shape[2:])
            prior = self.priors[group](state, shape)
            ftr = top_features if group == 0 else combiners[group - 1](features[group - 1], state)
            q = self.posteriors[group](ftr, prior)
            z, eps = q.sample(noise[group] if noise is not None else None)
            log_q_group = q.log_prob(z)
            log_det_per_sample = None
            for flow in self.flows[group * self.num_flows : (group + 1) * self.num_flows]:
                z, log_det = flow(z, ftr)
                if log_det.shape == z.shape:
                    log_q_group = log_q_group - log_det
                else:  # per-sample log-determinant
                    log_det_per_sample = log_det if log_det_per_sample is None else log_det_per_sample + log_det
                flow_outputs.append(z)
            log_p_group = prior.log_prob(z)
            closed_form = not with_flows and getattr(q, "gaussian", False) and getattr(prior, "gaussian", False)
            kl_per_var = q.kl(prior) if closed_form else log_q_group - log_p_group
            kl_group = torch.sum(kl_per_var, dim=[1, 2, 3])
            log_q_sum = torch.sum(log_q_group, dim=[1, 2, 3])
            if log_det_per_sample is not None:
                kl_group = kl_group - log_det_per_sample
                log_q_sum = log_q_sum - log_det_per_sample
            log_p_sum = torch.sum(log_p_group, dim=[1, 2, 3])
            if group < top_groups:
                if getattr(prior, "gaussian", False):
                    prior_noise.append((z - prior.mu) / prior.sigma)
                elif joint is not None:
                    raise VaezooError(
                        f"the top prior's {type(prior).__name__} is not a diagonal Gaussian: the "
                        "standardised noise of the top scale (a joint prior's input) needs mu and sigma"
                    )
                if joint is not None:  # the joint term -log p_joint(eps) is added once the top scale is complete
                    log_p_sum = -torch.sum(torch.broadcast_to(torch.log(prior.sigma), z.shape), dim=[1, 2, 3])
                    kl_group = log_q_sum - log_p_sum
            kl.append(kl_group)
            kl_diag.append(torch.mean(torch.sum(kl_per_var, dim=[2, 3]), dim=0))
            log_q = log_q_sum if log_q is None else log_q + log_q_sum
            log_p = log_p_sum if log_p is None else log_p + log_p_sum
            if joint is not None and group == top_groups - 1:
                joint_eps = torch.cat(prior_noise, dim=1)
                log_p_joint = joint.training_log_prob(joint_eps) if self.training else joint.log_prob(joint_eps)
                log_p = log_p + log_p_joint
                kl = [row - log_p_joint / top_groups for row in kl]
            posteriors.append(q)
            priors.append(prior)
            drawn.append(eps)
            latents.append(z)
            state = module(state, z)
            group += 1

        params = self.decode_state(state)
        with torch.autocast(x.device.type, enabled=False):  # the likelihood in full precision under autocast
            recon = -self.likelihood.log_prob(full_precision(params), x)
        extras: dict[str, Any] = {
            "kl_diag": torch.stack(kl_diag),
            "posteriors": posteriors,
            "priors": priors,
            "flow_outputs": flow_outputs,
            "latents": latents,
        }
        if top_groups:
            extras["prior_noise"] = prior_noise
            # an estimate that is right only in expectation must not enter an importance-weighted logsumexp
            extras["log_p_exact"] = joint is None or not self.training or joint.exact_in_training
        return ModelOutput(
            recon=recon, kl=torch.stack(kl), log_q=log_q, log_p=log_p, params=params, noise=drawn, extras=extras
        )

    def decode_state(self, state: Tensor) -> Tensor:
        for cell in self.postprocess:
            state = self._cell(cell, state)
        return self.decoder_head(state)

    def _cell(self, cell: nn.Module, state: Tensor) -> Tensor:
        """A cell, recomputed in the backward pass when gradient checkpointing is on (BatchNorm running
        statistics are updated once, in the forward pass, not again when recomputing)."""
        if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(
                cell, state, use_reentrant=False, context_fn=lambda: (nullcontext(), _frozen_batch_norm(cell))
            )
        return cell(state)

    def _decode(self, n: int, latent_for_group: Callable[[int, Tensor, tuple[int, ...]], Tensor]) -> Tensor:
        state = self.decoder_input.unsqueeze(0).expand(n, -1, -1, -1)
        group = 0
        for role, module in zip(self.decoder_roles, self.decoder_tower, strict=True):
            if role == "cell":
                state = self._cell(module, state)
                continue
            z = latent_for_group(group, state, (n, self.latent_channels, *state.shape[2:]))
            state = module(state, z)
            group += 1
        return self.decode_state(state)

    def sample_params(
        self,
        n: int,
        temperature: float | list[float] = 1.0,
        noise: list[Tensor] | None = None,
        sampler: str | None = None,
    ) -> Tensor:
        """Likelihood parameters of ``n`` samples; ``temperature`` is one value or one per group (top first).

        With a joint prior, ``noise`` of the top scale's groups is the joint prior's input noise, the joint prior
        draws at the temperature of the top group, and ``sampler`` names one of :meth:`samplers`."""
        temperatures = list(temperature) if isinstance(temperature, (list, tuple)) else [temperature] * self.num_groups
        if len(temperatures) != self.num_groups:
            raise ValueError(f"{len(temperatures)} temperatures given for {self.num_groups} latent groups")
        if sampler is not None and sampler not in self.samplers():
            known = ", ".join(self.samplers()) or "none: this model samples its priors directly"
            raise ValueError(f"unknown sampler {sampler!r}; samplers: {known}")
        joint_noise: list[Tensor] = []
        if self.joint_prior is not None and self._use_joint_prior:
            top, (_, _, h, w) = self.num_top_groups, self.latent_shapes(n)[0]
            if len(set(temperatures[:top])) > 1:
                raise ValueError(
                    f"the joint prior samples the {top} top-scale groups together: give them one temperature, "
                    f"got {temperatures[:top]}"
                )
            start = torch.cat(noise[:top], dim=1) if noise is not None else None
            shape = (n, self.latent_channels * top, h, w)
            joint_noise = list(
                self.joint_prior.sample(shape, temperatures[0], noise=start, sampler=sampler).chunk(top, 1)
            )

        def prior_sample(group: int, state: Tensor, shape: tuple[int, ...]) -> Tensor:
            if group < len(joint_noise):  # the joint prior applied the temperature to its own noise
                return self.priors[group](state, shape, 1.0).sample(joint_noise[group])[0]
            prior = self.priors[group](state, shape, temperatures[group])
            return prior.sample(noise[group] if noise is not None else None)[0]

        return self._decode(n, prior_sample)

    # -- the joint prior's hooks -------------------------------------------------------------------
    @contextmanager
    def own_priors(self) -> Iterator[None]:
        """Score and sample the top scale with its groups' own priors, as if there were no joint prior
        (``extras["prior_noise"]`` still holds their standardised noise)."""
        previous, self._use_joint_prior = self._use_joint_prior, False
        try:
            yield
        finally:
            self._use_joint_prior = previous

    def reference_priors(self):
        return self.own_priors() if self.joint_prior is not None else None

    def regularized_modules(self) -> Iterator[nn.Module]:
        """Every module but the joint prior's: it trains on its own loss and has its own regularisers (the
        paper's LSGM gives the score model its own weight, 0 in its MNIST setting)."""
        if self.joint_prior is None:
            return self.modules()
        excluded = {id(m) for m in self.joint_prior.modules()}
        return (m for m in self.modules() if id(m) not in excluded)

    def evaluation_protocol(self) -> dict[str, Any]:
        return self.joint_prior.evaluation_protocol() if self.joint_prior is not None and self._use_joint_prior else {}

    def samplers(self) -> dict[str, str]:
        return dict(self.joint_prior.samplers) if self.joint_prior is not None and self._use_joint_prior else {}

    def sample_report(self) -> dict[str, Any]:
        return dict(self.joint_prior.last_sample_info) if self.joint_prior is not None else {}

    def encode(self, x: Tensor) -> list[Tensor]:
        """The latents the decoder receives for ``x`` with zero noise (posterior means, after the flows)."""
        zeros = [torch.zeros(shape, device=x.device, dtype=x.dtype) for shape in self.latent_shapes(x.size(0))]
        with self.own_priors():  # the latents do not depend on the prior: skip a joint prior's costly log p
            return self(x, noise=zeros).extras["latents"]

    def reconstruct(self, x: Tensor) -> Tensor:
        """The likelihood mean given one posterior sample of each group, for images ``x`` in [0, 1]."""
        with self.own_priors():  # reconstructions do not depend on the prior: skip a joint prior's costly log p
            return super().reconstruct(x)

    def decode(self, latents: list[Tensor]) -> Tensor:
        """Likelihood means for given latents (one tensor per group, top first)."""
        if len(latents) != self.num_groups:
            raise ValueError(f"{len(latents)} latents given for {self.num_groups} latent groups")
        return self.likelihood.mean(self._decode(latents[0].size(0), lambda group, state, shape: latents[group]))

    # -- contract example ------------------------------------------------------------------------
    @classmethod
    def example(cls) -> Example:
        x = torch.rand(2, 1, 8, 8)

        def build() -> HierarchicalVAE:
            return cls(**cls.example_arguments())

        return Example(build=build, inputs=(x,), output_shape=(2,), call=lambda m, i: m(i[0]).nelbo)

    @staticmethod
    def example_arguments() -> dict[str, Any]:
        """The constructor arguments of the contract example (a 2-scale model on 1x8x8 images of
        :mod:`vaezoo.testing.doubles`), for plugins that test a part of theirs inside it (e.g. a joint prior)."""
        return hierarchical_arguments()
