"""Per-group statistics (lapo_lightning/algo/groups.py): worked examples, masks, empty groups."""

from __future__ import annotations

import torch

from lapo_lightning.algo import (count_groups, group_count, group_max, group_mean, group_min, group_std,
                                 group_sum)

VALUES = torch.tensor([1.0, 2.0, 3.0, 0.0, 4.0, 8.0], dtype=torch.float64)
GROUPS = torch.tensor([0, 0, 0, 1, 1, 1])


def test_the_docstring_examples():
    assert group_mean(VALUES, GROUPS, 2).tolist() == [2.0, 4.0]
    assert group_std(VALUES, GROUPS, 2).tolist() == [1.0, 4.0]
    biased = group_std(VALUES, GROUPS, 2, unbiased=False)
    assert torch.allclose(biased, torch.tensor([(2 / 3) ** 0.5, (32 / 3) ** 0.5], dtype=torch.float64))


def test_rows_need_not_be_contiguous_and_match_torch_per_group():
    values = torch.randn(40, dtype=torch.float64)
    groups = torch.randint(5, (40,))
    for g in range(5):
        member = values[groups == g]
        assert torch.isclose(group_sum(values, groups, 5)[g], member.sum())
        assert torch.isclose(group_mean(values, groups, 5)[g], member.mean())
        assert torch.isclose(group_std(values, groups, 5)[g], member.std())
        assert group_min(values, groups, 5)[g] == member.min() and group_max(values, groups, 5)[g] == member.max()


def test_a_mask_restricts_every_statistic_to_its_rows():
    correct = torch.tensor([True, False, True, False, False, True])
    assert group_count(VALUES, GROUPS, 2, correct).tolist() == [2.0, 1.0]
    assert group_mean(VALUES, GROUPS, 2, correct).tolist() == [2.0, 8.0]
    assert group_std(VALUES, GROUPS, 2, correct).tolist() == [2.0 ** 0.5, 0.0]  # one row: no spread to measure
    assert group_min(VALUES, GROUPS, 2, correct).tolist() == [1.0, 8.0]
    assert group_max(VALUES, GROUPS, 2, ~correct).tolist() == [2.0, 4.0]


def test_empty_groups_get_the_stated_values():
    assert count_groups(GROUPS) == 2 and count_groups(GROUPS, 4) == 4 and count_groups(torch.tensor([], dtype=torch.long)) == 0
    assert group_count(VALUES, GROUPS, 3).tolist() == [3.0, 3.0, 0.0]
    assert group_mean(VALUES, GROUPS, 3)[2] == 0 and group_std(VALUES, GROUPS, 3)[2] == 0
    assert group_min(VALUES, GROUPS, 3)[2] == torch.inf and group_max(VALUES, GROUPS, 3)[2] == -torch.inf
