"""L1 / LCPO rewards and target sampling, with hand-computed numbers. Run: pytest tests/methods/test_l1.py -q"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from lapo_lightning.methods.l1 import L1Exact, L1Max, L1Targets, draw_target, l1_exact_reward, l1_max_reward
from lapo_lightning.rewards import score
from lapo_lightning.types import ProblemBatch, RolloutBatch


def rollouts(lengths, correct, group_size, budgets=None, truncated=None, shuffle=None) -> RolloutBatch:
    """Groups in row order (problem i = rows i*G..), or rows permuted by ``shuffle``."""
    n = len(lengths)
    b = n // group_size
    group_index = torch.arange(b).repeat_interleave(group_size)
    lengths, correct = torch.tensor(lengths), torch.tensor(correct)
    truncated = torch.tensor(truncated or [False] * n)
    if shuffle is not None:
        order = torch.tensor(shuffle)
        group_index, lengths, correct, truncated = group_index[order], lengths[order], correct[order], truncated[order]
    width = int(lengths.max())
    mask = torch.arange(width)[None, :] < lengths[:, None]
    problems = ProblemBatch([f"p{i}" for i in range(b)], ["q"] * b, ["1"] * b, budgets=budgets or [None] * b)
    return RolloutBatch(
        problems=problems, group_index=group_index,
        prompt_ids=torch.zeros(n, 1, dtype=torch.long), prompt_mask=torch.ones(n, 1, dtype=torch.bool),
        completion_ids=torch.zeros(n, width, dtype=torch.long), completion_mask=mask,
        texts=[""] * n, truncated=truncated, correct=correct,
    )


def test_exact_by_hand():
    """n = 1000, alpha = 0.0003 (1 token = 0.0003):

    L = 1000 correct -> 1 - 0 = 1.0; L = 2000 correct -> 1 - 0.3 = 0.7;
    L = 500 correct -> 1 - 0.15 = 0.85; L = 1500 wrong -> 0 - 0.15 = -0.15.
    """
    got = l1_exact_reward(torch.tensor([1000, 2000, 500, 1500]), torch.tensor([True, True, True, False]),
                          torch.full((4,), 1000.0))
    torch.testing.assert_close(got, torch.tensor([1.0, 0.7, 0.85, -0.15]))


def test_max_by_hand():
    """n = 1000, alpha = 0.0003, delta = 0.5: clip(0.0003 * (1000 - L) + 0.5, 0, 1).

    L = 1000 -> 0.5; L = 0 -> 0.8; L = 2000 -> 0.2; L = 3000 -> -0.1 -> 0;
    L = 100 wrong -> 0 (a wrong answer earns nothing however short).
    n = 4000, L = 100 -> 0.0003 * 3900 + 0.5 = 1.67 -> clipped to 1.
    """
    got = l1_max_reward(torch.tensor([1000, 0, 2000, 3000, 100, 100]),
                        torch.tensor([True, True, True, True, False, True]),
                        torch.tensor([1000.0] * 5 + [4000.0]))
    torch.testing.assert_close(got, torch.tensor([0.5, 0.8, 0.2, 0.0, 0.0, 1.0]))


def test_reward_classes_read_each_problems_budget_by_group_index():
    """Two problems, G = 3, rows shuffled; budgets p0: 100, p1: 50; alpha 0.01, delta 0.5.

    p0 rows: L 100 correct, 150 correct, 120 wrong; p1 rows: L 50 correct, 70 wrong, 30 correct.
    Exact: p0 -> 1, 1 - 0.5 = 0.5, 0 - 0.2 = -0.2; p1 -> 1, 0 - 0.2 = -0.2, 1 - 0.2 = 0.8.
    Max:   p0 -> 0.5, clip(-0.5 + 0.5) = 0, 0;     p1 -> 0.5, 0, clip(0.2 + 0.5) = 0.7.
    Row order [3, 0, 5, 1, 4, 2] puts these values in that order.
    """
    order = [3, 0, 5, 1, 4, 2]
    batch = rollouts([100, 150, 120, 50, 70, 30], [True, True, False, True, False, True], 3,
                     budgets=[100, 50], shuffle=order)
    exact = torch.tensor([1.0, 0.5, -0.2, 1.0, -0.2, 0.8])[order]
    maxed = torch.tensor([0.5, 0.0, 0.0, 0.5, 0.0, 0.7])[order]
    torch.testing.assert_close(L1Exact(alpha=0.01)(batch), exact)
    torch.testing.assert_close(L1Max(alpha=0.01)(batch), maxed)
    scores = score([L1Exact(alpha=0.01, weight=2.0)], batch)  # passes the reward output checks
    torch.testing.assert_close(scores["total"], 2 * exact)


def test_no_correct_single_correct_ties_and_all_truncated():
    """n = 200 for every problem, alpha 0.001, delta 0.5; G = 3.

    p0 no correct, L 100/200/300:      Exact -0.1, 0, -0.1;      Max 0, 0, 0.
    p1 single correct (L 100):         Exact 1 - 0.1 = 0.9, -0.1, -0.2 (L 100, 300, 400 -> wrong 300, 400);
                                       Max clip(0.1 + 0.5) = 0.6, 0, 0.
    p2 ties, all correct L 250:        Exact 1 - 0.05 = 0.95 x3; Max clip(-0.05 + 0.5) = 0.45 x3.
    p3 all truncated at cap 300, wrong: Exact 0 - 0.1 = -0.1 x3; Max 0 x3 (truncation is not read:
                                       the verifier already marks unfinished answers wrong).
    """
    lengths = [100, 200, 300, 100, 300, 400, 250, 250, 250, 300, 300, 300]
    correct = [False, False, False, True, False, False, True, True, True, False, False, False]
    truncated = [False] * 9 + [True] * 3
    batch = rollouts(lengths, correct, 3, budgets=[200] * 4, truncated=truncated)
    torch.testing.assert_close(L1Exact(alpha=0.001)(batch), torch.tensor(
        [-0.1, 0.0, -0.1, 0.9, -0.1, -0.2, 0.95, 0.95, 0.95, -0.1, -0.1, -0.1]))
    torch.testing.assert_close(L1Max(alpha=0.001)(batch), torch.tensor(
        [0.0, 0.0, 0.0, 0.6, 0.0, 0.0, 0.45, 0.45, 0.45, 0.0, 0.0, 0.0]))


def test_no_stated_target_scores_accuracy_or_raises():
    """p0 has budget 100, p1 none (NaN); alpha 0.01. p1 rows score 1[correct] only:
    Exact p0: L 150 correct -> 0.5, L 100 wrong -> 0; p1: L 500 correct -> 1, L 10 wrong -> 0.
    With missing="error" the reward names the problem and the callback to add.
    """
    batch = rollouts([150, 100, 500, 10], [True, False, True, False], 2, budgets=[100, None])
    torch.testing.assert_close(L1Exact(alpha=0.01)(batch), torch.tensor([0.5, 0.0, 1.0, 0.0]))
    torch.testing.assert_close(L1Max(alpha=0.01)(batch), torch.tensor([0.0, 0.0, 1.0, 0.0]))
    with pytest.raises(ValueError, match="problem 'p1' states no target length.*L1Targets"):
        L1Max(missing="error")(batch)


def test_bad_settings_are_rejected():
    with pytest.raises(ValueError, match="L1Exact: missing must be one of"):
        L1Exact(missing="zero")
    with pytest.raises(ValueError, match="L1Max: alpha must be >= 0"):
        L1Max(alpha=-0.1)
    with pytest.raises(ValueError, match=r"L1Targets\]: need 1 <= min_tokens <= max_tokens"):
        L1Targets(min_tokens=500, max_tokens=100)


def test_targets_are_deterministic_in_range_and_vary_by_step_and_problem():
    """Same (seed, problem, step) -> same target across fresh callbacks (a resumed run); all draws
    lie in [100, 110] and, over 4000 draws, every one of its 11 values occurs (uniform: ~364 each)."""
    ids = [f"p{i}" for i in range(40)]

    def drawn(cb, step):
        batch = ProblemBatch(ids, ["q"] * 40, ["1"] * 40)
        cb.on_train_batch_start(SimpleNamespace(global_step=step), None, batch, 0)
        return batch.budgets

    first = [drawn(L1Targets(100, 110, seed=7), s) for s in range(100)]
    again = [drawn(L1Targets(100, 110, seed=7), s) for s in (0, 57, 99)]
    assert again == [first[0], first[57], first[99]]
    values = [v for step in first for v in step]
    assert all(isinstance(v, int) and 100 <= v <= 110 for v in values)
    counts = {v: values.count(v) for v in range(100, 111)}
    assert min(counts.values()) > 250 and max(counts.values()) < 480, counts
    assert first[0] != first[1]  # a new step draws new targets
    assert len(set(first[0])) > 5  # problems differ within a step
    assert drawn(L1Targets(100, 110, seed=8), 0) != first[0]  # the seed matters


def test_single_value_range_and_draw_target():
    assert {draw_target(0, f"p{i}", i, 256, 256) for i in range(20)} == {256}
    assert draw_target(3, "abc", 12, 1, 4000) == draw_target(3, "abc", 12, 1, 4000)
