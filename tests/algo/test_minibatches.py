"""The optimizer steps' shares of one generation (stratified by group, the same in every
process) and the importance-ratio statistics each step logs."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from lapo_lightning.algo import generation_mini_batches, problem_seed, ratio_sums, ratio_summary


def rows_of(group_index: torch.Tensor, batch: torch.Tensor) -> list[int]:
    return group_index[batch].tolist()


def test_one_step_keeps_the_whole_generation_in_order():
    (only,) = generation_mini_batches(torch.tensor([1, 0, 1, 0, 2, 2]), [5, 6, 7], 1)
    assert only.tolist() == [0, 1, 2, 3, 4, 5]


def test_each_step_gets_an_equal_share_of_every_group_and_together_all_rows():
    group_index = torch.arange(3).repeat_interleave(8)[torch.randperm(24, generator=torch.Generator().manual_seed(1))]
    batches = generation_mini_batches(group_index, [11, 12, 13], 4)
    assert len(batches) == 4
    assert sorted(torch.cat(batches).tolist()) == list(range(24))  # a partition
    for batch in batches:
        assert sorted(rows_of(group_index, batch)) == [0, 0, 1, 1, 2, 2]  # G / k = 2 of each group
        assert batch.tolist() == sorted(batch.tolist())  # row order kept


def test_the_deal_depends_on_the_seed_and_not_on_which_rows_share_the_call():
    """One process with groups a, b; two processes with one group each: the same rollouts (a
    group's rows in order) land in the same mini-batch."""
    seeds = {"a": problem_seed(0, 8, 0, "a"), "b": problem_seed(0, 8, 0, "b")}
    both = generation_mini_batches(torch.tensor([0] * 4 + [1] * 4), [seeds["a"], seeds["b"]], 2)
    slot_both = {row: m for m, batch in enumerate(both) for row in batch.tolist()}
    for name, offset in (("a", 0), ("b", 4)):
        alone = generation_mini_batches(torch.zeros(4, dtype=torch.long), [seeds[name]], 2)
        slot_alone = {row: m for m, batch in enumerate(alone) for row in batch.tolist()}
        assert all(slot_alone[g] == slot_both[offset + g] for g in range(4)), name
    other = [generation_mini_batches(torch.arange(40).repeat_interleave(2), [problem_seed(s, i) for i in range(40)], 2)
             for s in (0, 1)]
    assert any(not torch.equal(x, y) for x, y in zip(*other))  # another seed deals otherwise


def test_groups_that_do_not_split_evenly_are_refused():
    with pytest.raises(ValueError, match=r"groups of \[3\] rollouts do not split into 2"):
        generation_mini_batches(torch.zeros(3, dtype=torch.long), [0], 2)


def test_problem_seed_is_the_same_in_another_process():
    here = problem_seed(0, 16, 1, "math/123")
    there = subprocess.run([sys.executable, "-c", "from lapo_lightning.algo import problem_seed; "
                            "print(problem_seed(0, 16, 1, 'math/123'))"], capture_output=True, text=True, check=True)
    assert int(there.stdout) == here and 0 <= here < 2**63
    assert len({here, problem_seed(1, 16, 1, "math/123"), problem_seed(0, 17, 1, "math/123"),
                problem_seed(0, 16, 2, "math/123"), problem_seed(0, 16, 1, "math/124")}) == 5


def test_ratio_statistics_by_hand():
    ratio = torch.tensor([[1.0, 1.5, 9.0]])
    clipped = torch.tensor([[False, True, True]])
    mask = torch.tensor([[True, True, False]])  # the 9.0 is padding
    sums = ratio_sums(ratio, clipped, mask)
    assert sums.tolist() == [2.0, 2.5, 3.25, 1.0]
    summary = ratio_summary(sums + sums)  # two micro-batches add up
    assert summary == pytest.approx({"ratio_mean": 1.25, "ratio_std": 0.25, "clip_frac": 0.5})
    assert ratio_summary(torch.zeros(4)) == {"ratio_mean": 1.0, "ratio_std": 0.0, "clip_frac": 0.0}
