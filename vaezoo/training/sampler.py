"""The seeded per-epoch batch sampler of the fit loop.

Data order is a function of (seed, epoch) alone: each epoch draws its permutation from a generator seeded by both,
so a run resumed at any step sees exactly the batches an uninterrupted run would have seen.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor

from ..errors import VaezooError


class EpochBatchSampler:
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
