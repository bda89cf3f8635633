"""Bootstrap intervals over problems (lapo_lightning/evaluation/intervals.py), on cases small
enough to work out by hand."""

from __future__ import annotations

import pytest
import torch

from lapo_lightning.evaluation.intervals import (excludes_zero, interval, interval_fields, paired_difference,
                                                 per_problem, resample_indices)
from lapo_lightning.evaluation.records import SampleRecord


def test_one_right_and_one_wrong_problem_spans_0_to_1():
    """Resamples of 2 problems hold the right one 0, 1 or 2 times (probability 1/4, 1/2, 1/4):
    the 2.5th and 97.5th percentiles are 0 and 1, the median 0.5."""
    sums = per_problem({"right": [1, 1, 1, 1], "wrong": [0, 0, 0, 0]})
    assert sums.tolist() == [[4.0, 4.0], [0.0, 4.0]]
    assert interval(sums) == [0.0, 1.0]


def test_problems_that_all_agree_have_no_spread():
    assert interval(per_problem({p: [1, 0] for p in "abcdef"})) == [0.5, 0.5]
    assert interval(per_problem({})) is None


def test_samples_of_a_problem_stay_together():
    """A problem with more samples weighs more: the statistic is the mean over all samples."""
    index = resample_indices(2, 1)
    sums = per_problem({"a": [1.0] * 3, "b": [0.0]})
    chosen = index[0].tolist()
    expected = sum(3.0 if i == 0 else 0.0 for i in chosen) / sum(3 if i == 0 else 1 for i in chosen)
    assert interval(sums, resamples=1) == [pytest.approx(expected)] * 2


def test_the_interval_covers_the_binomial_spread():
    """60 problems, one sample each, 30 right: the bootstrap's 95% interval is close to the
    normal approximation 0.5 +- 1.96 * sqrt(0.25 / 60) = [0.373, 0.627]."""
    low, high = interval(per_problem({f"p{i}": [float(i % 2)] for i in range(60)}))
    assert low == pytest.approx(0.373, abs=0.03) and high == pytest.approx(0.627, abs=0.03)


def test_paired_is_narrower_than_unpaired_when_models_agree_on_most_problems():
    """Two models right on the same 25 of 50 problems, the model also on 6 more: the paired
    difference is 6/50 with an interval far inside what two unpaired intervals allow. Only the
    6 problems where they differ move it, so it is never below 0; a resample without any of
    them (probability (44/50)^50, under 0.2%) gives 0."""
    base = {f"p{i}": [1.0 if i < 25 else 0.0] for i in range(50)}
    model = {f"p{i}": [1.0 if i < 31 else 0.0] for i in range(50)}
    point, low, high = paired_difference(per_problem(model), per_problem(base))
    assert point == pytest.approx(0.12)
    assert 0 < low <= 0.12 <= high
    (ml, mh), (bl, bh) = interval(per_problem(model)), interval(per_problem(base))
    assert high - low < 0.5 * ((mh - ml) + (bh - bl))
    assert excludes_zero([point, low, high]) and not excludes_zero([0.01, -0.02, 0.04])


def test_report_fields_per_cell_with_the_baseline_difference():
    def record(model, pid, sample, correct, length):
        return SampleRecord(model, "none", "b", pid, sample, "1", correct, True, length, False)

    records = [record("base", p, s, p == "p0", 100) for p in ("p0", "p1") for s in range(2)]
    records += [record("lapo", p, s, True, 60) for p in ("p0", "p1") for s in range(2)]
    fields = interval_fields(records, baseline="base")
    assert fields[("base", "none", "b")] == {"pass@1_ci": [0.0, 1.0], "tokens_mean_ci": [100.0, 100.0]}
    lapo = fields[("lapo", "none", "b")]
    assert lapo["pass@1_ci"] == [1.0, 1.0] and lapo["vs_baseline"]["model"] == "base"
    assert lapo["vs_baseline"]["tokens_mean"] == [-40.0, -40.0, -40.0]
    assert lapo["vs_baseline"]["pass@1"][0] == pytest.approx(0.5) and lapo["vs_baseline"]["pass@1"][1:] == [0.0, 1.0]


def test_a_stated_budget_adds_the_adherence_interval_and_its_paired_difference():
    """|L - n| per problem, worked out by hand: n 50; base lengths 80 and 40 (errors 30, 10),
    stage 2 lengths 55 and 50 (errors 5, 0): intervals span the problems' errors, and the paired
    difference is -17.5 with every resample between -25 (only p0) and -10 (only p1)."""
    def record(model, pid, length, budget=50, condition="50"):
        return SampleRecord(model, condition, "b", pid, 0, "1", True, True, length, False, budget=budget)

    records = [record("base", "p0", 80), record("base", "p1", 40), record("s2", "p0", 55), record("s2", "p1", 50)]
    records += [record("s2", p, 70, budget=None, condition="none") for p in ("p0", "p1")]
    fields = interval_fields(records, baseline="base")
    assert fields[("base", "50", "b")]["budget_abs_error_ci"] == [10.0, 30.0]
    stage2 = fields[("s2", "50", "b")]
    assert stage2["budget_abs_error_ci"] == [0.0, 5.0]
    point, low, high = stage2["vs_baseline"]["budget_abs_error"]
    assert point == pytest.approx(-17.5) and -25.0 <= low <= high <= -10.0
    assert "budget_abs_error_ci" not in fields[("s2", "none", "b")]  # no budget stated, nothing to adhere to


def test_levels_get_their_own_intervals_and_paired_differences():
    """Level 1: both models right on p0 and p1 (lengths 10 and 20 against 30 and 40); level 2:
    the base right on p2 only, the other model on neither (lengths 50 against 90)."""
    def record(model, pid, level, correct, length):
        return SampleRecord(model, "none", "b", pid, 0, "1", correct, True, length, False, level=level)

    records = [record("base", "p0", 1, True, 30), record("base", "p1", 1, True, 40),
               record("base", "p2", 2, True, 90), record("base", "p3", 2, False, 90)]
    records += [record("m", "p0", 1, True, 10), record("m", "p1", 1, True, 20),
                record("m", "p2", 2, False, 50), record("m", "p3", 2, False, 50)]
    fields = interval_fields(records, baseline="base")
    base, other = fields[("base", "none", "b")]["by_level_ci"], fields[("m", "none", "b")]["by_level_ci"]
    assert list(base) == ["1", "2"] and base["1"] == {"pass@1_ci": [1.0, 1.0], "tokens_mean_ci": [30.0, 40.0]}
    assert "vs_baseline" not in base["2"] and base["2"]["pass@1_ci"] == [0.0, 1.0]
    assert other["1"]["vs_baseline"]["pass@1"] == [0.0, 0.0, 0.0]
    assert other["1"]["vs_baseline"]["tokens_mean"] == [-20.0, -20.0, -20.0]
    assert other["2"]["vs_baseline"]["tokens_mean"] == [-40.0, -40.0, -40.0]
    point, low, high = other["2"]["vs_baseline"]["pass@1"]
    assert point == pytest.approx(-0.5) and [low, high] == [-1.0, 0.0]


def test_the_same_seed_gives_the_same_interval():
    sums = per_problem({f"p{i}": [float(i % 3 == 0), 1.0] for i in range(30)})
    assert interval(sums) == interval(sums)
    assert not torch.equal(resample_indices(30, 5, seed=0), resample_indices(30, 5, seed=1))
