"""The abstract contract of each component kind.

A component is a class registered under one of the kinds of :data:`vaezoo.registry.KINDS`. Its
constructor takes plain typed arguments (ints, floats, lists, other components) so that
jsonargparse can build it from a recipe's ``class_path``/``init_args``.

Every registered class also provides :meth:`Component.example`: a tiny instance and inputs. The
registry-parametrised contract test (``tests/test_contract.py``) runs each example through the
common checks (output shape, finite values, a backward pass, a state_dict round trip), so a new
component is tested by being registered.
"""

from __future__ import annotations

import abc
import inspect
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn


@dataclass
class Example:
    """A tiny instance of a component and inputs to run it on (for the contract test).

    ``build`` must be deterministic given the global seed; ``call`` reduces whatever the component
    returns to one tensor (defaults to ``module(*inputs)``); ``output_shape`` is the expected shape
    of that tensor, or None to skip the shape check.
    """

    build: Callable[[], nn.Module]
    inputs: tuple = ()
    output_shape: tuple[int, ...] | None = None
    call: Callable[[nn.Module, tuple], Tensor] | None = None
    #: names of parameters (fnmatch patterns) the output does not depend on by design, e.g. the parts of a model a
    #: regulariser leaves alone; every other parameter must receive a gradient
    gradient_free: tuple[str, ...] = ()
    #: why the backward pass is by design not the derivative of the output (a surrogate with stopped gradients);
    #: None: the contract checks the gradient against the output's finite difference
    surrogate_gradient: str | None = None

    def run(self, module: nn.Module) -> Tensor:
        if self.call is not None:
            return self.call(module, self.inputs)
        return module(*self.inputs)


