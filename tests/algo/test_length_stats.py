"""Per-group correct-length statistics, the stage-2 fallback target and Eq. 8 refinement
(lapo_lightning.algo.length_stats), all by hand.
Run: cd /work/main && HF_HUB_OFFLINE=1 .venv/bin/python -m pytest tests/algo -q
"""

import torch
from torch.testing import assert_close

from lapo_lightning.algo import fill_missing_targets, group_length_stats, refine_targets

NAN = float("nan")


def test_group_length_stats_by_hand():
    # g0 correct [100, 200, 300, 400] (even); g1 correct [10, 20, 60] (odd, one incorrect 5);
    # g2 none correct; g3 has no rows at all
    lengths = torch.tensor([100, 10, 200, 20, 300, 60, 400, 5, 70, 80])
    correct = torch.tensor([1, 1, 1, 1, 1, 1, 1, 0, 0, 0]).bool()
    gi = torch.tensor([0, 1, 0, 1, 0, 1, 0, 1, 2, 2])
    s = group_length_stats(lengths, correct, gi, num_groups=4)
    # g1: P30 at position 0.6 -> 16; P70 at 1.4 -> 36
    assert_close(s.median, torch.tensor([250.0, 20.0, NAN, NAN]), equal_nan=True)
    assert_close(s.low, torch.tensor([190.0, 16.0, NAN, NAN]), equal_nan=True)
    assert_close(s.high, torch.tensor([310.0, 36.0, NAN, NAN]), equal_nan=True)
    assert s.num_correct.tolist() == [4, 3, 0, 0]


def test_custom_percentiles_and_single_correct():
    s = group_length_stats(torch.tensor([10, 20, 30, 99]), torch.tensor([1, 1, 1, 0]).bool(),
                           torch.tensor([0, 0, 0, 1]), low_pct=25.0, high_pct=75.0)
    assert_close(s.low, torch.tensor([15.0, NAN]), equal_nan=True)
    assert_close(s.high, torch.tensor([25.0, NAN]), equal_nan=True)
    one = group_length_stats(torch.tensor([42, 7]), torch.tensor([1, 0]).bool(), torch.tensor([0, 0]))
    assert_close(one.median, torch.tensor([42.0]))
    assert_close(one.low, torch.tensor([42.0]))


def test_fill_missing_targets():
    targets = torch.tensor([NAN, NAN, 50.0, NAN, NAN])
    lengths = torch.tensor([10, 30, 7, 8, 9])
    correct = torch.tensor([1, 1, 1, 0, 0]).bool()
    gi = torch.tensor([0, 0, 1, 2, 2])
    out = fill_missing_targets(targets, lengths, correct, gi)
    # g0 median 20; g1 keeps its target; g2 has no correct rollout -> stays NaN
    assert_close(out, torch.tensor([20.0, 20.0, 50.0, NAN, NAN]), equal_nan=True)


def test_refine_targets_eq8():
    old = torch.tensor([300.0, NAN, 300.0, 300.0, NAN])
    current = torch.tensor([200.0, 150.0, 400.0, NAN, NAN])
    # shrink; unsolved -> solved; a larger median does not grow it; unsolved now keeps old
    out = refine_targets(old, current)
    assert_close(out, torch.tensor([200.0, 150.0, 300.0, 300.0, NAN]), equal_nan=True)
