"""The trainer's settings, grouped by what they are about, each check beside its field.

A recipe's ``trainer`` section holds the run's length, precision and device at its top level and one mapping per
group (``--trainer.optimizer.lr 0.01`` on the command line)::

    trainer:
      max_steps: 4000
      optimizer: {lr: 0.01, weight_decay: 0.0003}
      schedule: {warmup_steps: 200, lr_min: 0.0001}
      checkpoints: {every: 500, keep_last: 2}

Each group is a dataclass; a field's accepted range is written beside it (``metadata=within(...)``) and checked
when the group is built, from Python (``Trainer(optimizer={"lr": 0.01})`` or an ``OptimizerSettings``) and from a
recipe alike, so both see the same one-line message: ``trainer.optimizer.lr must be finite and >= 0, got nan``.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Literal

from ..errors import ConfigError
from .optimizers import check_param_groups


def within(check: Callable[[Any], bool], what: str) -> dict:
    """A field's accepted values: ``check(value)`` is true for them, ``what`` says which in the error."""
    return {"range": (check, what)}


def _finite_at_least_zero(v) -> bool:
    return math.isfinite(v) and v >= 0


def _positive(v) -> bool:
    return v >= 1


def _at_least_zero(v) -> bool:
    return v >= 0


def _is_logger_spec(spec: Any) -> bool:
    """A logger named by its registry name, or a ``{class_path, init_args}`` mapping."""
    if isinstance(spec, str):
        return bool(spec.strip())
    return (
        isinstance(spec, Mapping)
        and isinstance(spec.get("class_path"), str)
        and set(spec) <= {"class_path", "init_args"}
        and isinstance(spec.get("init_args", {}), Mapping)
    )


def check_value(where: str, value: Any, check: Callable[[Any], bool], what: str) -> None:
    """``where must be WHAT, got VALUE`` when ``check(value)`` fails (or cannot be evaluated on that value)."""
    try:
        ok = bool(check(value))
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ConfigError(f"{where} must be {what}, got {value!r}")


@dataclass(frozen=True)
class SettingsGroup:
    """One group of the trainer's settings: its fields' ranges are checked when it is built; frozen, so that a default
    instance can be shared and the settings of a run never change under it."""

    #: the group's key under ``trainer`` (in messages and recipes)
    group: ClassVar[str] = ""

    def __post_init__(self) -> None:
        for item in fields(self):
            rule = item.metadata.get("range")
            if rule is not None:
                check_value(f"trainer.{self.group}.{item.name}", getattr(self, item.name), *rule)

    @classmethod
    def coerce(cls, value: Any) -> SettingsGroup:
        """The group from what a caller gave: an instance, a mapping of its fields, or None (the defaults)."""
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"trainer.{cls.group}: expected a mapping of {cls.group} settings, got {value!r}")
        names = [item.name for item in fields(cls)]
        for key in value:
            if key not in names:
                close = difflib.get_close_matches(str(key), names, n=2)
                hint = f" (did you mean {', '.join(close)}?)" if close else f" (it takes: {', '.join(names)})"
                raise ConfigError(f"trainer.{cls.group}.{key}: unknown {cls.group} setting{hint}")
        return cls(**value)


@dataclass(frozen=True)
class OptimizerSettings(SettingsGroup):
    """Adamax, NVAE's optimiser (L2 weight decay added to the gradient), and what acts on its update.

    Args:
        lr: Peak learning rate, reached at the end of the warm-up.
        weight_decay: Adamax's L2 weight decay.
        eps: Adamax's epsilon (NVAE uses 1e-3).
        betas: Adamax's two moment decay rates.
        grad_clip: Clip the gradients to this total norm (null: no clipping).
        ema_decay: Decay of an exponential moving average of the weights, evaluated and saved at the end (null: none).
        param_groups: Per-component optimiser settings, chosen by name patterns (see vaezoo.training.optimizers).
    """

    group: ClassVar[str] = "optimizer"

    lr: float = field(default=1e-2, metadata=within(_finite_at_least_zero, "finite and >= 0"))
    weight_decay: float = field(default=3e-4, metadata=within(_finite_at_least_zero, "finite and >= 0"))
    eps: float = field(default=1e-3, metadata=within(lambda v: math.isfinite(v) and v > 0, "finite and positive"))
    betas: tuple[float, float] = field(
        default=(0.9, 0.999),
        metadata=within(
            lambda v: len(v) == 2 and all(math.isfinite(b) and 0 <= b < 1 for b in v), "two values in [0, 1)"
        ),
    )
    grad_clip: float | None = field(
        default=None,
        metadata=within(lambda v: v is None or (math.isfinite(v) and v > 0), "null or finite and positive"),
    )
    ema_decay: float | None = field(
        default=None, metadata=within(lambda v: v is None or 0.0 < v < 1.0, "null or in (0, 1)")
    )
    param_groups: list[dict] | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        # frozen: the settings of a run do not change under it (a default instance is shared by every trainer)
        object.__setattr__(self, "betas", tuple(self.betas))
        object.__setattr__(self, "param_groups", check_param_groups(self.param_groups))
        if self.ema_decay is not None and any(g.get("ema_decay") for g in self.param_groups):
            raise ConfigError("set trainer.optimizer.ema_decay or a param_groups ema_decay, not both")


