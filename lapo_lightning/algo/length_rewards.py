"""Length rewards of LAPO: the stage-1 band reward and the stage-2 budget Gaussian.

Called from the reward plugins (LengthBand in stage 1, BudgetGaussian in stage 2), which
add them to correctness with weights alpha = 0.7 / beta_len = 0.8 (Eqs. 3 and 7). Implements
paper Eq. 2 (band [P30, P70] of correct lengths, Eq. 1, linear decay outside) and Eq. 6
(Gaussian around the budget n). Departures: lengths are completion token counts (the official
code also counts a short tail of the prompt) and nothing is ever NaN. A group whose band is empty or a point (P_low == P_high,
as with correct lengths 100 x 7 and 103) rewards nobody, exactly as the official
``lower_q < upper_q`` test.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .groups import count_groups
from .length_stats import group_length_stats, has_band



def band_length_reward(
    lengths: Tensor, correct: Tensor, group_index: Tensor, low_pct: float = 30.0,
    high_pct: float = 70.0, decay: float = 100.0, num_groups: int | None = None,
) -> Tensor:
    """[N] float: 1 inside the group's [P_low, P_high] band of correct lengths, else linear decay.

    lengths [N] long, correct [N] bool, group_index [N] long. Outside the (inclusive) band a
    correct rollout gets max(0, 1 - d / decay), d = distance to the nearest edge; incorrect
    rollouts get 0; a group whose band is degenerate (P_low == P_high, including a single
    correct length) gets 0 throughout.
    Example: correct lengths [100, 200, 300, 400, 500] -> band [220, 380]
    -> rewards [0.0, 0.8, 1.0, 0.8, 0.0] (d = 120, 20, 0, 20, 120).
    Degenerate: correct lengths [100] * 7 + [103] -> P30 = P70 = 100 -> all 0.
    """
    if decay <= 0:
        raise ValueError(f"decay must be > 0, got {decay}")
    g = count_groups(group_index, num_groups)
    correct = correct.bool()
    stats = group_length_stats(lengths, correct, group_index, low_pct, high_pct, g)
    x = lengths.float()
    low, high = stats.low[group_index], stats.high[group_index]
    d = (low - x).clamp(min=0) + (x - high).clamp(min=0)
    reward = (1.0 - d / decay).clamp(min=0)
    keep = correct & has_band(stats)[group_index]
    # where, not multiply: rows of all-incorrect groups hold NaN from the NaN band edges.
    return torch.where(keep, reward, torch.zeros_like(reward))


def gaussian_length_reward(
    lengths: Tensor, correct: Tensor, targets: Tensor, sigma: float = 120.0
) -> Tensor:
    """[N] float: ``exp(-(L - n)^2 / (2 sigma^2))`` for correct rollouts, else 0.

    lengths [N] long, correct [N] bool, targets [N] float budget n (NaN = none; callers fill a
    fallback first with fill_missing_targets, a NaN left over gives 0).
    Example: L = [100, 220, 220], n = [100, 100, nan], sigma 120, all correct
    -> [1.0, exp(-0.5) = 0.6065, 0.0].
    """
    if sigma <= 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    n = targets.to(torch.float32)
    z = (lengths.to(torch.float32) - n) / sigma
    reward = torch.exp(-0.5 * z * z)
    keep = correct.bool() & ~torch.isnan(n)
    return torch.where(keep, reward, torch.zeros_like(reward))
