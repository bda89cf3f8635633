"""Problem order that a resumed run reproduces exactly.

The order of epoch ``e`` is a permutation seeded by ``(seed, e)`` alone, so it does not
depend on how many epochs ran in this process. After a mid-epoch resume the data module
tells the sampler how many problems of that epoch were already trained on (over all
processes), and they are skipped once. Together with per-step rollout seeds in
``GRPOModule`` this makes a resumed run see the same batches and samples as an
uninterrupted one.

Several processes: each takes every ``num_replicas``-th index of the same epoch order,
starting at its rank, so a step's problems are split across processes and each epoch's
problems are seen exactly once (when the dataset size is not a multiple of the process
count, the order is padded with its own first indices so every process runs the same number
of steps, as ``DistributedSampler`` does). A resume skips the consumed head of that order
and splits the rest again, so it may even use another number of processes. The sampler is
a ``DistributedSampler`` subclass so that Lightning uses it as it is instead of wrapping it
in its own distributed sampler (which would split the already-skipped order a second time).

With ``lengths``, each window of ``pool`` batches of the permutation is sorted by length,
cut into batches and the batches shuffled again: batches hold rows of similar length (less
padding in supervised fine-tuning), still in a seeded order, so the skip stays exact.
"""

from __future__ import annotations

from collections.abc import Iterator

import math

import torch
from torch.utils.data.distributed import DistributedSampler


class EpochShuffle(DistributedSampler):
    """Seeded per-epoch shuffle (Lightning calls ``set_epoch``), sharded over processes, with a one-off skip.

    Example: size 5, two processes -> epoch order [3, 0, 4, 1, 2] padded to [3, 0, 4, 1, 2, 3];
    rank 0 iterates [3, 4, 2], rank 1 [0, 1, 3].
    """

    def __init__(self, size: int, seed: int, shuffle: bool = True, lengths: list[int] | None = None,
                 batch_size: int = 1, pool: int = 16, num_replicas: int = 1, rank: int = 0) -> None:
        # DistributedSampler.__init__ is not called: it needs a dataset and an initialised
        # process group, and none of its own state is used.
        if lengths is not None and len(lengths) != size:
            raise ValueError(f"lengths has {len(lengths)} entries for {size} items")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is not in [0, {num_replicas})")
        self.size, self.seed, self.shuffle = size, seed, shuffle
        self.num_replicas, self.rank = num_replicas, rank
        self.lengths, self.batch_size, self.pool = lengths, batch_size, pool
        self.epoch = 0
        self._skip: tuple[int, int] | None = None  # (epoch, items to skip)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def skip_once(self, epoch: int, items: int) -> None:
        """Drop the first ``items`` indices of the epoch's order (over all processes) the next
        time ``epoch`` is iterated."""
        self._skip = (epoch, items)

    def __iter__(self) -> Iterator[int]:
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            order = torch.randperm(self.size, generator=generator).tolist()
        else:
            order = list(range(self.size))
        if self.lengths is not None:
            order = self._bucketed(order, generator)
        order = _pad(order, self.num_replicas)
        if self._skip is not None and self._skip[0] == self.epoch:
            # Padded again: a run resumed on another number of processes still splits evenly.
            order = _pad(order[self._skip[1]:], self.num_replicas)
            self._skip = None
        return iter(order[self.rank :: self.num_replicas])

    def _bucketed(self, order: list[int], generator: torch.Generator | None) -> list[int]:
        window, out = self.batch_size * self.pool, []
        for start in range(0, len(order), window):
            chunk = sorted(order[start:start + window], key=lambda i: self.lengths[i])
            batches = [chunk[i:i + self.batch_size] for i in range(0, len(chunk), self.batch_size)]
            if generator is not None:
                batches = [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]
            out.extend(i for batch in batches for i in batch)
        return out

    def __len__(self) -> int:
        """Indices this process iterates in a full epoch (before any skip)."""
        return math.ceil(self.size / self.num_replicas)


def _pad(order: list[int], multiple: int) -> list[int]:
    """``order`` repeated from its head up to a multiple of ``multiple``: [3, 0, 4], 2 -> [3, 0, 4, 3]."""
    total = math.ceil(len(order) / multiple) * multiple
    return (order * math.ceil(total / max(len(order), 1)))[:total]
