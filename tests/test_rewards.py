"""Reward plugins on hand-built rollout batches. Run: pytest tests/test_rewards.py -q"""

from __future__ import annotations

import pytest
import torch

from lapo_lightning.rewards import Accuracy, BudgetGaussian, LengthBand, RegexMatch, Reward, ThinkFormat, score
from lapo_lightning.types import ProblemBatch, RolloutBatch


def rollouts(lengths: list[int], correct: list[bool], group_size: int, texts=None, targets=None) -> RolloutBatch:
    n = len(lengths)
    b = n // group_size
    width = max(lengths)
    mask = torch.arange(width)[None, :] < torch.tensor(lengths)[:, None]  # [N, T]
    problems = ProblemBatch([f"p{i}" for i in range(b)], ["q"] * b, ["1"] * b,
                            targets=targets or [None] * b)
    return RolloutBatch(
        problems=problems, group_index=torch.arange(b).repeat_interleave(group_size),
        prompt_ids=torch.zeros(n, 1, dtype=torch.long), prompt_mask=torch.ones(n, 1, dtype=torch.bool),
        completion_ids=torch.zeros(n, width, dtype=torch.long), completion_mask=mask,
        texts=texts or [""] * n, truncated=torch.zeros(n, dtype=torch.bool), correct=torch.tensor(correct),
    )


def test_accuracy_and_weighted_total():
    batch = rollouts([3, 4, 5, 6], [True, False, True, True], group_size=2,
                     texts=["a1", "b", "c2", "d"])
    scores = score([Accuracy(), RegexMatch(r"\d", weight=0.5, name="digit")], batch)
    assert scores["accuracy"].tolist() == [1.0, 0.0, 1.0, 1.0]
    assert scores["digit"].tolist() == [1.0, 0.0, 1.0, 0.0]
    assert scores["total"].tolist() == [1.5, 0.0, 1.5, 1.0]


def test_duplicate_names_are_rejected():
    with pytest.raises(ValueError, match="two rewards are named 'accuracy'"):
        score([Accuracy(), Accuracy()], rollouts([1, 2], [True, True], 2))


def test_think_format():
    texts = [
        " plan </think> so \\boxed{3}",          # good
        " plan so \\boxed{3}",                    # never closes the think block
        " a </think> b </think> \\boxed{3}",      # closes twice
        " <think> again </think> \\boxed{3}",     # opens a second block
        " plan </think> 3",                       # no boxed answer
    ]
    batch = rollouts([1] * 5, [True] * 5, 5, texts=texts)
    assert ThinkFormat()(batch).tolist() == [1.0, 0.0, 0.0, 0.0, 0.0]


def test_length_band_uses_the_group_band():
    # one group of 4 correct: band [19, 31] (P30/P70 of 10, 20, 30, 40); decay 10
    batch = rollouts([10, 20, 30, 40], [True] * 4, 4)
    assert LengthBand(decay=10)(batch).tolist() == pytest.approx([0.1, 1.0, 1.0, 0.1])


def test_budget_gaussian_targets_and_group_median_fallback():
    # problem 0 has target 10; problem 1 has none -> centred on its median correct length (20)
    batch = rollouts([10, 22, 20, 26], [True, True, True, False], 2, targets=[10.0, None])
    got = BudgetGaussian(sigma=4.0)(batch)
    expected = torch.tensor([1.0, torch.exp(torch.tensor(-144 / 32.0)).item(), 1.0, 0.0])
    torch.testing.assert_close(got, expected)


def test_bad_settings_are_rejected():
    with pytest.raises(ValueError, match="decay"):
        LengthBand(decay=0)
    with pytest.raises(ValueError, match="sigma"):
        BudgetGaussian(sigma=-1)
    with pytest.raises(ValueError, match="invalid pattern"):
        RegexMatch("(")
    for weight in (float("nan"), float("inf")):  # weight x reward would be NaN/inf in every total
        with pytest.raises(ValueError, match=f"Accuracy: weight must be a finite number, got {weight}"):
            Accuracy(weight=weight)


def test_custom_reward_plugin_needs_only_call():
    class Brevity(Reward):
        def __call__(self, batch):
            return -batch.lengths.float()

    reward = Brevity(weight=0.01)
    assert reward.name == "brevity"
    assert score([reward], rollouts([2, 4], [True, True], 2))["total"].tolist() == pytest.approx([-0.02, -0.04])