@dataclass(frozen=True)
class ScheduleSettings(SettingsGroup):
    """The learning rate over the run: a linear warm-up from 0 to the optimiser's lr, then a decay to lr_min.

    Args:
        decay: After the warm-up: cosine decay per step, per epoch (as NVAE's code), or constant.
        lr_min: Learning rate at the last step, where the cosine decay ends.
        warmup_steps: Steps of linear learning-rate warm-up from 0 to lr.
        warmup_epochs: Learning-rate warm-up in epochs (converted to steps); replaces warmup_steps when set.
    """

    group: ClassVar[str] = "schedule"

    decay: Literal["cosine_step", "cosine_epoch", "constant"] = "cosine_step"
    lr_min: float = field(default=1e-4, metadata=within(_finite_at_least_zero, "finite and >= 0"))
    warmup_steps: int = field(default=0, metadata=within(_at_least_zero, ">= 0"))
    warmup_epochs: float | None = field(
        default=None, metadata=within(lambda v: v is None or _finite_at_least_zero(v), "null or finite and >= 0")
    )


@dataclass(frozen=True)
class CheckpointSettings(SettingsGroup):
    """Checkpoint files in the run folder (written atomically; a resume continues from the newest).

    Args:
        every: Write a checkpoint every this many steps (0: only the final one).
        keep_last: Checkpoints kept on disk, the newest (0: keep all).
    """

    group: ClassVar[str] = "checkpoints"

    every: int = field(default=500, metadata=within(_at_least_zero, ">= 0 (0: no periodic checkpoints)"))
    keep_last: int = field(default=2, metadata=within(_at_least_zero, ">= 0"))


@dataclass(frozen=True)
class RecoverySettings(SettingsGroup):
    """What a run does after non-finite steps: skip them, then roll back to the last checkpoint with a lower
    learning rate, then stop as diverged.

    Args:
        max_consecutive_bad_steps: Non-finite steps in a row that roll back to the last checkpoint.
        max_rollbacks: Rollbacks allowed before the run stops as diverged.
        rollback_lr_factor: Factor on the learning rate at each rollback.
    """

    group: ClassVar[str] = "recovery"

    max_consecutive_bad_steps: int = field(default=20, metadata=within(_positive, "positive"))
    max_rollbacks: int = field(default=3, metadata=within(_at_least_zero, ">= 0"))
    rollback_lr_factor: float = field(
        default=0.5, metadata=within(lambda v: math.isfinite(v) and 0 < v <= 1, "in (0, 1]")
    )


