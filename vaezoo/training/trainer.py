"""The fit loop.

Design points:
- Data order is a function of (seed, epoch): each epoch draws its permutation from a generator
  seeded by both, so a resumed run sees exactly the batches an uninterrupted run would have seen.
- Every source of randomness (global torch RNG for latent noise, the data-augmentation generator)
  is saved in checkpoints; on CPU a resumed run ends bitwise identical to an uninterrupted one.
- A step whose loss or gradient is not finite is skipped and counted; too many in a row stops the
  run with a clear message instead of silently skipping forever.
"""

from __future__ import annotations

import json
import math
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Iterator, Literal

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from ..errors import VaezooError
from ..evaluation import evaluate
from ..interfaces import DataModule, GenerativeModel, Objective
from .checkpoint import atomic_torch_save, checkpoint_path, list_checkpoints, load_checkpoint, prune_checkpoints


class TrainingDiverged(VaezooError):
    """Too many consecutive non-finite steps."""

    exit_code = 1


class _EpochBatchSampler:
    """Batches of a seeded per-epoch permutation (drop_last), starting at a given global step."""

    def __init__(self, num_examples: int, batch_size: int, seed: int, start_step: int, max_steps: int) -> None:
        self.n, self.batch_size, self.seed = num_examples, batch_size, seed
        self.start_step, self.max_steps = start_step, max_steps
        self.steps_per_epoch = num_examples // batch_size
        if self.steps_per_epoch == 0:
            raise VaezooError(f"data.batch_size {batch_size} is larger than the training set ({num_examples} examples)")

    def permutation(self, epoch: int) -> Tensor:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.n, generator=generator)

    def __iter__(self) -> Iterator[list[int]]:
        step = self.start_step
        while step < self.max_steps:
            epoch, offset = divmod(step, self.steps_per_epoch)
            perm = self.permutation(epoch)
            for i in range(offset, self.steps_per_epoch):
                if step >= self.max_steps:
                    return
                yield perm[i * self.batch_size : (i + 1) * self.batch_size].tolist()
                step += 1

    def __len__(self) -> int:
        return max(0, self.max_steps - self.start_step)


