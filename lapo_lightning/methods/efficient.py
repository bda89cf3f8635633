"""Efficient reasoning (Arora & Zanette): correctness discounted by how long an answer is
compared with the other correct answers to the same problem.

Flow: a reward plugin, scored by ``GRPOModule`` after sampling and verification like every
other :class:`~lapo_lightning.rewards.Reward`. It *includes* the correctness term, so use it
INSTEAD of ``Accuracy`` (``rewards: [{class_path: lapo_lightning.methods.efficient.EfficientReasoning}]``);
adding ``Accuracy`` as well would change the method.

Paper: Daman Arora and Andrea Zanette (2025), "Training Language Models to Reason
Efficiently" (arXiv 2502.04463). For answer i to a problem, with mean and std taken over the
lengths of the CORRECT answers to that problem (the group)::

    reward_i = 1[correct_i] * (1 - alpha * sigmoid((L_i - mean) / std))

so a correct answer earns between 1 - alpha (much longer than its correct peers) and 1 (much
shorter), an average-length one 1 - alpha/2, and an incorrect answer 0.

Defaults and choices:
- ``alpha`` 0.2: the paper sweeps alpha (it trains a family of models, larger alpha =
  shorter answers); 0.2 is our pick from the middle of that sweep. Must be in [0, 1], so a
  correct answer always beats an incorrect one.
- std is the population std (divide by the count; numpy's default) -- the paper does not
  say which; ``unbiased: true`` divides by count - 1.
- A single correct answer, or correct answers all of one length (std == 0): the normalised
  length is taken as 0, so each gets 1 - alpha * sigmoid(0) = 1 - alpha/2 (what an epsilon
  in the denominator gives, without dividing by 0).
- No correct answer: every reward of the group is 0 (the mean/std are never needed).
  Truncated rollouts are not treated specially: they count by their verifier verdict.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lapo_lightning.algo.groups import count_groups, group_mean, group_std
from lapo_lightning.rewards import Reward
from lapo_lightning.types import RolloutBatch


def efficient_reasoning_reward(lengths: Tensor, correct: Tensor, group_index: Tensor, alpha: float = 0.2,
                               unbiased: bool = False, num_groups: int | None = None) -> Tensor:
    """[N] float: 1[correct] * (1 - alpha * sigmoid((L - mean) / std)), stats over correct answers.

    lengths [N] long, correct [N] bool, group_index [N] long in [0, G).
    Example: one group, lengths [100, 200, 300, 50], correct [T, T, T, F], alpha 0.2:
    mean 200, population std sqrt(20000/3) = 81.65 -> z = [-1.2247, 0, 1.2247]
    -> rewards [1 - 0.2*0.2273, 1 - 0.2*0.5, 1 - 0.2*0.7727, 0] = [0.9545, 0.9, 0.8455, 0].
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    g = count_groups(group_index, num_groups)
    c = correct.bool()
    x = lengths.to(torch.float64)
    dev = torch.where(c, x - group_mean(x, group_index, g, c)[group_index], torch.zeros_like(x))
    std = group_std(x, group_index, g, c, unbiased)[group_index]
    has_spread = std > 0
    z = torch.where(has_spread, dev / torch.where(has_spread, std, torch.ones_like(std)), torch.zeros_like(x))
    reward = 1.0 - alpha * torch.sigmoid(z)
    return torch.where(c, reward, torch.zeros_like(reward)).to(torch.float32)


class EfficientReasoning(Reward):
    """Arora & Zanette's efficient-reasoning reward; includes correctness, so use it INSTEAD of
    ``Accuracy``: a correct answer earns 1 - alpha * sigmoid(its length z-score among the
    group's correct answers), an incorrect one 0.

    Args:
        alpha: length discount in [0, 1] (0.2; the paper sweeps it, larger = shorter).
        unbiased: std over correct answers divides by count - 1 instead of count.
        weight: multiplier in the total reward (1.0).
        name: metric name (``reward/<name>``), default ``efficient_reasoning``.
    """

    def __init__(self, alpha: float = 0.2, unbiased: bool = False, weight: float = 1.0,
                 name: str | None = None) -> None:
        super().__init__(weight, name)
        if not isinstance(alpha, (int, float)) or isinstance(alpha, bool) or not 0.0 <= alpha <= 1.0:
            raise ValueError(f"EfficientReasoning: alpha must be a number in [0, 1] (the paper sweeps it; "
                             f"0.2 by default), got {alpha!r}")
        self.alpha, self.unbiased = float(alpha), bool(unbiased)

    def __call__(self, batch: RolloutBatch) -> Tensor:
        return efficient_reasoning_reward(batch.lengths, batch.correct, batch.group_index, self.alpha,
                                          self.unbiased, num_groups=len(batch.problems))
