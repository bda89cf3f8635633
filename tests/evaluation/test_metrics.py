"""Metric maths checked by hand: Pass@1, unbiased pass@k, token means, rates, levels, budgets.

Run: pytest tests/evaluation/test_metrics.py -q   (CPU, well under a second)
"""

from __future__ import annotations

import math

import pytest
import torch

from lapo_lightning.evaluation.metrics import (
    BenchmarkMetrics, BudgetAbsError, LevelBreakdown, MeanTokens, Outcomes, Pass1, PassAtK, TruncationRate,
    UnparseableRate, pass_at_k, pass_ks,
)

NAN = float("nan")


def outcomes(correct, lengths, groups, truncated=None, parsed=None, levels=None, budgets=None,
             own_budgets=None) -> Outcomes:
    n = len(correct)
    return Outcomes(
        correct=torch.tensor(correct, dtype=torch.bool),
        lengths=torch.tensor(lengths),
        truncated=torch.tensor(truncated or [False] * n, dtype=torch.bool),
        parsed=torch.tensor(parsed or [True] * n, dtype=torch.bool),
        group_index=torch.tensor(groups),
        levels=torch.tensor(levels or [0] * n),
        budgets=torch.tensor(budgets or [NAN] * n),
        own_budgets=torch.tensor(own_budgets or [NAN] * n),
    )


# Two problems x 4 samples: problem 0 has 2 correct (lengths 10, 30), problem 1 has 1 (length 50).
TWO_BY_FOUR = outcomes(
    correct=[1, 0, 1, 0, 0, 1, 0, 0],
    lengths=[10, 20, 30, 40, 50, 50, 70, 90],
    groups=[0, 0, 0, 0, 1, 1, 1, 1],
    truncated=[0, 0, 0, 0, 0, 0, 0, 1],
    parsed=[1, 1, 1, 0, 1, 1, 0, 0],
    levels=[2, 2, 2, 2, 5, 5, 5, 5],
)


def test_pass_at_k_by_hand():
    assert pass_at_k(4, 2, 1) == pytest.approx(0.5)  # k=1 is c/n
    assert pass_at_k(4, 2, 2) == pytest.approx(1 - 1 / 6)  # 1 - C(2,2)/C(4,2)
    assert pass_at_k(4, 1, 2) == pytest.approx(1 - 3 / 6)  # 1 - C(3,2)/C(4,2)
    assert pass_at_k(4, 3, 2) == 1.0  # n - c < k: every pair holds a correct sample
    assert pass_at_k(4, 0, 4) == 0.0
    assert pass_at_k(32, 5, 8) == pytest.approx(1 - math.comb(27, 8) / math.comb(32, 8))
    with pytest.raises(ValueError):
        pass_at_k(2, 1, 3)


def test_pass_ks():
    assert pass_ks(1) == [1] and pass_ks(4) == [1, 2, 4] and pass_ks(32) == [1, 2, 4, 8, 16, 32]
    assert pass_ks(6) == [1, 2, 4, 6]


def test_pass1_is_mean_accuracy_over_samples_and_matches_pass_at_1():
    pass1, at1 = Pass1(), PassAtK(1)
    pass1.update(TWO_BY_FOUR)
    at1.update(TWO_BY_FOUR)
    assert float(pass1.compute()) == pytest.approx(3 / 8)
    assert float(at1.compute()) == pytest.approx((2 / 4 + 1 / 4) / 2)  # equal N: the same number


def test_pass_at_k_is_averaged_per_problem():
    metric = PassAtK(2)
    metric.update(TWO_BY_FOUR)
    assert float(metric.compute()) == pytest.approx(((1 - 1 / 6) + (1 - 3 / 6)) / 2)
    with pytest.raises(ValueError, match="pass@8"):
        PassAtK(8).update(TWO_BY_FOUR)


