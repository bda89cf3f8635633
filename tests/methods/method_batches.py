"""Hand-built ``RolloutBatch`` objects for the length-control method tests (tests/methods/)."""

from __future__ import annotations

import torch

from lapo_lightning.types import ProblemBatch, RolloutBatch


def rollouts(lengths, correct, group_index, truncated=None) -> RolloutBatch:
    """Rollout i has ``lengths[i]`` completion tokens and answers problem ``group_index[i]``."""
    n, b = len(lengths), max(group_index) + 1
    width = max(lengths)
    mask = torch.arange(width)[None, :] < torch.tensor(lengths)[:, None]  # [N, T]
    return RolloutBatch(
        problems=ProblemBatch([f"p{i}" for i in range(b)], ["q"] * b, ["1"] * b),
        group_index=torch.tensor(group_index), prompt_ids=torch.zeros(n, 1, dtype=torch.long),
        prompt_mask=torch.ones(n, 1, dtype=torch.bool), completion_ids=torch.zeros(n, width, dtype=torch.long),
        completion_mask=mask, texts=[""] * n,
        truncated=torch.tensor(truncated or [False] * n), correct=torch.tensor(correct),
    )
