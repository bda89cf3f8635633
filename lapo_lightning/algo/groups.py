"""Statistics per group of rollouts (the G completions of one problem), by an explicit index.

Every group-relative quantity is built from these: the GRPO advantages (``advantages.py``),
the length statistics and rewards of LAPO (``length_stats.py``, ``length_rewards.py``) and
the length rewards of the method zoo (``lapo_lightning/methods``). ``group_index`` [N] long
assigns each row to a group in [0, G); rows of a group need not be contiguous. ``mask``
(optional, [N] bool) restricts a statistic to some rows, e.g. the correct ones. Results are
[G] in the values' dtype; what an empty group gets is stated per function.
"""

from __future__ import annotations

import torch
from torch import Tensor


def count_groups(group_index: Tensor, num_groups: int | None = None) -> int:
    """G: ``num_groups`` when given (trailing groups may be empty), else the largest index + 1."""
    if num_groups is not None:
        return int(num_groups)
    return int(group_index.max().item()) + 1 if group_index.numel() else 0


def _masked(values: Tensor, mask: Tensor | None, fill: float) -> Tensor:
    return values if mask is None else torch.where(mask.bool(), values, torch.full_like(values, fill))


def group_count(values: Tensor, group_index: Tensor, num_groups: int, mask: Tensor | None = None) -> Tensor:
    """[G] rows per group (those in ``mask``), in ``values``' dtype."""
    ones = torch.ones_like(values) if mask is None else mask.to(values.dtype)
    return torch.zeros(num_groups, dtype=values.dtype, device=values.device).index_add(0, group_index, ones)


def group_sum(values: Tensor, group_index: Tensor, num_groups: int, mask: Tensor | None = None) -> Tensor:
    """[G] sum of each group's values (those in ``mask``); 0 for an empty group."""
    zeros = torch.zeros(num_groups, dtype=values.dtype, device=values.device)
    return zeros.index_add(0, group_index, _masked(values, mask, 0.0))


def group_mean(values: Tensor, group_index: Tensor, num_groups: int, mask: Tensor | None = None) -> Tensor:
    """[G] mean of each group's values (those in ``mask``); 0 for an empty group.

    Example: values [1., 2., 3., 0., 4., 8.], groups [0, 0, 0, 1, 1, 1] -> [2., 4.]."""
    count = group_count(values, group_index, num_groups, mask)
    return group_sum(values, group_index, num_groups, mask) / count.clamp(min=1)


def group_std(values: Tensor, group_index: Tensor, num_groups: int, mask: Tensor | None = None,
              unbiased: bool = True) -> Tensor:
    """[G] standard deviation of each group's values (those in ``mask``); Bessel-corrected
    when ``unbiased``; 0 for a group with no spread to measure (empty, or one row when unbiased).

    Example: values [1., 2., 3., 0., 4., 8.], groups [0, 0, 0, 1, 1, 1] -> [1., 4.]."""
    count = group_count(values, group_index, num_groups, mask)
    mean = group_sum(values, group_index, num_groups, mask) / count.clamp(min=1)
    dev = _masked(values - mean[group_index], mask, 0.0)
    zeros = torch.zeros(num_groups, dtype=values.dtype, device=values.device)
    return (zeros.index_add(0, group_index, dev * dev) / (count - int(unbiased)).clamp(min=1)).sqrt()


def group_min(values: Tensor, group_index: Tensor, num_groups: int, mask: Tensor | None = None) -> Tensor:
    """[G] smallest value of each group (among ``mask``); +inf for an empty group."""
    start = torch.full((num_groups,), torch.inf, dtype=values.dtype, device=values.device)
    return start.scatter_reduce(0, group_index, _masked(values, mask, torch.inf), reduce="amin")


def group_max(values: Tensor, group_index: Tensor, num_groups: int, mask: Tensor | None = None) -> Tensor:
    """[G] largest value of each group (among ``mask``); -inf for an empty group."""
    start = torch.full((num_groups,), -torch.inf, dtype=values.dtype, device=values.device)
    return start.scatter_reduce(0, group_index, _masked(values, mask, -torch.inf), reduce="amax")