def test_token_means_truncation_and_unparseable():
    every, correct_only = MeanTokens(), MeanTokens(correct_only=True)
    truncation, unparseable = TruncationRate(), UnparseableRate()
    for metric in (every, correct_only, truncation, unparseable):
        metric.update(TWO_BY_FOUR)
    assert float(every.compute()) == pytest.approx(360 / 8)
    assert float(correct_only.compute()) == pytest.approx((10 + 30 + 50) / 3)
    assert float(truncation.compute()) == pytest.approx(1 / 8)
    assert float(unparseable.compute()) == pytest.approx(3 / 8)
    with pytest.warns(UserWarning, match="before the ``update``"):
        assert math.isnan(float(MeanTokens(correct_only=True).compute()))  # nothing seen: NaN, not 0


def test_budget_adherence_ignores_samples_without_a_budget():
    metric = BudgetAbsError()
    metric.update(outcomes([1, 0, 1], [100, 300, 50], [0, 0, 1], budgets=[200.0, 200.0, NAN]))
    assert float(metric.compute()) == pytest.approx((100 + 100) / 2)


def test_level_breakdown():
    metric = LevelBreakdown(num_levels=5)
    metric.update(TWO_BY_FOUR)
    metric.update(outcomes([1], [7], [0], levels=[9]))  # out of range -> level 0
    out = metric.compute()
    assert out["samples"].tolist() == [1, 0, 4, 0, 0, 4]
    assert float(out["pass@1"][2]) == pytest.approx(0.5) and float(out["pass@1"][5]) == pytest.approx(0.25)
    assert float(out["tokens_mean"][2]) == pytest.approx(25.0) and float(out["tokens_mean"][5]) == pytest.approx(65.0)


def test_states_merge_like_processes_do():
    """Two 'processes' each see one problem; merged states give the single-process numbers."""
    first, second, together = BenchmarkMetrics(4), BenchmarkMetrics(4), BenchmarkMetrics(4)
    half = [TWO_BY_FOUR.group_index == g for g in (0, 1)]
    for metrics, keep in ((first, half[0]), (second, half[1])):
        metrics.update(Outcomes(**{k: v[keep] for k, v in vars(TWO_BY_FOUR).items()}))
    together.update(TWO_BY_FOUR)
    for name, metric in first.scalars.items():
        metric.merge_state(second.scalars[name])
    first.counts.merge_state(second.counts)
    first.levels.merge_state(second.levels)
    assert first.compute() == together.compute()


def test_benchmark_metrics_compute_is_plain_json():
    metrics = BenchmarkMetrics(4)
    metrics.update(TWO_BY_FOUR)
    out = metrics.compute()
    assert out["problems"] == 2 and out["samples"] == 8
    assert set(out) >= {"pass@1", "pass@2", "pass@4", "tokens_mean", "tokens_correct_mean", "truncation_rate",
                        "unparseable_rate", "budget_mean", "budget_abs_error", "by_level"}
    assert out["pass@4"] == pytest.approx(1.0) and out["budget_abs_error"] is None  # no budget stated: None
    assert out["by_level"] == {"2": {"samples": 4, "pass@1": 0.5, "tokens_mean": 25.0},
                               "5": {"samples": 4, "pass@1": 0.25, "tokens_mean": 65.0}}


def test_own_budget_rate_and_adherence_count_only_samples_without_a_prompt_budget():
    # 4 samples: two with no prompt budget state their own (40 -> |50 - 40| = 10, 30 -> |20 - 30| = 10),
    # one states none, one had its budget in the prompt (never counted as its own).
    o = outcomes(correct=[1, 1, 0, 1], lengths=[50, 20, 70, 33], groups=[0, 0, 0, 0],
                 budgets=[NAN, NAN, NAN, 32.0], own_budgets=[40.0, 30.0, NAN, NAN])
    metrics = BenchmarkMetrics(4)
    metrics.update(o)
    out = metrics.compute()
    assert out["own_budget_rate"] == pytest.approx(2 / 3) and out["own_budget_abs_error"] == pytest.approx(10.0)
    assert out["budget_abs_error"] == pytest.approx(1.0)
    none = BenchmarkMetrics(2)
    none.update(outcomes(correct=[1, 0], lengths=[5, 6], groups=[0, 0], budgets=[1.0, 2.0]))
    assert none.compute()["own_budget_rate"] is None and none.compute()["own_budget_abs_error"] is None
