"""Kimi k1.5 length penalty on hand-built rollout batches. Run: pytest tests/methods/test_kimi.py -q"""

from __future__ import annotations

import pytest
import torch

from lapo_lightning.methods.kimi import KimiLengthPenalty, kimi_length_reward
from lapo_lightning.rewards import Accuracy, score
from method_batches import rollouts


def test_correct_get_lambda_incorrect_only_lose():
    """One group, lengths [100, 200, 300, 150], L_min 100, L_max 300, span 200:
    lambda = 0.5 - (L - 100)/200 = [0.5, 0.0, -0.5, 0.25].
    correct [T, T, F, F] -> [0.5, 0.0, min(0, -0.5) = -0.5, min(0, 0.25) = 0.0]."""
    batch = rollouts([100, 200, 300, 150], [True, True, False, False], [0, 0, 0, 0])
    assert KimiLengthPenalty()(batch).tolist() == pytest.approx([0.5, 0.0, -0.5, 0.0])


def test_groups_come_from_group_index_not_row_order():
    """Rows interleave two groups: group 0 = rows 0, 2 (lengths 10, 30), group 1 = rows 1, 3
    (lengths 1000, 2000). Group 0: lambda [0.5, -0.5]; group 1: lambda [0.5, -0.5]. All correct.
    Pooling the rows would give L_min 10, L_max 2000 and e.g. row 1 = 0.5 - 990/1990 = 0.0025."""
    batch = rollouts([10, 1000, 30, 2000], [True] * 4, [0, 1, 0, 1])
    assert KimiLengthPenalty()(batch).tolist() == pytest.approx([0.5, 0.5, -0.5, -0.5])


def test_no_correct_answer_only_penalties():
    """No correct answer, lengths [40, 60, 80]: lambda [0.5, 0.0, -0.5] -> min(0, .) = [0, 0, -0.5]."""
    batch = rollouts([40, 60, 80], [False] * 3, [0, 0, 0])
    assert kimi_length_reward(batch.lengths, batch.correct, batch.group_index).tolist() == [0.0, 0.0, -0.5]


def test_single_correct_answer():
    """Only the longest (80 of [40, 60, 80]) is correct: lambda -0.5 -> it gets -0.5; the
    incorrect 40 and 60 have lambda 0.5 and 0.0 -> min(0, .) = 0."""
    batch = rollouts([40, 60, 80], [False, False, True], [0, 0, 0])
    assert KimiLengthPenalty()(batch).tolist() == [0.0, 0.0, -0.5]


def test_ties_and_all_truncated_groups_get_zero_not_nan():
    """Group 0: all lengths 50 (ties) -> L_max == L_min -> lambda 0 for all (documented choice).
    Group 1: all truncated at the cap 64 and incorrect -> same lengths -> 0.
    Group 2: two tied shortest 20, 20 and one 40, all correct: lambda [0.5, 0.5, -0.5]."""
    batch = rollouts([50, 50, 64, 64, 20, 20, 40], [True, False, False, False, True, True, True],
                     [0, 0, 1, 1, 2, 2, 2], truncated=[False, False, True, True, False, False, False])
    got = KimiLengthPenalty()(batch)
    assert torch.isfinite(got).all()
    assert got.tolist() == [0.0, 0.0, 0.0, 0.0, 0.5, 0.5, -0.5]


def test_weight_scales_the_total_next_to_accuracy():
    """Lengths [10, 20] both correct: accuracy [1, 1], Kimi [0.5, -0.5], weight 0.4
    -> total [1 + 0.2, 1 - 0.2] = [1.2, 0.8]."""
    scores = score([Accuracy(), KimiLengthPenalty(weight=0.4)], rollouts([10, 20], [True, True], [0, 0]))
    assert scores["kimi_length_penalty"].tolist() == [0.5, -0.5]
    assert scores["total"].tolist() == pytest.approx([1.2, 0.8])
