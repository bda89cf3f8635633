"""ShorterBetter: reward correctness and closeness to the group's shortest correct length.

Flow: a reward plugin, scored by ``GRPOModule`` after sampling and verification like every
other :class:`~lapo_lightning.rewards.Reward`. It *includes* the correctness term, so use it
INSTEAD of ``Accuracy`` (``rewards: [{class_path: lapo_lightning.methods.shorter_better.ShorterBetter}]``).

Paper: Jingyang Yi, Jiazheng Wang and Sida Li (2025), "ShorterBetter: Guiding Reasoning
Models to Find Optimal Inference Length for Efficient Reasoning" (arXiv 2504.21370). For the
G answers to one problem, the sample optimal length is::

    SOL = min { L_j : answer j correct }     if at least one answer is correct
          mean { L_j : all answers }          otherwise
    reward_i = alpha * 1[correct_i] - beta * |L_i - SOL|

Defaults and choices:
- ``alpha`` 2.0 (one of the paper's two settings, alpha = 1 and 2) and ``beta`` 0.001 (our
  choice of scale: 1000 tokens off SOL cost 1.0, half of a correct answer at alpha 2; scale
  beta with the generation cap).
- The no-correct fallback averages ALL answers of the group, truncated ones included, as the
  paper's formula does; truncated answers are otherwise not treated specially (they count by
  their verifier verdict and their length).
- A single correct answer: SOL is its length, so it gets exactly alpha. Ties (all lengths
  equal): SOL equals that length and the length term is 0 for everyone.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lapo_lightning.algo.groups import count_groups, group_mean, group_min
from lapo_lightning.rewards import Reward
from lapo_lightning.types import RolloutBatch


def sample_optimal_length(lengths: Tensor, correct: Tensor, group_index: Tensor,
                          num_groups: int | None = None) -> Tensor:
    """[G] float: each group's shortest correct length, or its mean length when none is correct.

    Example: lengths [300, 100, 200, 50 | 40, 60], correct [T, F, T, F | F, F], groups
    [0, 0, 0, 0, 1, 1] -> SOL [200, 50] (the incorrect 100 and 50 do not count in group 0).
    A group with no rows gets 0.
    """
    g = count_groups(group_index, num_groups)
    x = lengths.to(torch.float64)
    shortest_correct = group_min(x, group_index, g, correct.bool())
    return torch.where(torch.isfinite(shortest_correct), shortest_correct, group_mean(x, group_index, g))


def shorter_better_reward(lengths: Tensor, correct: Tensor, group_index: Tensor, alpha: float = 2.0,
                          beta: float = 0.001, num_groups: int | None = None) -> Tensor:
    """[N] float: alpha * 1[correct] - beta * |L - SOL| (SOL from :func:`sample_optimal_length`).

    Example: one group, lengths [300, 100, 200, 50], correct [T, F, T, F], alpha 2, beta 0.001
    -> SOL 200 -> [2 - 0.1, 0 - 0.1, 2 - 0, 0 - 0.15] = [1.9, -0.1, 2.0, -0.15].
    """
    sol = sample_optimal_length(lengths, correct, group_index, num_groups)[group_index]
    x = lengths.to(torch.float64)
    reward = alpha * correct.bool().to(x.dtype) - beta * (x - sol).abs()
    return reward.to(torch.float32)


class ShorterBetter(Reward):
    """ShorterBetter reward; includes correctness, so use it INSTEAD of ``Accuracy``:
    alpha for a correct answer minus beta per token away from the group's sample optimal
    length (shortest correct length, or the mean length when none is correct).

    Args:
        alpha: correctness reward (2.0, one of the paper's settings).
        beta: penalty per token of distance to SOL (0.001, our choice).
        weight: multiplier in the total reward (1.0).
        name: metric name (``reward/<name>``), default ``shorter_better``.
    """

    def __init__(self, alpha: float = 2.0, beta: float = 0.001, weight: float = 1.0,
                 name: str | None = None) -> None:
        super().__init__(weight, name)
        for key, value in (("alpha", alpha), ("beta", beta)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < float("inf"):
                raise ValueError(f"ShorterBetter: {key} must be a finite number >= 0, got {value!r}")
        self.alpha, self.beta = float(alpha), float(beta)

    def __call__(self, batch: RolloutBatch) -> Tensor:
        return shorter_better_reward(batch.lengths, batch.correct, batch.group_index, self.alpha, self.beta,
                                     num_groups=len(batch.problems))
