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


def _count_groups(group_index: Tensor, num_groups: int | None) -> int:
    if num_groups is not None:
        return int(num_groups)
    return int(group_index.max().item()) + 1 if group_index.numel() else 0


def zero_spread_groups(
    rewards: Tensor, group_index: Tensor, num_groups: int | None = None
) -> Tensor:
    """[G] bool: True where every reward of the group is equal (so it carries no signal).

    rewards [N] float, group_index [N] long in [0, G). A group with no rows is vacuously
    True. Example: rewards [1., 1., 0., 2.], group_index [0, 0, 1, 1] -> [True, False].
    """
    g = _count_groups(group_index, num_groups)
    r = rewards.detach().to(torch.float64)
    hi = torch.full((g,), -torch.inf, dtype=r.dtype, device=r.device)
    lo = torch.full((g,), torch.inf, dtype=r.dtype, device=r.device)
    hi = hi.scatter_reduce(0, group_index, r, reduce="amax")
    lo = lo.scatter_reduce(0, group_index, r, reduce="amin")
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
    g = _count_groups(group_index, num_groups)
    r = rewards.detach().to(torch.float32)
    zeros = torch.zeros(g, dtype=r.dtype, device=r.device)
    count = zeros.index_add(0, group_index, torch.ones_like(r))
    mean = zeros.index_add(0, group_index, r) / count.clamp(min=1)
    dev = r - mean[group_index]
    # Bessel's correction: size-1 groups would divide by 0; they are zeroed below anyway.
    var = zeros.index_add(0, group_index, dev * dev) / (count - 1).clamp(min=1)
    adv = dev / (var.sqrt()[group_index] + eps)
    flat = zero_spread_groups(r, group_index, g)[group_index]
    return torch.where(flat, torch.zeros_like(adv), adv)
