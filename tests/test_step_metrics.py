"""The per-batch metrics, worked out by hand on two problems x two completions."""

from __future__ import annotations

import math

import pytest
import torch

from lapo_lightning.step_metrics import logged_mean, step_metrics
from lapo_lightning.types import ProblemBatch, RolloutBatch, StepSummary


def test_step_metrics_by_hand():
    group_index = torch.tensor([0, 0, 1, 1])
    completion_mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0], [1, 1, 1, 0]], dtype=torch.bool)
    rollouts = RolloutBatch(problems=ProblemBatch(["a", "b"], ["q", "r"], ["1", "2"]), group_index=group_index,
                            prompt_ids=torch.zeros(4, 3, dtype=torch.long), prompt_mask=torch.ones(4, 3, dtype=torch.bool),
                            completion_ids=torch.zeros(4, 4, dtype=torch.long), completion_mask=completion_mask,
                            texts=[""] * 4, truncated=torch.tensor([False, True, False, False]),
                            parsed=torch.tensor([True, True, False, True]), unclosed=torch.tensor([False, True, False, False]))
    total = torch.tensor([1.0, 0.0, 0.5, 0.5])  # problem b: equal rewards, zero spread
    summary = StepSummary(step=0, problem_ids=["a", "b"], group_index=group_index, lengths=completion_mask.sum(1),
                          correct=torch.tensor([True, False, False, False]), truncated=rollouts.truncated,
                          budgets=torch.full((4,), math.nan), targets=torch.full((4,), math.nan),
                          rewards={"accuracy": torch.tensor([1.0, 0, 0, 0]), "total": total})
    metrics = step_metrics(summary, rollouts, {"loss/total": 0.25}, gen_seconds=2.0, step_seconds=6.0, passes=2,
                           lr=1e-5)
    assert metrics["accuracy"] == 0.25 and metrics["loss/total"] == 0.25 and metrics["lr"] == 1e-5
    assert metrics["length/mean"] == 2.5 and metrics["length/mean_correct"] == 2.0
    assert metrics["length/mean_incorrect"] == pytest.approx((4 + 1 + 3) / 3)
    assert metrics["length/group_std"] == torch.tensor([2 ** 0.5, 2 ** 0.5]).mean().item()  # std of {2, 4}, {1, 3}
    assert metrics["adv/frac_zero_std"] == 0.5 and metrics["verify/miss_rate"] == 0.25
    assert metrics["length/truncation_rate"] == 0.25 and metrics["verify/unclosed_think_rate"] == 0.25
    assert metrics["perf/gen_tokens_per_s"] == 5.0  # 10 tokens in 2 s
    assert metrics["perf/train_tokens_per_s"] == (12 + 10) * 2 / 4.0  # two passes over 22 tokens in 4 s
    assert all(isinstance(value, float) for value in metrics.values())


def test_logged_mean_of_no_rows_is_nan():
    assert math.isnan(float(logged_mean(torch.tensor([1.0, 2.0]), torch.tensor([False, False]))))
    assert float(logged_mean(torch.tensor([1.0, 3.0]), torch.tensor([True, True]))) == 2.0