class Trainer:
    """Trains a model with an objective on a data module (Adamax, warm-up then cosine decay)."""

    def __init__(
        self,
        max_steps: int = 1000,
        lr: float = 1e-2,
        lr_min: float = 1e-4,
        warmup_steps: int = 0,
        weight_decay: float = 3e-4,
        adamax_eps: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        grad_clip: float | None = None,
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
        num_workers: int = 0,
        progress: bool = True,
        device: str = "cpu",
    ) -> None:
        if max_steps < 1:
            raise VaezooError(f"trainer.max_steps must be positive, got {max_steps}")
        self.max_steps = max_steps
        self.lr, self.lr_min, self.warmup_steps = lr, lr_min, warmup_steps
        self.weight_decay, self.adamax_eps, self.betas = weight_decay, adamax_eps, tuple(betas)
        self.grad_clip = grad_clip
        self.precision = precision
        self.checkpoint_every, self.keep_last = checkpoint_every, keep_last
        self.log_every, self.sample_every = log_every, sample_every
        self.num_samples, self.sample_temperature = num_samples, sample_temperature
        self.eval_k, self.eval_batch_size = eval_k, eval_batch_size
        self.max_consecutive_bad_steps = max_consecutive_bad_steps
        self.num_workers = num_workers
        self.progress = progress
        self.device = torch.device(device)

    # -- schedules -----------------------------------------------------------------------------
    def lr_at(self, step: int) -> float:
        """Linear warm-up from 0, then cosine decay to ``lr_min`` exactly at ``max_steps``."""
        if self.warmup_steps and step < self.warmup_steps:
            return self.lr * step / self.warmup_steps
        span = max(1, self.max_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / span)
        return self.lr_min + 0.5 * (self.lr - self.lr_min) * (1 + math.cos(math.pi * progress))

    def _autocast(self):
        if self.precision == "fp32":
            return nullcontext()
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    # -- the loop ------------------------------------------------------------------------------
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
        ckpt_dir = run_dir / "checkpoints"
        model.to(self.device)
        objective.to(self.device)
        if tuple(data.image_shape) != tuple(model.image_shape):
            raise VaezooError(
                f"model.image_shape {list(model.image_shape)} does not fit the data {list(data.image_shape)} of {type(data).__name__}"
            )
        objective.set_total_steps(self.max_steps)
        optimizer = torch.optim.Adamax(
            model.parameters(), lr=self.lr, betas=self.betas, eps=self.adamax_eps, weight_decay=self.weight_decay
        )
        scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")
        data_generator = torch.Generator().manual_seed(seed + 1)
        state = {"step": 0, "skipped_steps": 0}

        if resume:
            found = list_checkpoints(ckpt_dir)
            if not found:
                raise VaezooError(f"--resume: no checkpoint in {ckpt_dir}")
            ckpt = load_checkpoint(found[-1][1])
            model.load_state_dict(ckpt["model"])
            objective.load_state_dict(ckpt["objective"])
            optimizer.load_state_dict(ckpt["optimizer"])
            scaler.load_state_dict(ckpt["scaler"])
            torch.set_rng_state(ckpt["rng"]["torch"])
            data_generator.set_state(ckpt["rng"]["data"])
            state.update(step=int(ckpt["step"]), skipped_steps=int(ckpt["skipped_steps"]))
        else:
            torch.manual_seed(seed)

        train_set = data.train_dataset()
        sampler = _EpochBatchSampler(len(train_set), data.batch_size, seed, state["step"], self.max_steps)
        # the loader draws worker seeds from its own generator, never from the global RNG stream
        loader_generator = torch.Generator().manual_seed(seed + 2)
        loader = DataLoader(train_set, batch_sampler=sampler, num_workers=self.num_workers, generator=loader_generator)
        metrics_file = (run_dir / "metrics.jsonl").open("a")
        consecutive_bad = 0
        window_start, window_images = time.perf_counter(), 0
        progress = _progress(self.progress, console, total=self.max_steps, completed=state["step"])
        model.train()
        try:
            with progress as bar:
                task = bar.add_task("fit", total=self.max_steps, completed=state["step"], loss=float("nan"), kl=float("nan"), rate=0.0)
                for x, *_ in loader:
                    step = state["step"]
                    x = data.train_transform(x, data_generator).to(self.device, non_blocking=True)
                    lr = self.lr_at(step)
                    for group in optimizer.param_groups:
                        group["lr"] = lr
                    optimizer.zero_grad(set_to_none=True)
                    with self._autocast():
                        loss, metrics = objective(model, x, step)
                    scaler.scale(loss).backward()
                    scaler.unscale_(optimizer)
                    grad_norm = torch.nn.utils.clip_grad_norm_(
                        model.parameters(), self.grad_clip if self.grad_clip else float("inf")
                    )
                    finite = bool(torch.isfinite(loss)) and bool(torch.isfinite(grad_norm))
                    if finite:
                        scaler.step(optimizer)
                        consecutive_bad = 0
                    else:
                        state["skipped_steps"] += 1
                        consecutive_bad += 1
                        if consecutive_bad >= self.max_consecutive_bad_steps:
                            raise TrainingDiverged(
                                f"training diverged: {consecutive_bad} consecutive steps with a non-finite loss or "
                                f"gradient at step {step}; lower trainer.lr or enable trainer.grad_clip"
                            )
                    scaler.update()
                    state["step"] = step + 1
                    window_images += x.shape[0]

                    if state["step"] % self.log_every == 0 or state["step"] == self.max_steps:
                        elapsed = time.perf_counter() - window_start
                        record = _record(metrics, loss, grad_norm, lr, state, window_images / max(elapsed, 1e-9))
                        metrics_file.write(json.dumps(record) + "\n")
                        metrics_file.flush()
                        bar.update(task, loss=record["loss"], kl=record.get("kl", float("nan")), rate=record["images_per_s"] / x.shape[0])
                        window_start, window_images = time.perf_counter(), 0
                    bar.update(task, completed=state["step"])
                    if self.sample_every and state["step"] % self.sample_every == 0:
                        self.save_samples(model, run_dir / f"samples_step_{state['step']:08d}.png", seed)
                    if self.checkpoint_every and state["step"] % self.checkpoint_every == 0:
                        self._save(ckpt_dir, model, objective, optimizer, scaler, data_generator, state, recipe)
        finally:
            metrics_file.close()
        if not list_checkpoints(ckpt_dir) or list_checkpoints(ckpt_dir)[-1][0] != state["step"]:
            self._save(ckpt_dir, model, objective, optimizer, scaler, data_generator, state, recipe)
        self.save_samples(model, run_dir / "samples.png", seed)
        return {"step": state["step"], "skipped_steps": state["skipped_steps"]}

    def _save(self, ckpt_dir, model, objective, optimizer, scaler, data_generator, state, recipe) -> None:
        payload = {
            "model": model.state_dict(),
            "objective": objective.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict(),
            "rng": {"torch": torch.get_rng_state(), "data": data_generator.get_state()},
            "step": state["step"],
            "skipped_steps": state["skipped_steps"],
            "model_config": json.dumps(model.config) if model.config else "",
        }
        atomic_torch_save(payload, checkpoint_path(ckpt_dir, state["step"]))
        prune_checkpoints(ckpt_dir, self.keep_last)

    @torch.no_grad()
    def save_samples(self, model: GenerativeModel, path: Path, seed: int) -> None:
        from torchvision.utils import save_image

        was_training = model.training
        model.eval()
        with torch.random.fork_rng(devices=[]):  # sampling must not perturb the training RNG stream
            torch.manual_seed(seed)
            images = model.sample(self.num_samples, temperature=self.sample_temperature)
        model.train(was_training)
        nrow = max(1, int(math.sqrt(self.num_samples)))
        tmp = path.with_name(f".{path.name}.tmp.png")
        save_image(images.float().cpu(), tmp, nrow=nrow)
        tmp.replace(path)

    def test(self, model: GenerativeModel, data: DataModule, seed: int = 0):
        return evaluate(model, data.test_dataset(), k=self.eval_k, batch_size=self.eval_batch_size, seed=seed)


def _record(metrics: dict, loss: Tensor, grad_norm: Tensor, lr: float, state: dict, images_per_s: float) -> dict:
    record: dict[str, Any] = {"step": state["step"], "loss": float(loss.detach())}
    for key, value in metrics.items():
        if isinstance(value, Tensor):
            value = value.detach().float().cpu()
            record[key] = value.tolist() if value.ndim else float(value)
        else:
            record[key] = value
    record.update(grad_norm=float(grad_norm), lr=lr, skipped_steps=state["skipped_steps"], images_per_s=images_per_s)
    return record


def _progress(enabled: bool, console: Any, total: int, completed: int):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

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
