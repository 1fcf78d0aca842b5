"""torch.distributed support: process-group setup from torchrun's environment, synchronised
batch norm that also works on CPU (gloo), and the rank-0-only conventions of the fit loop.

Launch with ``torchrun --nproc_per_node N [--nnodes M --rdzv-endpoint HOST:PORT ...] -m vaezoo fit RECIPE``:
torchrun sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT, so no port is hard-coded
here. The backend is nccl when the process has a CUDA device and gloo otherwise.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn


@dataclass(frozen=True)
class DistributedContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_from_environment(device: str = "auto") -> tuple[DistributedContext, torch.device]:
    """Join the process group torchrun describes (if any) and pick this process's device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    if device == "auto":
        device = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    torch_device = torch.device(device)
    if torch_device.type == "cuda" and torch_device.index is None:
        torch_device = torch.device("cuda", local_rank)
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if torch_device.type == "cuda" else "gloo"
        if torch_device.type == "cuda":
            torch.cuda.set_device(torch_device)
        dist.init_process_group(backend=backend, rank=rank, world_size=world_size)
    return DistributedContext(rank, world_size, local_rank), torch_device


def shutdown(together: bool = False) -> None:
    """Leave the process group (a no-op outside one).

    ``together=True`` is the normal end of a run: every rank waits at a barrier and then tears the group down at
    the same moment, so that no rank exits (closing its gloo connections and worker threads) while another is still
    working inside the group. The error path passes ``False``: a barrier there would wait for a rank that failed.
    """
    if dist.is_available() and dist.is_initialized():
        if together and dist.get_world_size() > 1:
            dist.barrier()
        dist.destroy_process_group()


class GlobalBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics are those of the global batch across all ranks.

    Same parameters, buffers and state_dict names as ``nn.BatchNorm2d``; the per-rank sums are
    all-reduced with the differentiable ``torch.distributed.nn.all_reduce`` so gradients flow
    through the global statistics as in NVAE's synchronised training. Works with gloo (CPU) and
    nccl; outside a process group it is exactly ``nn.BatchNorm2d``.
    """

    def forward(self, x: Tensor) -> Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        from torch.distributed.nn import all_reduce

        dims = (0, 2, 3)
        count = torch.tensor([x.numel() / x.shape[1]], device=x.device, dtype=torch.float32)
        stats = torch.cat([x.float().sum(dims), (x.float() * x.float()).sum(dims), count])
        stats = all_reduce(stats)
        channels = x.shape[1]
        total = stats[-1]
        mean = stats[:channels] / total
        var = stats[channels : 2 * channels] / total - mean * mean
        if self.track_running_stats:
            with torch.no_grad():
                momentum = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked + 1)
                unbiased = var * (total / (total - 1).clamp(min=1))
                self.running_mean.lerp_(mean.to(self.running_mean.dtype), momentum)
                self.running_var.lerp_(unbiased.to(self.running_var.dtype), momentum)
                self.num_batches_tracked.add_(1)
        shape = (1, channels, 1, 1)
        out = (x.float() - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out.to(x.dtype)


def synchronise_batch_norm(model: nn.Module) -> int:
    """Make every ``nn.BatchNorm2d`` of the model a :class:`GlobalBatchNorm2d` in place (same state)."""
    converted = 0
    for module in model.modules():
        if type(module) is nn.BatchNorm2d:
            module.__class__ = GlobalBatchNorm2d
            converted += 1
    return converted


class ModelView:
    """What the objective sees in distributed training: calls go through the DDP wrapper (so that
    gradients are all-reduced), attribute access reaches the wrapped model."""

    def __init__(self, ddp: nn.parallel.DistributedDataParallel) -> None:
        self._ddp = ddp

    def __call__(self, *args, **kwargs):
        return self._ddp(*args, **kwargs)

    def __getattr__(self, name: str):
        return getattr(self._ddp.module, name)


def all_gather_tensors(tensor: Tensor, ctx: DistributedContext) -> list[Tensor]:
    if not ctx.enabled:
        return [tensor]
    out = [torch.empty_like(tensor) for _ in range(ctx.world_size)]
    dist.all_gather(out, tensor)
    return out


def broadcast_buffers(module: nn.Module, ctx: DistributedContext) -> None:
    """Give every rank rank 0's buffers of ``module`` in place, as DDP does for the model's before each forward.

    For the objective: state it draws at random on first use (the spectral regulariser's power-iteration vectors,
    drawn from each rank's own RNG stream) would otherwise differ across ranks, while a checkpoint holds rank 0's
    alone, so a resumed multi-process run would not continue the uninterrupted one.
    """
    if ctx.enabled:
        for buffer in module.buffers():
            dist.broadcast(buffer, src=0)


def barrier(ctx: DistributedContext) -> None:
    if ctx.enabled:
        dist.barrier()
