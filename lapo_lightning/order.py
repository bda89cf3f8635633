"""Problem order that a resumed run reproduces exactly.

The order of epoch ``e`` is a permutation seeded by ``(seed, e)`` alone, so it does not
depend on how many epochs ran in this process. After a mid-epoch resume the data module
tells the sampler how many batches of that epoch were already trained on, and they are
skipped once. Together with per-step rollout seeds in ``GRPOModule`` this makes a resumed
run see the same batches and samples as an uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


class EpochShuffle(Sampler[int]):
    """Seeded per-epoch shuffle (Lightning calls ``set_epoch``) with a one-off skip."""

    def __init__(self, size: int, seed: int, shuffle: bool = True) -> None:
        self.size, self.seed, self.shuffle = size, seed, shuffle
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
        if self._skip is not None and self._skip[0] == self.epoch:
            order = order[self._skip[1]:]
            self._skip = None
        return iter(order)

    def __len__(self) -> int:
        return self.size