@dataclass(frozen=True)
class LoggingSettings(SettingsGroup):
    """What a run writes as it goes: metrics.jsonl records, the loggers (TensorBoard, ...), preview images, the progress
    bar.

    Args:
        log_every: Write a metrics.jsonl record (and send it to the loggers) every this many steps.
        sample_every: Write samples and reconstructions PNGs every this many steps (0: only at the end).
        num_samples: Images in each sample grid.
        sample_temperature: Temperature of the prior when drawing those samples.
        tensorboard: The TensorBoard logger: on, off, or null (on when the tensorboard package is installed).
        loggers: More loggers (vaezoo list logger): names or {class_path, init_args}; metrics.jsonl is always written.
        image_every: Send sample and reconstruction grids to the loggers every this many steps (0: none).
        progress: Show the progress bar (on a terminal, rank 0 only).
    """

    group: ClassVar[str] = "logging"

    log_every: int = field(default=10, metadata=within(_positive, "positive"))
    sample_every: int = field(default=0, metadata=within(_at_least_zero, ">= 0 (0: no periodic samples)"))
    num_samples: int = field(default=64, metadata=within(_positive, "positive"))
    sample_temperature: float = field(
        default=1.0, metadata=within(lambda v: math.isfinite(v) and v > 0, "finite and positive")
    )
    tensorboard: bool | None = None
    loggers: list[str | dict[str, Any]] = field(
        default_factory=list,
        metadata=within(
            lambda v: isinstance(v, (list, tuple)) and all(_is_logger_spec(s) for s in v),
            "a list of logger names or {class_path: NAME, init_args: {...}} mappings",
        ),
    )
    image_every: int = field(default=0, metadata=within(_at_least_zero, ">= 0 (0: no images to the loggers)"))
    progress: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "loggers", tuple(self.loggers))  # frozen: the list a caller gave is not shared


@dataclass(frozen=True)
class EvaluationSettings(SettingsGroup):
    """The test-set evaluation at the end of a run (ELBO, and the importance-weighted NLL when k > 0), and the
    validation during training: the test ELBO of the first val_examples test examples every val_every steps, with the
    posterior noise of the run's seed (the same examples and draws each time), of the EMA weights when an EMA is on.

    Args:
        k: Importance samples of the test IW-NLL at the end (0: the test ELBO only).
        batch_size: Test examples per batch of the final evaluation and of the validation.
        val_every: Measure the validation ELBO every this many steps (0: no validation during training).
        val_examples: Test examples of the validation ELBO (the first ones; all of them when the test set is smaller).
    """

    group: ClassVar[str] = "evaluation"

    k: int = field(default=0, metadata=within(_at_least_zero, ">= 0"))
    batch_size: int = field(default=100, metadata=within(_positive, "positive"))
    val_every: int = field(default=0, metadata=within(_at_least_zero, ">= 0 (0: no validation)"))
    val_examples: int = field(default=500, metadata=within(_positive, "positive"))


@dataclass(frozen=True)
class SpeedSettings(SettingsGroup):
    """Levers that change speed and memory, never the numbers a run computes (up to floating-point rounding).

    Args:
        num_workers: DataLoader worker processes (0: load in the training process).
        channels_last: NHWC tensors (oneDNN's depthwise convolutions are 3-5x faster on CPUs).
        compile_cells: torch.compile each cell.
        gradient_checkpointing: Recompute the cells in the backward pass: less memory, more time.
        adamax_foreach: The multi-tensor Adamax (the same values bit for bit; null: torch's default, which takes it
            on GPUs only).
        depthwise_weight_grad: The depthwise convolutions' weight gradient: native, or one compiled kernel.
        keep_freed_memory: Keep freed memory for reuse instead of returning it to the system (CPU, glibc).
        bn_swish: BatchNorm + Swish: native, fused (one autograd node), recompute (saves only the input),
            input_only (recompute, and the conv it feeds does not keep its input either: the paper's memory mode).
        find_unused_parameters: Let DDP allow parameters that a step does not use (multi-process runs).
    """

    group: ClassVar[str] = "speed"

    num_workers: int = field(default=0, metadata=within(_at_least_zero, ">= 0"))
    channels_last: bool = False
    compile_cells: bool = False
    gradient_checkpointing: bool = False
    adamax_foreach: bool | None = True
    depthwise_weight_grad: Literal["native", "compiled"] = "native"
    keep_freed_memory: bool = True
    bn_swish: Literal["native", "fused", "recompute", "input_only"] = "native"
    find_unused_parameters: bool = False


#: the groups, by their key under ``trainer``
GROUPS: dict[str, type[SettingsGroup]] = {
    cls.group: cls
    for cls in (
        OptimizerSettings,
        ScheduleSettings,
        CheckpointSettings,
        RecoverySettings,
        LoggingSettings,
        EvaluationSettings,
        SpeedSettings,
    )
}

#: the trainer's top-level settings that have a range (the groups check their own)
TOP_LEVEL_RANGES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "max_steps": (_positive, "positive"),
    "max_epochs": (lambda v: v is None or v >= 1, "null or >= 1"),
    "accumulate_grad_batches": (_positive, "positive"),
}

