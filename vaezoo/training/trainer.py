"""The fit loop: the :class:`Trainer`, its optimiser step, the NaN guard with rollback, and checkpoints.

Design points:
- Data order is a function of (seed, epoch) (:mod:`.sampler`), so a resumed run sees exactly the batches an
  uninterrupted run would have seen.
- Every source of randomness (global torch RNG for latent noise, the data-augmentation generator)
  is saved in checkpoints; on CPU a resumed run ends bitwise identical to an uninterrupted one.
- A step whose loss or gradient is not finite is skipped and counted. After too many in a row the
  run rolls back to its last checkpoint with a lower learning rate, and stops with a clear message
  once it has used up its rollbacks: it never skips silently forever.

The pieces with their own reasons to change live beside it: the learning-rate schedule (:mod:`.schedules`), the
speed switches (:mod:`.speed`), metrics, the loggers and the progress bar (:mod:`.reporting`), preview images
(:mod:`.images`), checkpoint files (:mod:`.checkpoint`), multi-process helpers (:mod:`.distributed`) and the EMA
(:mod:`.ema`).
"""

from __future__ import annotations

import json
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Literal

import torch
from rich.progress import Progress
from torch import Tensor
from torch.utils.data import DataLoader, Subset

from ..data.fit import check_data_fits
from ..errors import VaezooError
from ..evaluation import evaluate
from ..evaluation.metrics import active_units
from ..hardware import auto_precision, warn_emulated_bf16
from ..interfaces import DataModule, GenerativeModel, Objective
from ..loggers import TensorBoard
from ..plots import read_metrics
from ..plugins import get_registry
from ..provenance import finished
from . import images
from .checkpoint import (
    atomic_torch_save,
    checkpoint_path,
    list_checkpoints,
    load_checkpoint,
    prune_checkpoints,
    remove_stale_temporaries,
)
from .distributed import (
    DistributedContext,
    ModelView,
    all_gather_tensors,
    barrier,
    broadcast_buffers,
    synchronise_batch_norm,
)
from .ema import ExponentialMovingAverage
from .optimizers import build_optimizer, check_groups_fit, clip_gradients, clip_sets, ema_keys
from .reporting import (
    Loggers,
    open_metrics,
    progress_bar,
    resolve_loggers,
    step_record,
    truncate_metrics,
    validation_summary,
    write_record,
)
from .sampler import EpochBatchSampler
from .schedules import learning_rate
from .settings import (
    CheckpointSettings,
    EvaluationSettings,
    LoggingSettings,
    OptimizerSettings,
    RecoverySettings,
    ScheduleSettings,
    SpeedSettings,
    TrainerGroups,
    check_top_level,
)
from .speed import apply_speed_switches


class TrainingDiverged(VaezooError):
    """Too many consecutive non-finite steps, rollbacks exhausted."""

    exit_code = 1


class CheckpointWriteFailed(VaezooError):
    """The final checkpoint could not be written (the previous ones are intact)."""

    exit_code = 1


class _Rollback(Exception):
    """Internal: restart the loop from the last checkpoint."""