class Component:
    """Mixin of every registered class."""

    #: the registry kind this class implements (set by each interface)
    kind: ClassVar[str] = ""
    #: the arguments an assembler passes, positionally and in this order, when it builds this component in a slot
    #: (a cell: ``(in_channels, out_channels, stride)``); the recipe's ``init_args`` give the rest. None: built from
    #: the recipe's arguments alone (an instance in its slot).
    slot_arguments: ClassVar[tuple[str, ...] | None] = None

    @classmethod
    @abc.abstractmethod
    def example(cls) -> Example:
        """A tiny instance and inputs for the contract test."""

    @classmethod
    def contract_problems(cls) -> list[str]:
        """What keeps this class from its kind's contract, one phrase each (empty: none). The registry refuses a
        class with any at registration. Here: every constructor argument without a default has a type hint (a recipe
        builds components from their signature, and cannot fill an untyped argument), and the constructor takes
        :attr:`slot_arguments` positionally."""
        try:
            parameters = list(inspect.signature(cls).parameters.values())
        except (TypeError, ValueError):
            return []
        named = (
            inspect.Parameter.POSITIONAL_ONLY,
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
            inspect.Parameter.KEYWORD_ONLY,
        )
        untyped = [p.name for p in parameters if p.kind in named and p.default is p.empty and p.annotation is p.empty]
        if untyped:
            return [f"its constructor's arguments {', '.join(untyped)} have no type hint (recipes need one for every "
                    "argument without a default, e.g. in_channels: int)"]  # fmt: skip
        if cls.slot_arguments is None:
            return []
        positional = [p.name for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        wanted = list(cls.slot_arguments)
        passes_on = any(p.kind is p.VAR_POSITIONAL for p in parameters)  # (*args, **kwargs): a parent's signature
        if passes_on and positional == wanted[: len(positional)]:
            return []
        if positional[: len(wanted)] != wanted:
            takes = ", ".join(positional[: len(wanted) + 1]) or "none"
            return [
                f"its constructor must take the slot's arguments ({', '.join(wanted)}) first, in this order "
                f"(its first positional arguments: {takes})"
            ]
        return []


# ---------------------------------------------------------------------------------------------
# Latent distributions
# ---------------------------------------------------------------------------------------------
class LatentDistribution(abc.ABC):
    """A factorised distribution over one latent group, shaped like the latent tensor.

    ``sample(noise)`` is reparameterised and takes explicit standard-normal ``noise`` so that runs
    are reproducible and comparable with reference implementations.
    """

    #: a diagonal Gaussian with ``mu`` and ``sigma``: the KL of two such is :meth:`kl`'s closed form; the models
    #: estimate the KL of any other pair from the sample, log q(z) - log p(z) (so a prior of another family works
    #: with or without flows)
    gaussian: ClassVar[bool] = False

    @abc.abstractmethod
    def sample(self, noise: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Return ``(z, noise)``; draws fresh standard-normal noise when ``noise`` is None."""

    @abc.abstractmethod
    def log_prob(self, z: Tensor) -> Tensor:
        """Elementwise log-density, same shape as ``z``."""

    def kl(self, other: LatentDistribution) -> Tensor:
        """Elementwise analytic KL(self || other) of two diagonal Gaussians (:attr:`gaussian` both)."""
        if not (self.gaussian and getattr(other, "gaussian", False)):
            raise TypeError(f"no closed-form KL of {type(self).__name__} from {type(other).__name__}: estimate it "
                            "from a sample, log q(z) - log p(z)")  # fmt: skip
        term = (self.mu - other.mu) / other.sigma
        ratio = self.sigma / other.sigma
        return 0.5 * (term * term + ratio * ratio) - 0.5 - torch.log(ratio)


# ---------------------------------------------------------------------------------------------
# Kinds
# ---------------------------------------------------------------------------------------------
class Cell(nn.Module, Component):
    """A building block mapping ``[B, in_channels, H, W]`` to ``[B, out_channels, H', W']``: ``forward(x)``.

    Built by an assembler with ``(in_channels, out_channels, stride)``; ``stride`` is 1 (same resolution), 2 (halve
    H and W) or -1 (double H and W), among :attr:`supported_strides`.
    """

    kind = "cell"
    slot_arguments = ("in_channels", "out_channels", "stride")
    supported_strides: ClassVar[tuple[int, ...]] = (1,)

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        if stride not in self.supported_strides:
            raise ValueError(f"{type(self).__name__} supports strides {self.supported_strides}, got {stride}")
        self.in_channels, self.out_channels, self.stride = in_channels, out_channels, stride


class Combiner(nn.Module, Component):
    """Merges a second input into a feature map: ``forward(x [B, in_channels, H, W], aux [B, aux_channels, H, W])``
    to ``[B, out_channels, H, W]``. The hierarchical assembler's encoder combiner merges the decoder state into an
    encoder feature; its decoder combiner merges a latent sample into the decoder state."""

    kind = "combiner"
    slot_arguments = ("in_channels", "out_channels", "aux_channels")

    def __init__(self, in_channels: int, out_channels: int, aux_channels: int) -> None:
        super().__init__()
        self.in_channels, self.out_channels, self.aux_channels = in_channels, out_channels, aux_channels

    @abc.abstractmethod
    def forward(self, x: Tensor, aux: Tensor) -> Tensor: ...


class Prior(nn.Module, Component):
    """p(z_i | z_<i) for one latent group. A prior is one of two kinds of slot, and subclasses the one it fills:

    - :class:`UnconditionalPrior`: one instance, built from the recipe's arguments alone (``top_prior`` of the
      hierarchical assembler, ``prior`` of ``ConvVAE``); the ``state`` it is called with only gives the device and
      dtype (its values are not used);
    - :class:`ConditionalPrior`: built per latent group by the assembler with ``(in_channels, latent_channels)``
      (``prior`` of the hierarchical assembler), called with the decoder state.
    """

    kind = "prior"

    @abc.abstractmethod
    def forward(
        self, state: Tensor | None, latent_shape: Sequence[int], temperature: float = 1.0
    ) -> LatentDistribution:
        """``latent_shape`` is ``[B, C, H, W]`` (or ``[B, D]``) of the group's latent."""

    @classmethod
    def contract_problems(cls) -> list[str]:
        problems = super().contract_problems()
        if not issubclass(cls, (UnconditionalPrior, ConditionalPrior)):
            problems.append(
                "a prior subclasses UnconditionalPrior (one instance, from its own arguments) or ConditionalPrior "
                "(built per group with (in_channels, latent_channels), called with the decoder state)"
            )
        return problems


class UnconditionalPrior(Prior):
    """p(z) of one group, independent of the decoder: one instance in its slot; ``state`` (a tensor, or None)
    only gives the device and dtype."""


class ConditionalPrior(Prior):
    """p(z_i | z_<i) from the decoder state: built per group with ``(in_channels, latent_channels)``, the state's
    channels and the latent's; called with the state ``[B, in_channels, H, W]``."""

    slot_arguments = ("in_channels", "latent_channels")


class JointPrior(nn.Module, Component):
    """p(eps) over several latent groups at once: the top scale's, in the standardised noise of their own priors.

    The assembler (:class:`vaezoo.models.HierarchicalVAE` with ``joint_prior``) concatenates, along channels, the
    groups' ``eps_g = (z_g - mu_g) / sigma_g`` under each group's own prior (``[B, channels, H, W]``, top group
    first), so that ``log p(z) = log p(eps) - sum log sigma``; to sample, it draws ``eps`` here and passes each
    slice as the noise of its group's own prior. ``channels`` is the total over the groups.
    """

    kind = "joint_prior"
    slot_arguments = ("channels",)
    #: whether :meth:`training_log_prob` is a per-sample value that may enter an importance-weighted logsumexp
    #: (False for estimates that are right only in expectation, such as denoising score matching)
    exact_in_training: ClassVar[bool] = True
    #: the samplers :meth:`sample` accepts beyond the default (name -> description), for ``vaezoo sample``
    samplers: ClassVar[dict[str, str]] = {}

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels
        #: what the last :meth:`sample` reports (e.g. the number of function evaluations of an ODE solve)
        self.last_sample_info: dict[str, Any] = {}

    @abc.abstractmethod
    def log_prob(self, noise: Tensor) -> Tensor:
        """log p(noise) per example, ``[B]``: the value evaluation reports (see :meth:`evaluation_protocol`)."""

    def training_log_prob(self, noise: Tensor) -> Tensor:
        """What the model's forward uses in training mode (gradients reach ``noise``); :meth:`log_prob` unless
        a cheaper estimate exists (then set :attr:`exact_in_training` to False when it is right only in
        expectation)."""
        return self.log_prob(noise)

    @abc.abstractmethod
    def sample(
        self, shape: Sequence[int], temperature: float = 1.0, noise: Tensor | None = None, sampler: str | None = None
    ) -> Tensor:
        """Standardised noise of shape ``shape``, from the joint prior's own input ``noise`` (standard normal,
        drawn when None) so that draws are reproducible."""

    def loss(self, noise: Tensor) -> tuple[Tensor, dict[str, Any]]:
        """The prior's own training loss on given (detached) noise and its metrics; by default the negative
        mean of :meth:`training_log_prob`."""
        nll = -self.training_log_prob(noise).mean()
        return nll, {"prior_nll": nll.detach()}

    def evaluation_protocol(self) -> dict[str, Any]:
        """How evaluation should use :meth:`log_prob`: ``{"log_p": description, "max_k": int or None,
        "why": reason for max_k}``; empty when importance sampling with any k is fine."""
        return {}


class Posterior(nn.Module, Component):
    """q(z_i | x, z_<i) from encoder features and (optionally) the prior. Like a prior, a posterior is one of two
    kinds of slot, and subclasses the one it fills:

    - :class:`GroupPosterior`: built per latent group by the hierarchical assembler with
      ``(in_channels, latent_channels)``, the encoder features' channels and the latent's;
    - :class:`VectorPosterior`: one instance, built from the recipe's arguments alone (``posterior`` of ``ConvVAE``),
      over a flat latent vector.
    """

    kind = "posterior"

    @classmethod
    def contract_problems(cls) -> list[str]:
        problems = super().contract_problems()
        if not issubclass(cls, (GroupPosterior, VectorPosterior)):
            problems.append(
                "a posterior subclasses GroupPosterior (built per group with (in_channels, latent_channels)) or "
                "VectorPosterior (one instance, from its own arguments)"
            )
        return problems

    @abc.abstractmethod
    def forward(self, features: Tensor, prior: LatentDistribution | None) -> LatentDistribution: ...


class GroupPosterior(Posterior):
    """q(z_i | x, z_<i) of one latent group: built per group with ``(in_channels, latent_channels)``; called with the
    encoder features ``[B, in_channels, H, W]`` and the group's prior."""

    slot_arguments = ("in_channels", "latent_channels")


class VectorPosterior(Posterior):
    """q(z | x) over a flat latent vector: one instance in its slot, called with the encoder's features."""


class Flow(nn.Module, Component):
    """An invertible map applied to a posterior sample: ``z, context -> (z', log|det dz'/dz|)``.

    ``log_det`` is elementwise (same shape as z) or per sample ``[B]``.
    """

    kind = "flow"
    slot_arguments = ("latent_channels", "context_channels")

    @abc.abstractmethod
    def forward(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]: ...


class Denoiser(nn.Module, Component):
    """A time-conditioned network on latents for diffusion or score-based priors: ``(z_t [B, C, H, W], t [B])``
    to a tensor shaped like ``z_t`` (what it predicts, e.g. the noise, is the prior's convention)."""

    kind = "denoiser"
    slot_arguments = ("channels",)

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels

    @abc.abstractmethod
    def forward(self, z: Tensor, t: Tensor) -> Tensor: ...


class Likelihood(nn.Module, Component):
    """p(x | decoder output). ``x`` is in [0, 1]; parameters come from the decoder's last conv."""

    kind = "likelihood"

    @abc.abstractmethod
    def param_channels(self, data_channels: int) -> int:
        """How many channels the decoder must output for data with ``data_channels`` channels."""

    @abc.abstractmethod
    def log_prob(self, params: Tensor, x: Tensor) -> Tensor:
        """log p(x | params) summed over the scored dimensions: ``[B]``."""

    @abc.abstractmethod
    def sample(self, params: Tensor, temperature: float = 1.0) -> Tensor:
        """A sample in [0, 1]."""

    @abc.abstractmethod
    def mean(self, params: Tensor) -> Tensor:
        """The mean image in [0, 1]."""

    def preprocess(self, x: Tensor) -> Tensor:
        """Map a batch in [0, 1] to what the likelihood scores (e.g. bit-depth reduction)."""
        return x

    def num_scored_dims(self, data_shape: Sequence[int]) -> int:
        """Dimensions scored per example (for bits/dim), given ``[C, H, W]``."""
        c, h, w = data_shape
        return c * h * w

    #: "nats" for binary data, "bits/dim" for discretised intensities
    report_unit: ClassVar[str] = "bits/dim"


class Regularizer(nn.Module, Component):
    """An extra training loss computed from the model (weighted by the objective)."""

    kind = "regularizer"

    @abc.abstractmethod
    def forward(self, model: nn.Module) -> Tensor: ...

    @staticmethod
    def modules_of(model: nn.Module) -> Iterator[nn.Module]:
        """The modules a regulariser of ``model`` covers: a generative model's
        :meth:`GenerativeModel.regularized_modules` (a part with its own regulariser, such as a joint prior's
        network, is left out), every module of any other module."""
        scoped = getattr(model, "regularized_modules", None)
        return scoped() if callable(scoped) else model.modules()


@dataclass
class ModelOutput:
    """What a generative model's forward returns for a batch.

    All per-example terms are in nats. ``kl`` is ``[G, B]``, one row per latent group (top group
    first); ``log_q``/``log_p`` are the summed log-densities of the sampled latents (``[B]``), so
    ``log_iw = -recon - log_q + log_p`` is one importance weight.
    """

    recon: Tensor
    kl: Tensor
    log_q: Tensor
    log_p: Tensor
    params: Tensor
    noise: list[Tensor] = field(default_factory=list)
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def nelbo(self) -> Tensor:
        return self.recon + self.kl.sum(0)

    @property
    def log_iw(self) -> Tensor:
        return -self.recon - self.log_q + self.log_p


class GenerativeModel(nn.Module, Component):
    """A latent-variable model of images in [0, 1], shaped ``image_shape = (C, H, W)``.

    ``noise`` arguments are lists of standard-normal tensors, one per latent group, top group
    first; None draws fresh noise.
    """

    kind = "model"

    #: the spec (class_path/init_args) the model was built from; set by :func:`vaezoo.build`
    config: dict | None = None
    image_shape: tuple[int, int, int]
    likelihood: Likelihood

    @abc.abstractmethod
    def forward(self, x: Tensor, noise: list[Tensor] | None = None) -> ModelOutput:
        """Encode a batch of images ``x`` in [0, 1], draw one posterior sample per group (from ``noise`` when given:
        one standard-normal tensor per latent group, top first, shaped as :meth:`latent_shapes`) and score it: the
        reconstruction term, the KL per group and the log-densities, per example (:class:`ModelOutput`)."""

    @abc.abstractmethod
    def sample_params(self, n: int, temperature: float = 1.0, noise: list[Tensor] | None = None) -> Tensor:
        """Decoder output (likelihood parameters) for ``n`` prior samples."""

    def sample(self, n: int, temperature: float = 1.0, noise: list[Tensor] | None = None, mean: bool = True) -> Tensor:
        """``n`` images ``[n, C, H, W]`` in [0, 1] from the prior: the likelihood mean (default) or, with
        ``mean=False``, a sample of it. ``temperature`` scales the prior's standard deviations; ``noise`` (one
        standard-normal tensor per latent group, top first) makes the samples reproducible."""
        params = self.sample_params(n, temperature, noise)
        return self.likelihood.mean(params) if mean else self.likelihood.sample(params)

    def latent_shapes(self, batch_size: int) -> list[tuple[int, ...]]:
        """Shapes of the noise tensors, top group first."""
        raise NotImplementedError

    def regularized_modules(self) -> Iterator[nn.Module]:
        """The modules the model's objective regularises (:meth:`Regularizer.modules_of`): all of them by default;
        a model with a part trained by its own loss (a joint prior) leaves that part out."""
        return self.modules()

    # -- generic hooks the commands read: a model with a special prior says how to evaluate and sample it ------
    def evaluation_protocol(self) -> dict[str, Any]:
        """Notes for evaluation: ``{"log_p": how log p(z) is computed, "max_k": the most importance samples worth
        their cost (None: any), "why": the reason}``; empty for models whose log p is a closed form."""
        return {}

    def samplers(self) -> dict[str, str]:
        """The named prior samplers :meth:`sample` accepts (``sampler=NAME``), name -> description."""
        return {}

    def sample_report(self) -> dict[str, Any]:
        """What the last prior sampling reports (e.g. function evaluations of an ODE solve); empty by default."""
        return {}

    def reference_priors(self) -> AbstractContextManager | None:
        """A context in which the model scores with the priors a special prior replaces (a joint prior's groups'
        own priors), so that ``fit`` can report the bound it improves on beside its own; ``None``: nothing to
        compare."""
        return None

    def encode(self, x: Tensor) -> list[Tensor]:
        """Posterior means of every latent group (top first) for images ``x`` ``[B, C, H, W]`` in [0, 1]: the
        latents :meth:`decode` takes back."""
        raise NotImplementedError(f"{type(self).__name__} does not implement encode")

    def decode(self, latents: list[Tensor]) -> Tensor:
        """Likelihood means in [0, 1], ``[B, C, H, W]``, for given latents (one tensor per group, top first, as
        :meth:`encode` returns them)."""
        raise NotImplementedError(f"{type(self).__name__} does not implement decode")

    def reconstruct(self, x: Tensor) -> Tensor:
        """Reconstructions of images ``x`` in [0, 1]: the likelihood mean given one posterior sample of each
        group, ``[B, C, H, W]``."""
        return self.likelihood.mean(self(x).params)

    def interpolate(self, x0: Tensor, x1: Tensor, steps: int = 8) -> Tensor:
        """Decodes of ``steps`` linear interpolations between the latents (:meth:`encode`) of two images ``x0`` and
        ``x1`` (``[C, H, W]`` or ``[1, C, H, W]``), from ``x0`` to ``x1`` inclusive: ``[steps, C, H, W]``."""
        z0, z1 = (
            self.encode(x0.unsqueeze(0) if x0.ndim == 3 else x0),
            self.encode(x1.unsqueeze(0) if x1.ndim == 3 else x1),
        )
        weights = torch.linspace(0, 1, steps, device=z0[0].device)
        frames = [self.decode([(1 - w) * a + w * b for a, b in zip(z0, z1, strict=False)]) for w in weights]
        return torch.cat(frames)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device


class SpeedSwitches:
    """Speed and memory switches of a model family built from :mod:`vaezoo.nn` layers (the hierarchical VAE): the
    trainer turns on what the recipe asks for (``trainer.speed.compile_cells``, ``depthwise_weight_grad``, ``bn_swish``,
    ``gradient_checkpointing``). A model that mixes this in declares that it has them; any other model is refused
    those settings in one line. Each method raises ``NotImplementedError`` when the model has no layer it acts on."""

    #: whether :meth:`enable_gradient_checkpointing` works for this model
    supports_gradient_checkpointing: ClassVar[bool] = False

    def enable_gradient_checkpointing(self, enabled: bool = True) -> None:
        """Recompute activations in the backward pass instead of keeping them (less memory, more time)."""
        if not self.supports_gradient_checkpointing:
            raise NotImplementedError(f"{type(self).__name__} does not support gradient checkpointing")
        self.gradient_checkpointing = enabled

    def set_depthwise_weight_grad(self, mode: str) -> int:
        """Choose how depthwise convolutions compute their weight gradient (``"native"`` or ``"compiled"``);
        returns the number of layers switched. Models built from :mod:`vaezoo.nn` convolutions implement it."""
        raise NotImplementedError(f"{type(self).__name__} has no layer with a choice of depthwise weight gradient")

    def set_bn_swish(self, mode: str) -> int:
        """Choose how BatchNorm-Swish layers run in training (``"native"``, ``"fused"``, ``"recompute"`` or
        ``"input_only"``; see :mod:`vaezoo.nn.norm`); returns the number of layers switched. Models built from :mod:`vaezoo.nn` blocks
        implement it."""
        raise NotImplementedError(f"{type(self).__name__} has no BatchNorm-Swish layer")

    def compile_cells(self) -> int:
        """``torch.compile`` every :class:`Cell` of the model in place (fuses their elementwise tails); returns
        how many were compiled."""
        cells = [m for m in self.modules() if isinstance(m, (Cell, Combiner))]
        if not cells:
            raise NotImplementedError(f"{type(self).__name__} has no cells to compile")
        import torch._dynamo.config

        # Every cell of a class runs the same ``forward`` code, and dynamo caches graphs per code object: past its
        # recompile limit (8) every further cell of that class silently ran eagerly. Cells of one class and shape
        # share a graph (parameters are graph inputs), so the limit needs one entry per distinct cell, times the
        # grad-mode, train/eval and memory-format variants a run meets.
        distinct = {(type(c), tuple(tuple(p.shape) for p in c.parameters())) for c in cells}
        limit = 4 * len(distinct) + 8
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, limit)
        torch._dynamo.config.accumulated_recompile_limit = max(
            torch._dynamo.config.accumulated_recompile_limit, 2 * limit
        )
        for cell in cells:
            cell.compile(dynamic=False)
        return len(cells)


