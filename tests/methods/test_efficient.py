"""Efficient-reasoning reward (Arora & Zanette) on hand-built rollout batches. Run: pytest tests/methods/test_efficient.py -q"""

from __future__ import annotations

import math

import pytest
import torch

from lapo_lightning.methods.efficient import EfficientReasoning, efficient_reasoning_reward
from method_batches import rollouts


def sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


def test_three_correct_one_incorrect():
    """Lengths [100, 200, 300, 50], correct [T, T, T, F], alpha 0.2.
    Correct lengths 100, 200, 300: mean 200, population std sqrt((100^2 + 0 + 100^2)/3)
    = 81.65, z = [-1.2247, 0, +1.2247], sigmoid = [0.2271, 0.5, 0.7729]
    -> [1 - 0.2*0.2271, 1 - 0.1, 1 - 0.2*0.7729, 0] = [0.95458, 0.9, 0.84542, 0].
    The incorrect 50 is not in the mean/std (with it: mean 162.5) and scores 0."""
    batch = rollouts([100, 200, 300, 50], [True, True, True, False], [0, 0, 0, 0])
    got = EfficientReasoning()(batch).tolist()
    assert got == pytest.approx([0.9545795, 0.9, 0.8454205, 0.0], abs=1e-6)


def test_unbiased_std_option():
    """Same group, unbiased: std sqrt(20000/2) = 100, z = [-1, 0, 1], sigmoid(1) = 0.731059
    -> [1 - 0.2*0.268941, 0.9, 1 - 0.2*0.731059] = [0.946212, 0.9, 0.853788, 0]."""
    batch = rollouts([100, 200, 300, 50], [True, True, True, False], [0, 0, 0, 0])
    got = EfficientReasoning(unbiased=True)(batch).tolist()
    assert got == pytest.approx([0.9462117, 0.9, 0.8537883, 0.0], abs=1e-6)


def test_groups_come_from_group_index_and_alpha_scales():
    """Interleaved rows: group 0 = rows 0, 2 (lengths 10, 20, both correct), group 1 = rows 1, 3
    (lengths 1000, 3000, both correct). Each group: mean at the midpoint, population std = half
    the gap, so z = [-1, +1] in both; alpha 0.4 -> [1 - 0.4*sigmoid(-1), 1 - 0.4*sigmoid(1)]
    = [0.892423, 0.707577] per group, whatever the absolute lengths."""
    batch = rollouts([10, 1000, 20, 3000], [True] * 4, [0, 1, 0, 1])
    low, high = 1 - 0.4 * sigmoid(-1), 1 - 0.4 * sigmoid(1)
    assert EfficientReasoning(alpha=0.4)(batch).tolist() == pytest.approx([low, low, high, high], abs=1e-6)


def test_no_correct_single_correct_ties_and_all_truncated():
    """Group 0: no correct answer -> all 0. Group 1: a single correct answer (length 70), std 0
    -> z taken as 0 -> 1 - 0.2*0.5 = 0.9; the incorrect 30 gets 0. Group 2: ties, three correct
    answers of length 40 -> std 0 -> 0.9 each. Group 3: all truncated at the cap and incorrect
    -> 0 each. Nothing is NaN."""
    batch = rollouts(
        [10, 20, 70, 30, 40, 40, 40, 64, 64],
        [False, False, True, False, True, True, True, False, False],
        [0, 0, 1, 1, 2, 2, 2, 3, 3],
        truncated=[False] * 7 + [True, True],
    )
    got = efficient_reasoning_reward(batch.lengths, batch.correct, batch.group_index, alpha=0.2)
    assert torch.isfinite(got).all()
    assert got.tolist() == pytest.approx([0.0, 0.0, 0.9, 0.0, 0.9, 0.9, 0.9, 0.0, 0.0])
    unbiased = efficient_reasoning_reward(batch.lengths, batch.correct, batch.group_index, 0.2, unbiased=True)
    assert unbiased.tolist() == pytest.approx(got.tolist())  # count - 1 = 0 for the single answer: still 0.9


def test_bad_alpha_names_the_key():
    for alpha in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match=r"EfficientReasoning: alpha must be a number in \[0, 1\]"):
            EfficientReasoning(alpha=alpha)
