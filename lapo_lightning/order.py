"""Problem order that a resumed run reproduces exactly.

The order of epoch ``e`` is a permutation seeded by ``(seed, e)`` alone, so it does not
depend on how many epochs ran in this process. After a mid-epoch resume the data module
tells the sampler how many batches of that epoch were already trained on, and they are
skipped once. Together with per-step rollout seeds in ``GRPOModule`` this makes a resumed
run see the same batches and samples as an uninterrupted one.

With ``lengths``, each window of ``pool`` batches of the permutation is sorted by length,
cut into batches and the batches shuffled again: batches hold rows of similar length (less
padding in supervised fine-tuning), still in a seeded order, so the skip stays exact.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


class EpochShuffle(Sampler[int]):
    """Seeded per-epoch shuffle (Lightning calls ``set_epoch``) with a one-off skip."""

    def __init__(self, size: int, seed: int, shuffle: bool = True, lengths: list[int] | None = None,
                 batch_size: int = 1, pool: int = 16) -> None:
        if lengths is not None and len(lengths) != size:
            raise ValueError(f"lengths has {len(lengths)} entries for {size} items")
        self.size, self.seed, self.shuffle = size, seed, shuffle
        self.lengths, self.batch_size, self.pool = lengths, batch_size, pool
        self.epoch = 0
        self._skip: tuple[int, int] | None = None  # (epoch, items to skip)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def skip_once(self, epoch: int, items: int) -> None:
        """Drop the first ``items`` indices the next time ``epoch`` is iterated."""
        self._skip = (epoch, items)

    def __iter__(self) -> Iterator[int]:
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            order = torch.randperm(self.size, generator=generator).tolist()
        else:
            order = list(range(self.size))
        if self.lengths is not None:
            order = self._bucketed(order, generator)
        if self._skip is not None and self._skip[0] == self.epoch:
            order = order[self._skip[1]:]
            self._skip = None
        return iter(order)

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
        return self.size