class Objective(nn.Module, Component):
    """The training loss: ``objective(model, x, step) -> (loss, metrics)``.

    Owns the regularisers and the KL schedules; its state (e.g. power-iteration vectors) is saved in
    training checkpoints.
    """

    kind = "objective"

    @abc.abstractmethod
    def forward(
        self, model: GenerativeModel, x: Tensor, step: int, noise: list[Tensor] | None = None
    ) -> tuple[Tensor, dict[str, Any]]: ...

    def set_total_steps(self, total_steps: int) -> None:
        """Told by the trainer before training, for schedules defined as fractions of the run."""
        self.total_steps = total_steps


class DataModule(Component):
    """Train and test data for one data set. Images are float tensors in [0, 1], ``[C, H, W]``."""

    kind = "dataset"
    image_shape: tuple[int, int, int]
    batch_size: int
    #: where to get the data and the layout expected (ends the missing-data errors, and ``vaezoo data download``'s
    #: answer for a data set without a public archive)
    source_hint: ClassVar[str] = ""
    #: the public archives (``vaezoo.data.download.Archive``: file name, md5, urls) that ``vaezoo data download`` and
    #: the data module's ``download: true`` fetch; empty when the data set has none. A class with archives builds from
    #: ``cls(root=ROOT)`` with its other arguments at their defaults once they are in place.
    archives: ClassVar[tuple] = ()
    #: the folder under ``root`` that the archives fill (e.g. ``cifar-10-batches-py``), renamed into place once complete
    archive_folder: ClassVar[str] = ""

    def train_transform(self, batch: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Applied to every training batch by the trainer, with the trainer's seeded generator
        (e.g. dynamic binarisation), so that data randomness is part of the resumable state."""
        return batch

    @abc.abstractmethod
    def train_dataset(self) -> torch.utils.data.Dataset: ...

    @abc.abstractmethod
    def test_dataset(self) -> torch.utils.data.Dataset: ...

    def describe(self) -> str:
        return type(self).__name__


class FeatureExtractor(nn.Module, Component):
    """A frozen image network whose features sample-quality metrics compare (``vaezoo evaluate --metrics``).

    ``forward`` maps images in [0, 1], ``[N, C, H, W]`` of a model's image shape, to float32 features
    ``[N, feature_dim]``; bringing the images to the network's input (resizing, channels, quantisation) is the
    extractor's own rule, named by :meth:`protocol`. A Fréchet distance in its features is reported as ``metric``
    (KID as ``kid_metric``, precision and recall as ``prc_metric``), described by ``label``: figures compare only between the same extractor, weights and
    rule.
    """

    kind = "feature_extractor"
    #: the name the Fréchet distance in these features is reported under (``--metrics``), e.g. ``fid``
    metric: ClassVar[str] = ""
    #: the name of the kernel (KID) distance in these features, or None when not offered
    kid_metric: ClassVar[str | None] = None
    #: the name of improved precision and recall in these features, or None when not offered
    prc_metric: ClassVar[str | None] = None
    #: what the figure is, printed beside it (e.g. "not comparable with Inception FID")
    label: ClassVar[str] = ""
    feature_dim: int

    @classmethod
    def open(cls, weights: str | None = None) -> FeatureExtractor:
        """The ready extractor in eval mode. ``weights``: a user-supplied weights file, for extractors whose weights
        are not shipped (None: the extractor's default, e.g. an environment variable); a missing file is refused in
        one line before anything slow happens."""
        return cls().eval()

    @abc.abstractmethod
    def forward(self, images: Tensor) -> Tensor: ...

    @abc.abstractmethod
    def protocol(self) -> dict[str, Any]:
        """What a figure in these features depends on: ``{"name", "weights", "weights_sha256", "resize",
        "features"}`` (strings)."""


class Logger(Component):
    """A destination of a run's metrics and preview images besides ``metrics.jsonl`` (which every run writes): named in
    a recipe's ``trainer.logging.loggers`` (``[TensorBoard]``, ``[{class_path: MyLogger, init_args: {...}}]``).

    Rank 0 builds one per entry as ``cls(run_dir, **init_args)`` when training starts and calls it as the run goes:
    :meth:`log_scalars` with each metrics.jsonl record's numbers (a list per latent group flattened to
    ``kl/group_0``, ``kl/group_1``, ...; the learning rate ``lr``, the KL coefficient ``kl_coeff``, the validation
    ``val_elbo_nats``, ...), :meth:`log_images` every ``trainer.logging.image_every`` steps, :meth:`rewind` when a
    resumed or rolled-back run is about to log steps again, and :meth:`close` at the end. Only
    :meth:`log_scalars` is required: a logger for an experiment tracker is its client's few calls.
    """

    kind = "logger"
    slot_arguments = ("run_dir",)

    @classmethod
    def missing(cls) -> str | None:
        """Why this logger cannot run here (a package it needs is not installed: say what to install), or None.
        Asked before a run writes anything, so that a logger a recipe names and this machine lacks is one line."""
        return None

    @classmethod
    def describe(cls, run_dir: Path) -> str:
        """Where a run in ``run_dir`` logs to, for the line ``vaezoo fit`` prints at its start (default: the class
        name)."""
        return cls.__name__

    @abc.abstractmethod
    def log_scalars(self, step: int, scalars: dict[str, float]) -> None:
        """Numbers measured at ``step``, by name (``loss``, ``kl/group_0``, ``lr``, ``val_elbo_nats``, ...)."""

    def log_images(self, step: int, name: str, grid: Tensor) -> None:
        """An image grid (``samples``, ``reconstructions``): float ``[3, H, W]`` in [0, 1] on the CPU. Default:
        ignored."""

    def rewind(self, step: int) -> None:
        """The run continues from ``step`` (resumed from, or rolled back to, its checkpoint): the steps after it are
        about to be logged again. Default: nothing (a destination that cannot forget shows those steps twice)."""

    def close(self) -> None:
        """The run is over (or stopped): flush and release what the logger holds."""

    @classmethod
    def example(cls) -> Example:
        """Loggers are checked by :func:`vaezoo.testing.check_logger`, which builds one in a temporary folder."""
        raise NotImplementedError("a logger is checked by vaezoo.testing.check_logger, in a temporary folder")


#: interface class of each kind that has one (presets and pretrained entries are plain callables/dicts)
INTERFACES: dict[str, type] = {
    "cell": Cell,
    "combiner": Combiner,
    "prior": Prior,
    "joint_prior": JointPrior,
    "denoiser": Denoiser,
    "posterior": Posterior,
    "flow": Flow,
    "likelihood": Likelihood,
    "regularizer": Regularizer,
    "objective": Objective,
    "model": GenerativeModel,
    "dataset": DataModule,
    "feature_extractor": FeatureExtractor,
    "logger": Logger,
}
