"""Kimi k1.5 length penalty: reward the shorter answers of each group, penalise the longer ones.

Flow: a reward plugin, scored by ``GRPOModule`` after sampling and verification like every
other :class:`~lapo_lightning.rewards.Reward`; it is *added* to correctness (use it next to
``Accuracy``), e.g. ``rewards: [Accuracy, {class_path: lapo_lightning.methods.kimi.KimiLengthPenalty}]``.

Paper: Kimi Team (2025), "Kimi k1.5: Scaling Reinforcement Learning with LLMs" (arXiv
2501.12599), the "length penalty" of its RL recipe. For the G answers to one problem, with lengths
L_i and L_min / L_max the shortest / longest of the group::

    lambda_i = 0.5 - (L_i - L_min) / (L_max - L_min)
    reward_i = lambda_i              if answer i is correct
               min(0, lambda_i)      if it is incorrect

so the shortest answer gets +0.5 (if correct), the longest -0.5, and incorrect answers are
never rewarded for being short. Defaults: ``weight`` 1.0 (the paper adds the penalty to the
correctness reward unscaled).

Choices and departures:
- L_min and L_max are taken over *all* answers of the group (correct, incorrect and
  truncated), the k sampled responses of the paper; truncated answers are not
  treated specially (they are usually incorrect, hence min(0, lambda)).
- All lengths of a group equal (L_max == L_min, including a group of one and an
  all-truncated group at the cap): the formula divides by 0; we give lambda = 0 to every
  answer (no length signal), never NaN.
- The paper warms the penalty up (trains without it first, then adds it); this reward keeps
  no state, so a warm-up is a separate run (or stage) without this reward.
- Lengths are completion tokens (``RolloutBatch.lengths``), groups come from
  ``batch.group_index``, never from row order.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lapo_lightning.algo.groups import count_groups, group_max, group_min
from lapo_lightning.rewards import Reward
from lapo_lightning.types import RolloutBatch


def kimi_length_reward(lengths: Tensor, correct: Tensor, group_index: Tensor, num_groups: int | None = None) -> Tensor:
    """[N] float: the Kimi k1.5 length reward per rollout (module docstring).

    lengths [N] long, correct [N] bool, group_index [N] long in [0, G).
    Example: one group, lengths [100, 200, 300], correct [True, True, False]
    -> lambda [0.5, 0.0, -0.5] -> rewards [0.5, 0.0, -0.5]; lengths [100, 300] with
    correct [False, True] -> lambda [0.5, -0.5] -> [0.0, -0.5]; all lengths equal -> 0.
    """
    g = count_groups(group_index, num_groups)
    x = lengths.to(torch.float64)
    longest, shortest = group_max(x, group_index, g)[group_index], group_min(x, group_index, g)[group_index]
    span = longest - shortest
    has_span = span > 0
    lam = torch.where(has_span, 0.5 - (x - shortest) / torch.where(has_span, span, torch.ones_like(span)),
                      torch.zeros_like(x))
    reward = torch.where(correct.bool(), lam, lam.clamp(max=0.0))
    return reward.to(torch.float32)


class KimiLengthPenalty(Reward):
    """Kimi k1.5 length penalty (add it to ``Accuracy``): +0.5 for the group's shortest
    correct answer down to -0.5 for its longest answer; incorrect answers only lose.

    Args:
        weight: multiplier in the total reward (1.0: the paper adds the penalty unscaled).
        name: metric name (``reward/<name>``), default ``kimi_length_penalty``.
    """

    def __call__(self, batch: RolloutBatch) -> Tensor:
        return kimi_length_reward(batch.lengths, batch.correct, batch.group_index, num_groups=len(batch.problems))
