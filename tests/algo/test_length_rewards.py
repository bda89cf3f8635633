"""LAPO length rewards (lapo_lightning.algo.length_rewards): the stage-1 band reward
on odd/even/tied/degenerate groups, decay and clamping, incorrect rollouts, and the
stage-2 Gaussian by hand.
Run: cd /work/main && HF_HUB_OFFLINE=1 .venv/bin/python -m pytest tests/algo -q
"""

import math

import torch
from torch.testing import assert_close

from lapo_lightning.algo import band_length_reward, gaussian_length_reward


def _band(lengths, correct, gi=None, **kw):
    n = len(lengths)
    gi = torch.zeros(n, dtype=torch.long) if gi is None else torch.tensor(gi)
    return band_length_reward(torch.tensor(lengths), torch.tensor(correct, dtype=torch.bool), gi, **kw)


def test_odd_count_with_decay_and_clamp():
    # correct [100..500]: P30 = 220, P70 = 380; d = 120, 20, 0, 20, 120; the incorrect 300 -> 0
    out = _band([100, 200, 300, 400, 500, 300], [1, 1, 1, 1, 1, 0])
    assert_close(out, torch.tensor([0.0, 0.8, 1.0, 0.8, 0.0, 0.0]))


def test_even_count():
    # correct [100, 200, 300, 400]: P30 = 100 + 0.9*100 = 190, P70 = 300 + 0.1*100 = 310
    out = _band([400, 100, 300, 200], [1, 1, 1, 1])
    assert_close(out, torch.tensor([0.1, 0.1, 1.0, 1.0]))


def test_incorrect_rows_do_not_move_band_and_custom_decay():
    # correct [100, 200, 300, 400, 500] -> band [220, 380]; incorrect rows do not move the band
    out = _band([100, 200, 300, 400, 500, 220, 380, 999], [1, 1, 1, 1, 1, 0, 0, 0], decay=50.0)
    assert_close(out, torch.tensor([0.0, 0.6, 1.0, 0.6, 0.0, 0.0, 0.0, 0.0]))


def test_ties():
    # correct [100, 100, 100, 200]: P30 = 100, P70 = 100 + 0.1*100 = 110; 200 -> d = 90
    out = _band([100, 100, 100, 200], [1, 1, 1, 1])
    assert_close(out, torch.tensor([1.0, 1.0, 1.0, 0.1]))


def test_degenerate_groups_get_zero():
    one_correct = _band([100, 200, 300], [0, 1, 0])
    none_correct = _band([100, 200, 300], [0, 0, 0])
    all_equal = _band([150, 150, 150, 400], [1, 1, 1, 0])
    for out in (one_correct, none_correct, all_equal):
        assert torch.equal(out, torch.zeros_like(out))


def test_point_band_with_two_distinct_lengths_gets_zero():
    # The official rule is lower_q < upper_q, not "two distinct correct lengths".
    # correct [100]*7 + [103]: P30 at position 2.1 -> 100, P70 at position 4.9 -> 100,
    # so the band is the point 100 and nobody gets a band reward (103 would get 0.97).
    out = _band([100] * 7 + [103], [1] * 8)
    assert torch.equal(out, torch.zeros(8))
    # With three 103s P70 (position 4.9) is 100 + 0.9*3 = 102.7: a real band again, and
    # each 103 is 0.3 past its edge -> 0.997.
    out = _band([100] * 5 + [103] * 3, [1] * 8)
    assert_close(out, torch.tensor([1.0] * 5 + [0.997] * 3))


def test_groups_are_independent_and_non_contiguous():
    # group 0: correct [100, 200, 300, 400] -> band [190, 310]; group 1 has no correct rollout
    lengths = [400, 0, 100, 0, 300, 7, 200]
    correct = [1, 0, 1, 0, 1, 0, 1]
    gi = [0, 1, 0, 1, 0, 1, 0]
    out = _band(lengths, correct, gi)
    assert_close(out, torch.tensor([0.1, 0.0, 0.1, 0.0, 1.0, 0.0, 1.0]))
    assert not torch.isnan(out).any()


def test_empty_completions_no_nan():
    out = _band([0, 0, 10], [1, 1, 1])
    assert torch.isfinite(out).all()
    # correct [0, 0, 10]: P30 = 0, P70 = 0 + 0.4*10 = 4; 10 -> d = 6 -> 0.94
    assert_close(out, torch.tensor([1.0, 1.0, 0.94]))


def test_matches_numpy_percentile():
    import numpy as np

    torch.manual_seed(0)
    lengths = torch.randint(0, 1000, (9,))
    low, high = np.percentile(lengths.numpy(), [30, 70])
    x = lengths.double().numpy()
    d = np.maximum(low - x, 0) + np.maximum(x - high, 0)
    expected = torch.tensor(np.maximum(0, 1 - d / 100.0), dtype=torch.float32)
    out = band_length_reward(lengths, torch.ones(9, dtype=torch.bool), torch.zeros(9, dtype=torch.long))
    assert_close(out, expected)


def test_gaussian_by_hand():
    lengths = torch.tensor([100, 220, 220, -20 + 100, 100])
    correct = torch.tensor([1, 1, 1, 1, 0]).bool()
    targets = torch.tensor([100.0, 100.0, float("nan"), 200.0, 100.0])
    out = gaussian_length_reward(lengths, correct, targets, sigma=120.0)
    # L=80, n=200: z = -1 -> exp(-0.5); incorrect -> 0; NaN target -> 0
    assert_close(out, torch.tensor([1.0, math.exp(-0.5), 0.0, math.exp(-0.5), 0.0]))
    assert_close(gaussian_length_reward(torch.tensor([340]), torch.tensor([True]),
                                        torch.tensor([100.0]), sigma=120.0),
                 torch.tensor([math.exp(-2.0)]))
