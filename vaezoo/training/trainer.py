"""The fit loop.

Design points:
- Data order is a function of (seed, epoch): each epoch draws its permutation from a generator
  seeded by both, so a resumed run sees exactly the batches an uninterrupted run would have seen.
- Every source of randomness (global torch RNG for latent noise, the data-augmentation generator)
  is saved in checkpoints; on CPU a resumed run ends bitwise identical to an uninterrupted one.
- A step whose loss or gradient is not finite is skipped and counted. After too many in a row the
  run rolls back to its last checkpoint with a lower learning rate, and stops with a clear message
  once it has used up its rollbacks: it never skips silently forever.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor
from torch.utils.data import DataLoader

from ..errors import VaezooError
from ..evaluation import evaluate
from ..evaluation.metrics import active_units
from ..interfaces import DataModule, GenerativeModel, Objective
from .checkpoint import (
    atomic_torch_save,
    checkpoint_path,
    list_checkpoints,
    load_checkpoint,
    prune_checkpoints,
    remove_stale_temporaries,
)
from .distributed import DistributedContext, ModelView, all_gather_tensors, barrier, synchronise_batch_norm
from .ema import ExponentialMovingAverage
from .memory import keep_freed_memory


class TrainingDiverged(VaezooError):
    """Too many consecutive non-finite steps, rollbacks exhausted."""

    exit_code = 1


class CheckpointWriteFailed(VaezooError):
    """The final checkpoint could not be written (the previous ones are intact)."""

    exit_code = 1


class _Rollback(Exception):
    """Internal: restart the loop from the last checkpoint."""


class _EpochBatchSampler:
    """Batches of a seeded per-epoch permutation (drop_last), from a given micro-batch index on.

    With several ranks, micro-batch i is the global batch ``perm[i*G:(i+1)*G]`` (G = batch size x
    world size) and rank r takes its r-th slice, so the global batches are those of a single process
    with batch size G (this replaces DistributedSampler, whose shards would not line up that way).
    """

    def __init__(
        self, num_examples: int, batch_size: int, seed: int, start: int, stop: int, rank: int = 0, world_size: int = 1
    ) -> None:
        self.n, self.batch_size, self.seed, self.start, self.stop = num_examples, batch_size, seed, start, stop
        self.rank, self.world_size = rank, world_size
        global_batch = batch_size * world_size
        self.batches_per_epoch = num_examples // global_batch
        if self.batches_per_epoch == 0:
            raise VaezooError(
                f"the global batch (data.batch_size {batch_size} x {world_size} processes) is larger than the training set ({num_examples} examples)"
            )

    def permutation(self, epoch: int) -> Tensor:
        return torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed * 1_000_003 + epoch))

    def __iter__(self) -> Iterator[list[int]]:
        index = self.start
        while index < self.stop:
            epoch, offset = divmod(index, self.batches_per_epoch)
            perm = self.permutation(epoch)
            for i in range(offset, self.batches_per_epoch):
                if index >= self.stop:
                    return
                first = (i * self.world_size + self.rank) * self.batch_size
                yield perm[first : first + self.batch_size].tolist()
                index += 1

    def __len__(self) -> int:
        return max(0, self.stop - self.start)


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
        warmup_epochs: float | None = None,
        lr: float = 1e-2,
        lr_min: float = 1e-4,
        warmup_steps: int = 0,
        lr_schedule: Literal["cosine_step", "cosine_epoch", "constant"] = "cosine_step",
        weight_decay: float = 3e-4,
        adamax_eps: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        grad_clip: float | None = None,
        accumulate_grad_batches: int = 1,
        ema_decay: float | None = None,
        precision: Literal["fp32", "bf16", "fp16"] = "fp32",
        checkpoint_every: int = 500,
        keep_last: int = 2,
        log_every: int = 10,
        sample_every: int = 0,
        num_samples: int = 64,
        sample_temperature: float = 1.0,
        eval_k: int = 0,
        eval_batch_size: int = 100,
        max_consecutive_bad_steps: int = 20,
        max_rollbacks: int = 3,
        rollback_lr_factor: float = 0.5,
        num_workers: int = 0,
        tensorboard: bool = True,
        progress: bool = True,
        device: str = "auto",
        find_unused_parameters: bool = False,
        channels_last: bool = False,
        compile_cells: bool = False,
        gradient_checkpointing: bool = False,
        adamax_foreach: bool | None = None,
        depthwise_weight_grad: Literal["native", "compiled"] = "native",
        keep_freed_memory: bool = True,
    ) -> None:
        if max_steps < 1:
            raise VaezooError(f"trainer.max_steps must be positive, got {max_steps}")
        if accumulate_grad_batches < 1:
            raise VaezooError(f"trainer.accumulate_grad_batches must be positive, got {accumulate_grad_batches}")
        if ema_decay is not None and not 0.0 < ema_decay < 1.0:
            raise VaezooError(f"trainer.ema_decay must be in (0, 1), got {ema_decay}")
        self.max_steps = max_steps
        self.max_epochs, self.warmup_epochs = max_epochs, warmup_epochs
        self.lr, self.lr_min, self.warmup_steps, self.lr_schedule = lr, lr_min, warmup_steps, lr_schedule
        self.weight_decay, self.adamax_eps, self.betas = weight_decay, adamax_eps, tuple(betas)
        self.grad_clip = grad_clip
        self.accumulate = accumulate_grad_batches
        self.ema_decay = ema_decay
        self.precision = precision
        self.checkpoint_every, self.keep_last = checkpoint_every, keep_last
        self.log_every, self.sample_every = log_every, sample_every
        self.num_samples, self.sample_temperature = num_samples, sample_temperature
        self.eval_k, self.eval_batch_size = eval_k, eval_batch_size
        self.max_consecutive_bad_steps = max_consecutive_bad_steps
        self.max_rollbacks, self.rollback_lr_factor = max_rollbacks, rollback_lr_factor
        self.num_workers = num_workers
        self.tensorboard = tensorboard
        self.progress = progress
        self.device = torch.device(
            "cuda" if device == "auto" and torch.cuda.is_available() else "cpu" if device == "auto" else device
        )
        self.find_unused_parameters = find_unused_parameters
        self.channels_last, self.compile_cells = channels_last, compile_cells
        self.gradient_checkpointing, self.adamax_foreach = gradient_checkpointing, adamax_foreach
        self.depthwise_weight_grad, self.keep_freed_memory = depthwise_weight_grad, keep_freed_memory
        self.ctx = DistributedContext()  # set by the caller for multi-process training
        self.steps_per_epoch = 1  # set by fit() from the data

    # -- schedules -----------------------------------------------------------------------------
    def lr_at(self, step: int) -> float:
        """Linear warm-up from 0, then cosine decay to ``lr_min`` reached at the last step
        (never past it: a cosine that runs on would turn the learning rate back up)."""
        if self.warmup_steps and step < self.warmup_steps:
            return self.lr * step / self.warmup_steps
        if self.lr_schedule == "constant":
            return self.lr
        if self.lr_schedule == "cosine_epoch":
            first, last = (
                self.warmup_steps // self.steps_per_epoch,
                max(1, (self.max_steps - 1) // self.steps_per_epoch),
            )
            span, position = max(1, last - first), step // self.steps_per_epoch - first
        else:
            span, position = max(1, self.max_steps - 1 - self.warmup_steps), step - self.warmup_steps
        progress = min(1.0, max(0.0, position / span))
        return self.lr_min + 0.5 * (self.lr - self.lr_min) * (1 + math.cos(math.pi * progress))

    def _autocast(self):
        if self.precision == "fp32":
            return nullcontext()
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    # -- the loop ------------------------------------------------------------------------------
    def check(self, model: GenerativeModel, data: DataModule) -> None:
        """Problems that would only show up once training starts, reported before anything is written."""
        if tuple(data.image_shape) != tuple(model.image_shape):
            raise VaezooError(
                f"model.image_shape {list(model.image_shape)} does not fit the data {list(data.image_shape)} of {type(data).__name__}"
            )
        global_batch = data.batch_size * self.ctx.world_size * self.accumulate
        num_examples = len(data.train_dataset())
        if global_batch > num_examples:
            raise VaezooError(
                f"the global batch ({data.batch_size} x {self.ctx.world_size} processes x {self.accumulate} accumulated) "
                f"is larger than the training set ({num_examples} examples)"
            )

    def prepare(
        self, model: GenerativeModel, objective: Objective, data_batch_size: int, num_examples: int, seed: int = 0
    ) -> None:
        """Move to the device, apply the speed switches, wrap for multi-process training and build the
        optimiser: everything :meth:`train_step` needs (the benchmark uses this path too)."""
        ctx = self.ctx
        model.to(self.device)
        objective.to(self.device)
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        if self.compile_cells:
            from ..interfaces import Cell

            for module in model.modules():
                if isinstance(module, Cell):
                    module.compile(dynamic=False)
        if self.depthwise_weight_grad != "native":
            layers = [m for m in model.modules() if hasattr(m, "depthwise_weight_grad")]
            if not layers:
                raise VaezooError(
                    f"trainer.depthwise_weight_grad: {type(model).__name__} has no layer that supports it"
                )
            for layer in layers:
                layer.depthwise_weight_grad = self.depthwise_weight_grad
        if self.keep_freed_memory and self.device.type == "cpu":
            keep_freed_memory()
        if self.gradient_checkpointing:
            if not hasattr(model, "gradient_checkpointing"):
                raise VaezooError(f"trainer.gradient_checkpointing: {type(model).__name__} does not support it")
            model.gradient_checkpointing = True
        self.global_batch = data_batch_size * ctx.world_size * self.accumulate
        self.steps_per_epoch = max(1, num_examples // self.global_batch)
        if self.max_epochs is not None:  # the paper recipes count epochs; the loop counts steps
            self.max_steps = self.max_epochs * self.steps_per_epoch
        if self.warmup_epochs is not None:
            self.warmup_steps = round(self.warmup_epochs * self.steps_per_epoch)
        objective.set_total_steps(self.max_steps)
        self.view: Any = model
        if ctx.enabled:
            synchronise_batch_norm(model)  # BN statistics of the global batch, as in NVAE's training
            ddp = torch.nn.parallel.DistributedDataParallel(
                model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=self.find_unused_parameters,
            )  # fmt: skip
            self.view = ModelView(ddp)
            self._ddp = ddp
        self.optimizer = torch.optim.Adamax(
            model.parameters(), lr=self.lr, betas=self.betas, eps=self.adamax_eps, weight_decay=self.weight_decay,
            foreach=self.adamax_foreach,
        )  # fmt: skip
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")
        self.ema = ExponentialMovingAverage(model, self.ema_decay) if self.ema_decay else None
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
            group["lr"] = lr
        optimizer.zero_grad(set_to_none=True)
        loss_sum = 0.0
        for micro, x in enumerate(micro_batches):
            if self.channels_last:
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
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), self.grad_clip or float("inf"))
        if ctx.enabled:  # every rank takes the same decision, on the mean loss
            loss = loss.detach().clone()
            torch.distributed.all_reduce(loss)
            loss = loss / ctx.world_size
        applied = bool(torch.isfinite(loss + grad_norm))  # the one host sync of a step
        if applied:
            scaler.step(optimizer)
            if self.ema is not None:
                self.ema.update(model)
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
        recipe: dict | None = None,
        console: Any = None,
    ) -> dict:
        run_dir = Path(run_dir)
        ctx = self.ctx
        self.ckpt_dir = run_dir / "checkpoints"
        if ctx.is_main:
            run_dir.mkdir(parents=True, exist_ok=True)
            remove_stale_temporaries(self.ckpt_dir)  # left by a crash during a checkpoint write
        self.check(model, data)
        train_set = data.train_dataset()
        self.prepare(model, objective, data_batch_size=data.batch_size, num_examples=len(train_set), seed=seed)

        if resume:
            found = list_checkpoints(self.ckpt_dir)
            if not found:
                raise VaezooError(f"--resume: no checkpoint in {self.ckpt_dir}")
            self._restore(found[-1][1])
        else:
            torch.manual_seed(seed + 7919 * ctx.rank)  # each rank draws its own latent noise

        writer = _tensorboard_writer(run_dir / "tensorboard") if self.tensorboard and ctx.is_main else None
        progress = _progress(self.progress and ctx.is_main, console)
        metrics_file = (run_dir / "metrics.jsonl").open("a") if ctx.is_main else _NullFile()
        self._metrics_file, self._console = metrics_file, console
        with progress as bar, metrics_file:
            task = bar.add_task(
                "fit", total=self.max_steps, completed=self.state["step"], loss=float("nan"), kl=float("nan"), rate=0.0
            )
            while self.state["step"] < self.max_steps:
                try:
                    self._run(data, train_set, seed, run_dir, metrics_file, writer, bar, task)
                except _Rollback:
                    continue
            if not list_checkpoints(self.ckpt_dir) or list_checkpoints(self.ckpt_dir)[-1][0] != self.state["step"]:
                self._save(final=True)
        if writer is not None:
            writer.close()
        if self.ema is not None:
            self.ema.copy_to(model)  # evaluate and publish the averaged weights
        if ctx.is_main:
            self.save_samples(model, run_dir / "samples.png", seed)
            self.save_reconstructions(model, data, run_dir / "reconstructions.png")
        return {
            "step": self.state["step"],
            "skipped_steps": self.state["skipped_steps"],
            "rollbacks": self.state["rollbacks"],
        }

    def _run(self, data, train_set, seed, run_dir, metrics_file, writer, bar, task) -> None:
        model, ctx = self.model, self.ctx
        state = self.state
        sampler = _EpochBatchSampler(
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
            num_workers=self.num_workers,
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
                if consecutive_bad >= self.max_consecutive_bad_steps:
                    self._rollback_or_stop(step, consecutive_bad, metrics_file)
            state["step"] = step + 1

            if ctx.is_main and (state["step"] % self.log_every == 0 or state["step"] == self.max_steps):
                elapsed = time.perf_counter() - window_start
                record = _record(
                    metrics, loss, grad_norm, lr, state, ctx.world_size * window_images / max(elapsed, 1e-9)
                )
                record["global_batch"] = self.global_batch
                metrics_file.write(json.dumps(record) + "\n")
                metrics_file.flush()
                if writer is not None:
                    for key, value in record.items():
                        if isinstance(value, (int, float)) and key != "step":
                            writer.add_scalar(key, value, state["step"])
                steps_per_s = (window_images / max(elapsed, 1e-9)) / (x.shape[0] * self.accumulate)
                bar.update(task, loss=record["loss"], kl=record.get("kl", float("nan")), rate=steps_per_s)
                window_start, window_images = time.perf_counter(), 0
            bar.update(task, completed=state["step"])
            if ctx.is_main and self.sample_every and state["step"] % self.sample_every == 0:
                self.save_samples(model, run_dir / f"samples_step_{state['step']:08d}.png", seed)
                self.save_reconstructions(model, data, run_dir / f"reconstructions_step_{state['step']:08d}.png")
            # a checkpoint is a rollback target: never take one in the middle of a run of bad steps
            if self.checkpoint_every and state["step"] % self.checkpoint_every == 0 and consecutive_bad == 0:
                if ctx.is_main:
                    units = active_units(model, data.test_dataset())
                    if units is not None:
                        metrics_file.write(json.dumps({"step": state["step"], "active_units": units}) + "\n")
                self._save()

    def _rollback_or_stop(self, step: int, consecutive_bad: int, metrics_file) -> None:
        found = list_checkpoints(self.ckpt_dir)
        if self.state["rollbacks"] >= self.max_rollbacks or not found:
            raise TrainingDiverged(
                f"training diverged: {consecutive_bad} consecutive steps with a non-finite loss or gradient at step "
                f"{step} after {self.state['rollbacks']} rollbacks; lower trainer.lr or set trainer.grad_clip"
            )
        skipped, rollbacks, lr_scale = self.state["skipped_steps"], self.state["rollbacks"] + 1, self.state["lr_scale"]
        self._restore(found[-1][1])
        self.state.update(skipped_steps=skipped, rollbacks=rollbacks, lr_scale=lr_scale * self.rollback_lr_factor)
        event = {"step": step, "event": "rollback", "to_step": self.state["step"], "lr_scale": self.state["lr_scale"]}
        metrics_file.write(json.dumps(event) + "\n")
        metrics_file.flush()
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
            self._metrics_file.write(json.dumps(event) + "\n")
            self._metrics_file.flush()
            if self._console is not None:
                self._console.print(f"[yellow]warning[/]: {message}")
            if final:
                raise CheckpointWriteFailed(message) from exc
            return
        prune_checkpoints(self.ckpt_dir, self.keep_last)
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
    @torch.no_grad()
    def save_samples(self, model: GenerativeModel, path: Path, seed: int) -> None:
        was_training = model.training
        model.eval()
        with torch.random.fork_rng(devices=[]):  # sampling must not perturb the training RNG stream
            torch.manual_seed(seed)
            images = model.sample(self.num_samples, temperature=self.sample_temperature)
        model.train(was_training)
        _save_grid(images, path, nrow=max(1, int(math.sqrt(self.num_samples))))

    @torch.no_grad()
    def save_reconstructions(self, model: GenerativeModel, data: DataModule, path: Path, n: int = 8) -> None:
        """Test images (odd rows) above their reconstructions (even rows)."""
        test_set = data.test_dataset()
        x = torch.stack([test_set[i][0] for i in range(min(n, len(test_set)))]).to(self.device)
        was_training = model.training
        model.eval()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            recon = model.reconstruct(x)
        model.train(was_training)
        _save_grid(torch.cat([x, recon.to(x.dtype)]), path, nrow=x.shape[0])

    def test(self, model: GenerativeModel, data: DataModule, seed: int = 0):
        return evaluate(model, data.test_dataset(), k=self.eval_k, batch_size=self.eval_batch_size, seed=seed)


class _NullFile:
    """Stands in for metrics.jsonl on ranks other than 0."""

    def write(self, text: str) -> None:
        pass

    def flush(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        pass


def _save_grid(images: Tensor, path: Path, nrow: int) -> None:
    from torchvision.utils import save_image

    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    save_image(images.float().cpu(), tmp, nrow=nrow)
    tmp.replace(path)


def _record(metrics: dict, loss: Tensor, grad_norm: Tensor, lr: float, state: dict, images_per_s: float) -> dict:
    record: dict[str, Any] = {"step": state["step"], "loss": float(loss)}
    for key, value in metrics.items():
        if isinstance(value, Tensor):
            value = value.detach().float().cpu()
            record[key] = value.tolist() if value.ndim else float(value)
        else:
            record[key] = value
    record.update(
        grad_norm=float(grad_norm),
        lr=lr,
        skipped_steps=state["skipped_steps"],
        rollbacks=state["rollbacks"],
        images_per_s=images_per_s,
    )
    return record


def _tensorboard_writer(directory: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional
        return None
    return SummaryWriter(str(directory))


def _progress(enabled: bool, console: Any):
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = [
        TextColumn("[bold]fit"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.2f}"),
        TextColumn("kl {task.fields[kl]:.2f}"),
        TextColumn("{task.fields[rate]:.1f} steps/s"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    ]
    return Progress(*columns, console=console, disable=not enabled, transient=False)