class Trainer:
    """Trains a model with an objective on a data module.

    Adamax (NVAE's optimiser: eps 1e-3, L2 weight decay), linear learning-rate warm-up per step,
    then cosine decay to ``lr_min`` ending exactly at ``max_steps`` (per step, or per epoch as the
    reference implementation does). One *step* is one optimiser update of the global batch,
    ``data.batch_size x processes x accumulate_grad_batches`` examples. ``max_epochs`` and
    ``warmup_epochs``, when set, are converted to steps from the size of the training set.
    """

    def __init__(
        self,
        max_steps: int = 1000,
        max_epochs: int | None = None,
        accumulate_grad_batches: int = 1,
        precision: Literal["fp32", "bf16", "fp16", "auto"] = "fp32",
        device: str = "auto",
        init_from: str | None = None,
        optimizer: OptimizerSettings = OptimizerSettings(),
        schedule: ScheduleSettings = ScheduleSettings(),
        checkpoints: CheckpointSettings = CheckpointSettings(),
        recovery: RecoverySettings = RecoverySettings(),
        logging: LoggingSettings = LoggingSettings(),
        evaluation: EvaluationSettings = EvaluationSettings(),
        speed: SpeedSettings = SpeedSettings(),
    ) -> None:
        """The settings of a run (the recipe's ``trainer`` section; ``vaezoo fit --help`` prints these lines).

        Args:
            max_steps: Optimiser updates (steps of one global batch) to train for; max_epochs replaces it when set.
            max_epochs: Train for this many epochs instead of max_steps (converted to steps from the training set).
            accumulate_grad_batches: Micro-batches per step (global batch: batch_size x processes x this).
            precision: fp32, or bf16 / fp16 autocast (fp16 with a gradient scaler); log-densities stay fp32; auto: bf16
                where the device computes it natively and the model is wide enough to gain (said at start), else fp32.
            device: auto (the first GPU if any, else cpu), cpu, cuda, cuda:1, mps, ...
            init_from: Start from the weights of a saved model (folder, hf-hub:ORG/REPO or pretrained name).
            optimizer: The optimiser (Adamax): learning rate, weight decay, eps, betas, clipping, EMA, param_groups.
            schedule: The learning-rate schedule: warm-up, then a decay to lr_min.
            checkpoints: How often checkpoints are written and how many are kept.
            recovery: Non-finite steps: how many in a row roll back, how many rollbacks, the learning-rate factor.
            logging: metrics.jsonl, the loggers (TensorBoard, ...), preview images and the progress bar.
            evaluation: The test-set evaluation at the end of the run, and the validation during training.
            speed: Speed and memory levers that leave the numbers as they are.

        Each group is a mapping of its settings (``optimizer={"lr": 0.01}``) or its dataclass
        (:mod:`vaezoo.training.settings`); its ranges are checked here, with the line ``vaezoo fit`` prints.
        """
        check_top_level(
            {"max_steps": max_steps, "max_epochs": max_epochs, "accumulate_grad_batches": accumulate_grad_batches}
        )
        self.settings = TrainerGroups.coerce(
            optimizer=optimizer, schedule=schedule, checkpoints=checkpoints, recovery=recovery, logging=logging,
            evaluation=evaluation, speed=speed,
        )  # fmt: skip
        self.max_steps, self.max_epochs = max_steps, max_epochs
        self.accumulate = accumulate_grad_batches
        self.precision = precision
        #: why ``auto`` chose what it chose (set by prepare(); None for an explicit precision)
        self.precision_note: str | None = None
        self.init_from = init_from
        #: the warm-up in steps (prepare() resolves warmup_epochs, as it resolves max_epochs into max_steps)
        self.warmup_steps = self.settings.schedule.warmup_steps
        logging = self.settings.logging
        #: the loggers rank 0 opens (metrics.jsonl is always written), and why TensorBoard is off when its default is
        self.logger_specs, self.logging_note = resolve_loggers(logging.tensorboard, logging.loggers, get_registry)
        #: whether the run writes TensorBoard events
        self.tensorboard = any(spec.cls is TensorBoard for spec in self.logger_specs)
        self.device = torch.device(
            "cuda" if device == "auto" and torch.cuda.is_available() else "cpu" if device == "auto" else device
        )
        self.ctx = DistributedContext()  # set by the caller for multi-process training
        #: the run's provenance record (:mod:`vaezoo.provenance`), written into every checkpoint; set by fit()
        self.provenance: dict | None = None
        self.steps_per_epoch = 1  # set by fit() from the data

    # -- schedules -----------------------------------------------------------------------------
    def lr_at(self, step: int) -> float:
        """The learning rate of ``step`` before any rollback scaling (see :func:`~.schedules.learning_rate`)."""
        return learning_rate(
            step,
            lr=self.settings.optimizer.lr,
            lr_min=self.settings.schedule.lr_min,
            max_steps=self.max_steps,
            warmup_steps=self.warmup_steps,
            schedule=self.settings.schedule.decay,
            steps_per_epoch=self.steps_per_epoch,
        )

    def _autocast(self):
        if self.precision == "fp32":
            return nullcontext()
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    # -- the loop ------------------------------------------------------------------------------
    def check(self, model: GenerativeModel, data: DataModule) -> None:
        """Problems that would only show up once training starts, reported before anything is written."""
        check_data_fits(model, data, "data")
        check_groups_fit(model, self.settings.optimizer.param_groups)
        global_batch = data.batch_size * self.ctx.world_size * self.accumulate
        num_examples = len(data.train_dataset())
        if global_batch > num_examples:
            raise VaezooError(
                f"the global batch ({data.batch_size} x {self.ctx.world_size} processes x {self.accumulate} accumulated) "
                f"is larger than the training set ({num_examples} examples)"
            )

    def resolved_schedule(self, data_batch_size: int, num_examples: int, world_size: int) -> dict[str, Any]:
        """The values the learning-rate schedule and the objective's warm-up are computed from, resolved to steps (the
        paper recipes count epochs; the loop counts steps). Saved in every checkpoint, so that a resume can tell when
        they changed."""
        global_batch = data_batch_size * world_size * self.accumulate
        steps_per_epoch = max(1, num_examples // global_batch)
        schedule, warmup_epochs = self.settings.schedule, self.settings.schedule.warmup_epochs
        return {
            "max_steps": self.max_epochs * steps_per_epoch if self.max_epochs is not None else self.max_steps,
            "warmup_steps": round(warmup_epochs * steps_per_epoch)
            if warmup_epochs is not None
            else schedule.warmup_steps,
            # the keys of the flat settings before they were grouped: checkpoints written then compare equal
            "lr": self.settings.optimizer.lr,
            "lr_min": schedule.lr_min,
            "lr_schedule": schedule.decay,
            "global_batch": global_batch,
            "steps_per_epoch": steps_per_epoch,
        }

    def prepare(
        self, model: GenerativeModel, objective: Objective, data_batch_size: int, num_examples: int, seed: int = 0
    ) -> None:
        """Move to the device, apply the speed switches, wrap for multi-process training and build the
        optimiser: everything :meth:`train_step` needs (the benchmark uses this path too)."""
        ctx, speed, opt = self.ctx, self.settings.speed, self.settings.optimizer
        model.to(self.device)
        objective.to(self.device)
        apply_speed_switches(
            model,
            self.device,
            channels_last=speed.channels_last,
            compile_cells=speed.compile_cells,
            depthwise_weight_grad=speed.depthwise_weight_grad,
            keep_freed_memory=speed.keep_freed_memory,
            gradient_checkpointing=speed.gradient_checkpointing,
            bn_swish=speed.bn_swish,
        )
        self.schedule_values = self.resolved_schedule(data_batch_size, num_examples, ctx.world_size)
        self.global_batch = self.schedule_values["global_batch"]
        self.steps_per_epoch = self.schedule_values["steps_per_epoch"]
        self.max_steps, self.warmup_steps = self.schedule_values["max_steps"], self.schedule_values["warmup_steps"]
        objective.set_total_steps(self.max_steps)
        self.view: Any = model
        if ctx.enabled:
            synchronise_batch_norm(model)  # BN statistics of the global batch, as in NVAE's training
            ddp = torch.nn.parallel.DistributedDataParallel(
                model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=speed.find_unused_parameters,
            )  # fmt: skip
            self.view = ModelView(ddp)
            self._ddp = ddp
        if opt.param_groups:
            defaults = {"lr": opt.lr, "betas": opt.betas, "eps": opt.eps, "weight_decay": opt.weight_decay}
            self.optimizer = build_optimizer(model, opt.param_groups, defaults, foreach=speed.adamax_foreach)
        else:
            self.optimizer = torch.optim.Adamax(
                model.parameters(), lr=opt.lr, betas=opt.betas, eps=opt.eps, weight_decay=opt.weight_decay,
                foreach=speed.adamax_foreach,
            )  # fmt: skip
        if self.precision == "auto":  # resolved once the model and the device are known
            self.precision, why = auto_precision(self.device, model)
            self.precision_note = f"trainer.precision auto: {self.precision} ({why})"
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")
        self.clip_sets = clip_sets(model, opt.param_groups, opt.grad_clip)  # per optimiser group
        self.ema = ExponentialMovingAverage(model, opt.ema_decay) if opt.ema_decay else None
        group_ema = ema_keys(model, opt.param_groups)
        if group_ema is not None:
            warmup = any(g.get("ema_warmup") for g in opt.param_groups if g.get("ema_decay") is not None)
            self.ema = ExponentialMovingAverage(model, group_ema[0], keys=group_ema[1], warmup=warmup)
        self.data_generator = torch.Generator().manual_seed(seed + 1 + 7919 * ctx.rank)
        self.state = {"step": 0, "skipped_steps": 0, "rollbacks": 0, "lr_scale": 1.0}
        self.model, self.objective, self.seed = model, objective, seed

    def train_step(self, micro_batches: list[Tensor], step: int) -> tuple[Tensor, Tensor, dict, bool]:
        """One optimiser update from ``accumulate_grad_batches`` micro-batches already on the device.

        Returns ``(loss, grad_norm, metrics, applied)``; a non-finite loss or gradient is not applied.
        """
        model, optimizer, scaler, ctx = self.model, self.optimizer, self.scaler, self.ctx
        lr = self.lr_at(step) * self.state["lr_scale"]
        for group in optimizer.param_groups:
            group["lr"] = lr * group.get("lr_ratio", 1.0)
        optimizer.zero_grad(set_to_none=True)
        loss_sum = 0.0
        for micro, x in enumerate(micro_batches):
            if self.settings.speed.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            # gradients are all-reduced once, on the last micro-batch of the step
            sync = self._ddp.no_sync() if ctx.enabled and micro < len(micro_batches) - 1 else nullcontext()
            with sync:
                with self._autocast():
                    loss, metrics = self.objective(self.view, x, step)
                scaler.scale(loss / len(micro_batches)).backward()
            loss_sum = loss_sum + loss.detach()
        loss = loss_sum / len(micro_batches)
        scaler.unscale_(optimizer)
        grad_norm = clip_gradients(self.clip_sets)
        if ctx.enabled:  # every rank takes the same decision, on the mean loss
            loss = loss.detach().clone()
            torch.distributed.all_reduce(loss)
            loss = loss / ctx.world_size
            broadcast_buffers(self.objective, ctx)  # one objective state on every rank, the one checkpoints keep
        applied = bool(torch.isfinite(loss + grad_norm))  # the one host sync of a step
        if applied:
            scaler.step(optimizer)
            if self.ema is not None:
                self.ema.update(model, step)
        scaler.update()
        metrics["lr"] = lr
        return loss, grad_norm, metrics, applied

    def fit(
        self,
        model: GenerativeModel,
        objective: Objective,
        data: DataModule,
        run_dir: str | Path,
        seed: int = 0,
        resume: bool = False,
        console: Any = None,
        provenance: dict | None = None,
    ) -> dict:
        run_dir = Path(run_dir)
        self.provenance = provenance
        ctx = self.ctx
        self.ckpt_dir = run_dir / "checkpoints"
        if ctx.is_main:
            run_dir.mkdir(parents=True, exist_ok=True)
            remove_stale_temporaries(self.ckpt_dir)  # left by a crash during a checkpoint write
        self.check(model, data)
        if self.init_from and not resume:  # a resumed run's checkpoint holds every weight already
            init_from_saved(model, self.init_from)
        train_set = data.train_dataset()
        self.prepare(model, objective, data_batch_size=data.batch_size, num_examples=len(train_set), seed=seed)
        if ctx.is_main:  # emulated bf16 is several times slower than fp32: say so before the first step
            if self.precision_note is not None and console is not None:
                console.print(self.precision_note, soft_wrap=True, highlight=False)
            warn_emulated_bf16(self.precision, self.device, console)

        if resume:
            found = list_checkpoints(self.ckpt_dir)
            if not found:
                raise VaezooError(f"--resume: no checkpoint in {self.ckpt_dir}")
            self._restore(found[-1][1])
            if ctx.is_main:  # the steps after the checkpoint are replayed: keep each step's record once
                truncate_metrics(run_dir / "metrics.jsonl", self.state["step"])
        else:
            torch.manual_seed(seed + 7919 * ctx.rank)  # each rank draws its own latent noise

        progress = progress_bar(self.settings.logging.progress and ctx.is_main, console)
        metrics_file = open_metrics(run_dir / "metrics.jsonl", ctx.is_main)
        loggers = Loggers.open(self.logger_specs if ctx.is_main else [], run_dir, console)
        if resume:  # the steps after the checkpoint are replayed: loggers that can forget them do
            loggers.rewind(self.state["step"])
        self._metrics_file, self._console, self._loggers = metrics_file, console, loggers
        try:
            with progress as bar, metrics_file:
                # no loss, KL or speed to show before the first logged step: the bar shows "…" for them
                task = bar.add_task(
                    "fit", total=self.max_steps, completed=self.state["step"], loss=None, kl=None, rate=None
                )
                while self.state["step"] < self.max_steps:
                    try:
                        self._run(data, train_set, seed, run_dir, metrics_file, loggers, bar, task)
                    except _Rollback:
                        continue
                if not list_checkpoints(self.ckpt_dir) or list_checkpoints(self.ckpt_dir)[-1][0] != self.state["step"]:
                    self._save(final=True)
        finally:
            loggers.close()
        self._release_data_parallel()
        summary = {
            "step": self.state["step"],
            "skipped_steps": self.state["skipped_steps"],
            "rollbacks": self.state["rollbacks"],
        }
        if ctx.is_main and self.settings.evaluation.val_every:
            # from the records, which hold the steps of earlier invocations of a resumed run too
            validation = validation_summary(read_metrics(run_dir / "metrics.jsonl"))
            if validation is not None:
                summary["validation"] = {**validation, "seed": seed, "weights": "ema" if self.ema else "model"}
        if self.ema is not None:
            self.ema.copy_to(model)  # evaluate and publish the averaged weights
        if ctx.is_main:
            self.save_samples(model, run_dir / "samples.png", seed)
            self.save_reconstructions(model, data, run_dir / "reconstructions.png")
        return summary

    def _release_data_parallel(self) -> None:
        """Drop the DDP wrapper once training is over: it holds the process group, which the caller may now leave
        (what follows, sampling and evaluation, runs on this process alone)."""
        if getattr(self, "_ddp", None) is not None:
            self.view, self._ddp = self.model, None

    def _run(self, data, train_set, seed, run_dir, metrics_file, loggers, bar, task) -> None:
        model, ctx, logging = self.model, self.ctx, self.settings.logging
        state = self.state
        sampler = EpochBatchSampler(
            len(train_set),
            data.batch_size,
            seed,
            state["step"] * self.accumulate,
            self.max_steps * self.accumulate,
            ctx.rank,
            ctx.world_size,
        )
        # the loader draws worker seeds from its own generator, never from the global RNG stream
        loader = DataLoader(
            train_set,
            batch_sampler=sampler,
            num_workers=self.settings.speed.num_workers,
            generator=torch.Generator().manual_seed(seed + 2),
        )
        batches = iter(loader)
        consecutive_bad = 0
        window_start, window_images = time.perf_counter(), 0
        model.train()
        while state["step"] < self.max_steps:
            step = state["step"]
            micro_batches = []
            for _ in range(self.accumulate):
                x, *_ = next(batches)
                micro_batches.append(data.train_transform(x, self.data_generator).to(self.device, non_blocking=True))
                window_images += x.shape[0]
            loss, grad_norm, metrics, applied = self.train_step(micro_batches, step)
            lr = metrics.pop("lr")
            if applied:
                consecutive_bad = 0
            else:
                state["skipped_steps"] += 1
                consecutive_bad += 1
                if consecutive_bad >= self.settings.recovery.max_consecutive_bad_steps:
                    self._rollback_or_stop(step, consecutive_bad, metrics_file)
            state["step"] = step + 1

            if ctx.is_main and (state["step"] % logging.log_every == 0 or state["step"] == self.max_steps):
                elapsed = time.perf_counter() - window_start
                record = step_record(
                    metrics, loss, grad_norm, lr, state, ctx.world_size * window_images / max(elapsed, 1e-9)
                )
                record["global_batch"] = self.global_batch
                write_record(metrics_file, record)
                loggers.record(record)
                steps_per_s = (window_images / max(elapsed, 1e-9)) / (x.shape[0] * self.accumulate)
                bar.update(task, loss=record["loss"], kl=record.get("kl"), rate=steps_per_s)
                window_start, window_images = time.perf_counter(), 0
            bar.update(task, completed=state["step"])
            if ctx.is_main and logging.sample_every and state["step"] % logging.sample_every == 0:
                self.save_samples(model, run_dir / f"samples_step_{state['step']:08d}.png", seed)
                self.save_reconstructions(model, data, run_dir / f"reconstructions_step_{state['step']:08d}.png")
            if loggers and logging.image_every and state["step"] % logging.image_every == 0:
                grid = images.sample_grid(model, seed, logging.num_samples, logging.sample_temperature)
                loggers.images(state["step"], "samples", grid)
                loggers.images(state["step"], "reconstructions", images.reconstruction_grid(model, data, self.device))
            val_every = self.settings.evaluation.val_every
            if ctx.is_main and val_every and state["step"] % val_every == 0:
                record = self.validate(model, data, state["step"])
                write_record(metrics_file, record)
                loggers.record(record)
            # a checkpoint is a rollback target: never take one in the middle of a run of bad steps
            every = self.settings.checkpoints.every
            if every and state["step"] % every == 0 and consecutive_bad == 0:
                if ctx.is_main:
                    units = active_units(model, data.test_dataset())
                    if units is not None:
                        record = {"step": state["step"], "active_units": units}
                        write_record(metrics_file, record)
                        loggers.record(record)
                self._save()

    def validate(self, model: GenerativeModel, data: DataModule, step: int) -> dict:
        """The validation record of ``step``: the test ELBO of the first ``trainer.evaluation.val_examples`` test
        examples, with the posterior noise of the run's seed (:func:`~vaezoo.evaluation.evaluate` draws it from its
        own generators, so every validation sees the same draws and the training's random stream is untouched), of the
        EMA weights when an EMA is on (those the run saves and evaluates at its end). The model is left as it was:
        its weights, and its train mode."""
        evaluation = self.settings.evaluation
        test_set = data.test_dataset()
        subset = Subset(test_set, range(min(evaluation.val_examples, len(test_set))))
        quiet = Progress(disable=True)  # under the fit's own bar: no second live display
        with self.ema.swapped_in(model) if self.ema is not None else nullcontext():
            result = evaluate(model, subset, k=0, batch_size=evaluation.batch_size, seed=self.seed, progress=quiet)
        return {
            "step": step,
            "val_elbo_nats": result.elbo_nats,
            "val_nelbo_bpd": result.nelbo_bpd,
            "val_unit": result.unit,
            "val_examples": result.num_examples,
        }

    def _rollback_or_stop(self, step: int, consecutive_bad: int, metrics_file) -> None:
        found, recovery = list_checkpoints(self.ckpt_dir), self.settings.recovery
        if self.state["rollbacks"] >= recovery.max_rollbacks or not found:
            raise TrainingDiverged(
                f"training diverged: {consecutive_bad} consecutive steps with a non-finite loss or gradient at step "
                f"{step} after {self.state['rollbacks']} rollbacks; lower trainer.optimizer.lr or set trainer.optimizer.grad_clip"
            )
        skipped, rollbacks, lr_scale = self.state["skipped_steps"], self.state["rollbacks"] + 1, self.state["lr_scale"]
        self._restore(found[-1][1])
        self.state.update(skipped_steps=skipped, rollbacks=rollbacks, lr_scale=lr_scale * recovery.rollback_lr_factor)
        metrics_file.drop_after(self.state["step"])  # the steps about to be replayed are recorded once, when replayed
        self._loggers.rewind(self.state["step"])
        event = {"step": step, "event": "rollback", "to_step": self.state["step"], "lr_scale": self.state["lr_scale"]}
        write_record(metrics_file, event)
        raise _Rollback()

    # -- checkpoints ---------------------------------------------------------------------------
    def _save(self, final: bool = False) -> None:
        """Rank 0 writes; every rank contributes its RNG states (a collective call on all ranks)."""
        torch_states = all_gather_tensors(torch.get_rng_state(), self.ctx)
        data_states = all_gather_tensors(self.data_generator.get_state(), self.ctx)
        if not self.ctx.is_main:
            barrier(self.ctx)
            return
        payload = {
            "model": self.model.state_dict(),
            "objective": self.objective.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else {},
            "rng": {"torch": torch_states, "data": data_states, "world_size": self.ctx.world_size},
            "step": self.state["step"],
            "skipped_steps": self.state["skipped_steps"],
            "rollbacks": self.state["rollbacks"],
            "lr_scale": self.state["lr_scale"],
            "model_config": json.dumps(self.model.config) if self.model.config else "",
            "schedule": dict(self.schedule_values),
            # what wrote this checkpoint, when ("ended": the moment it was written)
            "provenance": finished(self.provenance) if self.provenance is not None else None,
        }
        path = checkpoint_path(self.ckpt_dir, self.state["step"])
        try:
            atomic_torch_save(payload, path)
        except OSError as exc:  # e.g. a full disk: the previous checkpoints are untouched
            barrier(self.ctx)
            previous = list_checkpoints(self.ckpt_dir)
            kept = f"step {previous[-1][0]}" if previous else "none"
            message = f"could not write checkpoint {path.name}: {exc.strerror or exc}; last complete checkpoint: {kept}"
            event = {"step": self.state["step"], "event": "checkpoint_failed", "error": message}
            write_record(self._metrics_file, event)
            if self._console is not None:
                self._console.print(f"[yellow]warning[/]: {message}")
            if final:
                raise CheckpointWriteFailed(message) from exc
            return
        prune_checkpoints(self.ckpt_dir, self.settings.checkpoints.keep_last)
        barrier(self.ctx)

    def _restore(self, path: Path) -> None:
        ckpt = load_checkpoint(path)
        self.model.load_state_dict(ckpt["model"])
        self.objective.load_state_dict(ckpt["objective"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scaler.load_state_dict(ckpt["scaler"])
        if self.ema is not None and ckpt.get("ema"):
            self.ema.load_state_dict(ckpt["ema"])
        rng, rank = ckpt["rng"], self.ctx.rank
        if len(rng["torch"]) == self.ctx.world_size:
            torch.set_rng_state(rng["torch"][rank])
            self.data_generator.set_state(rng["data"][rank])
        else:  # resumed with another number of processes: fresh, distinct streams per rank
            torch.manual_seed(self.seed + 7919 * rank + 104729 * int(ckpt["step"]))
            self.data_generator.manual_seed(self.seed + 1 + 7919 * rank + 104729 * int(ckpt["step"]))
        self.state.update(
            step=int(ckpt["step"]),
            skipped_steps=int(ckpt["skipped_steps"]),
            rollbacks=int(ckpt.get("rollbacks", 0)),
            lr_scale=float(ckpt.get("lr_scale", 1.0)),
        )

    # -- images --------------------------------------------------------------------------------
    def save_samples(self, model: GenerativeModel, path: Path, seed: int) -> None:
        logging = self.settings.logging
        images.save_samples(model, path, seed, logging.num_samples, logging.sample_temperature)

    def save_reconstructions(self, model: GenerativeModel, data: DataModule, path: Path, n: int = 8) -> None:
        """Test images (odd rows) above their reconstructions (even rows)."""
        images.save_reconstructions(model, data, path, self.device, n)

    def test(self, model: GenerativeModel, data: DataModule, seed: int = 0):
        evaluation = self.settings.evaluation
        return evaluate(model, data.test_dataset(), k=evaluation.k, batch_size=evaluation.batch_size, seed=seed)


def init_from_saved(model: GenerativeModel, source: str) -> list[str]:
    """Copy the weights of a saved model (folder, Hub repo or pretrained name) into ``model``; the model's
    parameters the saved one lacks (a part added on top, e.g. a joint prior) keep their initialisation. Returns
    their names; any saved weight the model has no place for, or of another shape, is an error."""
    from ..hub import from_pretrained

    saved = from_pretrained(source).state_dict()
    own = model.state_dict()
    unexpected = sorted(set(saved) - set(own))
    mismatched = sorted(k for k in saved if k in own and saved[k].shape != own[k].shape)
    if unexpected or mismatched:
        detail = f"unexpected {unexpected[:4]}" if unexpected else f"other shapes {mismatched[:4]}"
        raise VaezooError(f"trainer.init_from {source}: its weights do not fit the model ({detail})")
    missing = model.load_state_dict(saved, strict=False).missing_keys
    return list(missing)
