"""Per-problem statistics of correct-rollout lengths and the stage-2 target bookkeeping.

Used by the stage-1 band reward (P30/P70, paper Eq. 1) and statistics callback (median correct
length per problem, Eq. 4), the stage-2 reward plugin (fallback target) and
the stage-2 budget callback (target refinement, Eq. 8). Departures: quantiles use numpy's
default linear interpolation on the group's correct lengths only; unsolved is NaN, never a
magic number; and the Eq. 8 update is actually applied (the official one never takes effect).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .groups import count_groups, group_sum


@dataclass
class GroupLengthStats:
    """Per group [G]: median/low/high float (NaN where no correct rollout), num_correct long."""

    median: Tensor
    low: Tensor
    high: Tensor
    num_correct: Tensor


def _correct_length_matrix(
    lengths: Tensor, correct: Tensor, group_index: Tensor, g: int
) -> Tensor:
    """[G, max group size] float64: each group's lengths, NaN for incorrect rows/padding."""
    order = torch.argsort(group_index, stable=True)
    gi = group_index[order]
    count = torch.bincount(group_index, minlength=g)
    start = torch.cumsum(count, 0) - count
    col = torch.arange(gi.numel(), device=gi.device) - start[gi]
    vals = torch.where(correct.bool(), lengths.to(torch.float64), torch.nan)[order]
    width = int(count.max().item()) if count.numel() else 0
    mat = torch.full((g, max(width, 1)), torch.nan, dtype=torch.float64, device=vals.device)
    mat[gi, col] = vals
    return mat


def group_length_stats(
    lengths: Tensor, correct: Tensor, group_index: Tensor,
    low_pct: float = 30.0, high_pct: float = 70.0, num_groups: int | None = None,
) -> GroupLengthStats:
    """Median and [low_pct, high_pct] percentiles of each group's CORRECT lengths.

    lengths [N] long, correct [N] bool, group_index [N] long. Linear interpolation
    (== numpy.percentile default). Example: correct lengths of one group [100, 200, 300, 400]
    -> median 250, low (P30, position 0.9) 190, high (P70, position 2.1) 310, num_correct 4.
    """
    g = count_groups(group_index, num_groups)
    mat = _correct_length_matrix(lengths, correct, group_index, g)
    q = torch.tensor([0.5, low_pct / 100.0, high_pct / 100.0], dtype=mat.dtype,
                     device=mat.device)
    # nanquantile ignores the NaN padding; an all-NaN row (no correct rollout) stays NaN.
    # It refuses an empty tensor, hence the guard for G = 0.
    quant = torch.nanquantile(mat, q, dim=1) if g else mat.new_zeros(3, 0)
    med, low, high = quant.to(torch.float32)
    num_correct = group_sum(correct.long(), group_index, g)
    return GroupLengthStats(median=med, low=low, high=high, num_correct=num_correct)


def has_band(stats: GroupLengthStats) -> Tensor:
    """[G] bool: the group's band of correct lengths is a real interval (low < high).

    False for a group with no correct rollout (NaN edges) and for a point band, the official
    stage-1 rule (``lower_q < upper_q``). Example: correct lengths [100] * 7 + [103] ->
    P30 = P70 = 100 -> False, although two distinct lengths were correct.
    """
    return stats.low < stats.high


def fill_missing_targets(
    targets: Tensor, lengths: Tensor, correct: Tensor, group_index: Tensor,
    num_groups: int | None = None,
) -> Tensor:
    """[N] float: NaN targets replaced by their group's median correct length.

    The official stage-2 fallback for a problem with no stage-1 statistic. Rows of a group
    with no correct rollout stay NaN (the Gaussian reward then gives 0).
    Example: targets [nan, nan, 50.], lengths [10, 30, 7], correct all True,
    group_index [0, 0, 1] -> [20., 20., 50.].
    """
    med = group_length_stats(lengths, correct, group_index, num_groups=num_groups).median
    return torch.where(torch.isnan(targets), med[group_index].to(targets.dtype), targets)


def refine_targets(old: Tensor, current_median: Tensor) -> Tensor:
    """[B] float: paper Eq. 8, the stage-2 target update after each step.

    old [B] (NaN = unsolved or missing), current_median [B] (NaN = unsolved in this step).
    Unsolved before and solved now -> current; solved both -> min(old, current); not solved
    now -> unchanged. Example: old [300, nan, 300, 300], current [200, 150, 400, nan]
    -> [200, 150, 300, 300].
    """
    # fmin returns the non-NaN operand when exactly one is NaN: precisely the three cases.
    return torch.fmin(old, current_median.to(old.dtype))
