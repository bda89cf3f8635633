"""Group-relative advantages, the "G" in GRPO.

Called from the GRPO LightningModule's ``training_step`` right after the rewards are summed:
``A_i = (r_i - mean_group(r)) / (std_group(r) + eps)``, constant over the tokens of rollout i.
As in the official LAPO (OpenRLHF) and TRL code the std is the unbiased one. Departure: a
group whose rewards are all equal (or that has one member) gets exactly 0 rather than the
tiny noise that ``(r - mean) / eps`` gives from float rounding, and the group is an explicit
index tensor, never inferred from row order.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .groups import count_groups, group_max, group_mean, group_min, group_std


def zero_spread_groups(
    rewards: Tensor, group_index: Tensor, num_groups: int | None = None
) -> Tensor:
    """[G] bool: True where every reward of the group is equal (so it carries no signal).

    rewards [N] float, group_index [N] long in [0, G). A group with no rows is vacuously
    True. Example: rewards [1., 1., 0., 2.], group_index [0, 0, 1, 1] -> [True, False].
    """
    g = count_groups(group_index, num_groups)
    r = rewards.detach().to(torch.float64)
    hi, lo = group_max(r, group_index, g), group_min(r, group_index, g)
    # min == max compares the rewards themselves, so it is exact; an empty group has
    # lo = +inf > hi = -inf and is marked by the second clause.
    return (hi == lo) | (lo > hi)


def group_advantages(
    rewards: Tensor, group_index: Tensor, num_groups: int | None = None, eps: float = 1e-4
) -> Tensor:
    """[N] float: each reward standardised within its group (unbiased std).

    rewards [N] float, group_index [N] long (rows of a group need not be contiguous).
    Example: rewards [1., 2., 3., 0., 4., 8.], group_index [0, 0, 0, 1, 1, 1], eps=0
    -> means [2, 4], stds [1, 4] -> [-1., 0., 1., -1., 0., 1.].
    """
    g = count_groups(group_index, num_groups)
    r = rewards.detach().to(torch.float32)
    dev = r - group_mean(r, group_index, g)[group_index]
    # Bessel's correction: size-1 groups get std 0 there; they are zeroed below anyway.
    adv = dev / (group_std(r, group_index, g)[group_index] + eps)
    flat = zero_spread_groups(r, group_index, g)[group_index]
    return torch.where(flat, torch.zeros_like(adv), adv)
