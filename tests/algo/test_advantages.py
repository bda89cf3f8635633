"""Group-relative advantages (lapo_lightning.algo.advantages): hand-computed values and
invariants. Run: cd /work/main && HF_HUB_OFFLINE=1 .venv/bin/python -m pytest tests/algo -q
"""

import torch
from torch.testing import assert_close

from lapo_lightning.algo import group_advantages, zero_spread_groups


def test_two_groups_of_three_by_hand():
    # group 0: mean 2, unbiased std 1; group 1: mean 4, unbiased std sqrt((16+0+16)/2) = 4
    rewards = torch.tensor([1.0, 2.0, 3.0, 0.0, 4.0, 8.0])
    gi = torch.tensor([0, 0, 0, 1, 1, 1])
    eps = 1e-4
    expected = torch.tensor([-1 / (1 + eps), 0.0, 1 / (1 + eps), -4 / (4 + eps), 0.0, 4 / (4 + eps)])
    assert_close(group_advantages(rewards, gi, eps=eps), expected)
    assert_close(group_advantages(rewards, gi, eps=0.0), torch.tensor([-1.0, 0, 1, -1, 0, 1]))


def test_unbiased_std_not_population():
    # [0, 1]: unbiased std = 1/sqrt(2) -> A = +-0.5*sqrt(2); population std 0.5 would give +-1
    adv = group_advantages(torch.tensor([0.0, 1.0]), torch.tensor([0, 0]), eps=0.0)
    assert_close(adv, torch.tensor([-(0.5**0.5), 0.5**0.5]))


def test_sum_to_zero_per_group():
    torch.manual_seed(0)
    rewards = torch.rand(40)
    gi = torch.arange(5).repeat_interleave(8)
    adv = group_advantages(rewards, gi)
    sums = torch.zeros(5).index_add(0, gi, adv)
    assert_close(sums, torch.zeros(5), atol=1e-5, rtol=0)


def test_equal_rewards_and_singletons_are_exactly_zero():
    # 0.1 * 3 / 3 != 0.1 in float: a naive (r - mean) / eps would give noise, not zero.
    rewards = torch.tensor([0.1, 0.1, 0.1, 1.7, 1.0, 0.0])
    gi = torch.tensor([0, 0, 0, 1, 2, 2])
    adv = group_advantages(rewards, gi)
    assert torch.equal(adv[:4], torch.zeros(4))
    assert not torch.isnan(adv).any()
    assert adv[4] > 0 > adv[5]


def test_non_contiguous_group_index_matches_contiguous():
    torch.manual_seed(1)
    rewards = torch.rand(12)
    gi = torch.arange(3).repeat_interleave(4)
    ref = group_advantages(rewards, gi)
    perm = torch.randperm(12)
    assert_close(group_advantages(rewards[perm], gi[perm]), ref[perm])


def test_num_groups_allows_empty_groups():
    adv = group_advantages(torch.tensor([1.0, 3.0]), torch.tensor([2, 2]), num_groups=4, eps=0)
    assert_close(adv, torch.tensor([-(0.5**0.5), 0.5**0.5]))


def test_zero_spread_groups():
    rewards = torch.tensor([1.0, 1.0, 0.0, 2.0, 5.0])
    gi = torch.tensor([0, 0, 1, 1, 2])
    assert zero_spread_groups(rewards, gi).tolist() == [True, False, True]
    # an empty group is vacuously "all equal"
    assert zero_spread_groups(rewards, gi, num_groups=4).tolist() == [True, False, True, True]