#: where each setting of the flat ``trainer`` section of earlier recipes lives now (a recipe that still uses one is
#: told its new key)
PREVIOUS_KEYS: dict[str, str] = {
    "lr": "optimizer.lr",
    "weight_decay": "optimizer.weight_decay",
    "adamax_eps": "optimizer.eps",
    "betas": "optimizer.betas",
    "grad_clip": "optimizer.grad_clip",
    "ema_decay": "optimizer.ema_decay",
    "param_groups": "optimizer.param_groups",
    "lr_schedule": "schedule.decay",
    "lr_min": "schedule.lr_min",
    "warmup_steps": "schedule.warmup_steps",
    "warmup_epochs": "schedule.warmup_epochs",
    "checkpoint_every": "checkpoints.every",
    "keep_last": "checkpoints.keep_last",
    "max_consecutive_bad_steps": "recovery.max_consecutive_bad_steps",
    "max_rollbacks": "recovery.max_rollbacks",
    "rollback_lr_factor": "recovery.rollback_lr_factor",
    "log_every": "logging.log_every",
    "sample_every": "logging.sample_every",
    "num_samples": "logging.num_samples",
    "sample_temperature": "logging.sample_temperature",
    "tensorboard": "logging.tensorboard",
    "progress": "logging.progress",
    "eval_k": "evaluation.k",
    "eval_batch_size": "evaluation.batch_size",
    "num_workers": "speed.num_workers",
    "channels_last": "speed.channels_last",
    "compile_cells": "speed.compile_cells",
    "gradient_checkpointing": "speed.gradient_checkpointing",
    "adamax_foreach": "speed.adamax_foreach",
    "depthwise_weight_grad": "speed.depthwise_weight_grad",
    "keep_freed_memory": "speed.keep_freed_memory",
    "bn_swish": "speed.bn_swish",
    "find_unused_parameters": "speed.find_unused_parameters",
}


def check_top_level(values: Mapping[str, Any]) -> None:
    """The trainer's own (ungrouped) settings out of their range: one line each."""
    for key, (check, what) in TOP_LEVEL_RANGES.items():
        if key in values:
            check_value(f"trainer.{key}", values[key], check, what)


@dataclass
class TrainerGroups:
    """The groups of one trainer's settings (``trainer.settings.optimizer.lr``)."""

    optimizer: OptimizerSettings
    schedule: ScheduleSettings
    checkpoints: CheckpointSettings
    recovery: RecoverySettings
    logging: LoggingSettings
    evaluation: EvaluationSettings
    speed: SpeedSettings

    @classmethod
    def coerce(cls, **groups: Any) -> TrainerGroups:
        return cls(**{name: GROUPS[name].coerce(value) for name, value in groups.items()})

    def as_dict(self) -> dict[str, dict]:
        return {name: {item.name: getattr(getattr(self, name), item.name) for item in fields(getattr(self, name))}
                for name in GROUPS}  # fmt: skip


def place_in_groups(settings: Mapping[str, Any]) -> dict[str, Any]:
    """Settings named by their field (``lr``, ``keep_last``; the earlier flat names) placed in their groups:
    ``{"lr": 1e-2, "max_steps": 3}`` -> ``{"optimizer": {"lr": 1e-2}, "max_steps": 3}``, what :class:`Trainer` takes
    (for scripts that vary a few levers by name; a group given as a mapping is merged in as it is)."""
    out: dict[str, Any] = {}
    for key, value in settings.items():
        if key in PREVIOUS_KEYS:
            group, name = PREVIOUS_KEYS[key].split(".")
            out.setdefault(group, {})[name] = value
        elif key in GROUPS and isinstance(value, Mapping):
            out.setdefault(key, {}).update(value)
        else:
            out[key] = value
    return out


def merge_settings(*layers: Mapping[str, Any]) -> dict[str, Any]:
    """Trainer settings laid over each other left to right, as recipe overlays compose: a group merges key by key."""
    out: dict[str, Any] = {}
    for layer in layers:
        for key, value in layer.items():
            if key in GROUPS and isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
                out[key] = {**out[key], **value}
            else:
                out[key] = dict(value) if key in GROUPS and isinstance(value, Mapping) else value
    return out
