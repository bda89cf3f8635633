"""ShorterBetter reward on hand-built rollout batches. Run: pytest tests/methods/test_shorter_better.py -q"""

from __future__ import annotations

import pytest
import torch

from lapo_lightning.methods.shorter_better import ShorterBetter, sample_optimal_length, shorter_better_reward
from method_batches import rollouts


def test_sol_is_the_shortest_correct_length():
    """Lengths [300, 100, 200, 50], correct [T, F, T, F]: SOL = min(300, 200) = 200 (the shorter
    incorrect 100 and 50 do not count). alpha 2, beta 0.001:
    [2 - 0.001*100, 0 - 0.001*100, 2 - 0, 0 - 0.001*150] = [1.9, -0.1, 2.0, -0.15]."""
    batch = rollouts([300, 100, 200, 50], [True, False, True, False], [0, 0, 0, 0])
    assert ShorterBetter()(batch).tolist() == pytest.approx([1.9, -0.1, 2.0, -0.15])


def test_no_correct_answer_uses_the_group_mean():
    """No correct answer, lengths [100, 200, 600]: SOL = mean = 300;
    rewards -0.001 * [200, 100, 300] = [-0.2, -0.1, -0.3]."""
    batch = rollouts([100, 200, 600], [False] * 3, [0, 0, 0])
    assert sample_optimal_length(batch.lengths, batch.correct, batch.group_index).tolist() == [300.0]
    assert ShorterBetter()(batch).tolist() == pytest.approx([-0.2, -0.1, -0.3])


def test_single_correct_answer_and_groups_from_group_index():
    """Interleaved rows: group 0 = rows 0, 2, 4 (lengths 500, 80, 120; only 500 correct -> SOL 500),
    group 1 = rows 1, 3 (lengths 10, 30, only 30 correct -> SOL 30). alpha 1, beta 0.01:
    row 0: 1 - 0 = 1; row 2: -0.01*420 = -4.2; row 4: -0.01*380 = -3.8;
    row 1: -0.01*20 = -0.2; row 3: 1 - 0 = 1."""
    batch = rollouts([500, 10, 80, 30, 120], [True, False, False, True, False], [0, 1, 0, 1, 0])
    got = ShorterBetter(alpha=1.0, beta=0.01)(batch).tolist()
    assert got == pytest.approx([1.0, -0.2, -4.2, 1.0, -3.8])


def test_ties_and_all_truncated_groups():
    """Group 0: ties, three correct answers of 40 -> SOL 40 -> each exactly alpha = 2.
    Group 1: all truncated at the cap 64, incorrect -> SOL = mean 64 -> 0 each.
    Group 2: truncated (incorrect) 64 next to a correct 20 -> SOL 20 -> [-0.044, 2]."""
    batch = rollouts([40, 40, 40, 64, 64, 64, 20], [True, True, True, False, False, False, True],
                     [0, 0, 0, 1, 1, 2, 2], truncated=[False, False, False, True, True, True, False])
    got = shorter_better_reward(batch.lengths, batch.correct, batch.group_index)
    assert torch.isfinite(got).all()
    assert got.tolist() == pytest.approx([2.0, 2.0, 2.0, 0.0, 0.0, -0.044, 2.0])


def test_bad_settings_name_the_key():
    with pytest.raises(ValueError, match="ShorterBetter: alpha must be a finite number >= 0, got -1"):
        ShorterBetter(alpha=-1)
    with pytest.raises(ValueError, match="ShorterBetter: beta must be a finite number >= 0, got inf"):
        ShorterBetter(beta=float("inf"))
