"""The stage-1 LengthStatsCollector driven with synthetic step summaries (no model).

Covers latest-wins semantics, unsolved handling, band hit rate, coverage, the state_dict
round trip and atomic writes. Run: pytest tests/test_length_stats_callback.py -q
"""

from __future__ import annotations

import json

import pytest
import torch

from lapo_lightning.callbacks.length_stats import LengthStatsCollector
from lapo_lightning.length_table import LengthTable
from lapo_lightning.types import StepSummary


def summary(step: int, problem_ids: list[str], lengths: list[list[int]], correct: list[list[bool]]) -> StepSummary:
    group_size = len(lengths[0])
    n = len(problem_ids) * group_size
    return StepSummary(
        step=step,
        problem_ids=problem_ids,
        group_index=torch.arange(len(problem_ids)).repeat_interleave(group_size),
        lengths=torch.tensor(lengths).flatten(),
        correct=torch.tensor(correct).flatten(),
        truncated=torch.zeros(n, dtype=torch.bool),
        budgets=torch.full((n,), float("nan")),
        targets=torch.full((n,), float("nan")),
        rewards={"total": torch.zeros(n)},
    )


def test_latest_step_wins_and_unsolved_is_marked():
    collector = LengthStatsCollector(path="unused.json")
    collector.update(summary(0, ["a", "b"], [[10, 20, 30, 40], [5, 6, 7, 8]], [[True] * 4, [True, False, False, False]]))
    a = collector.entries["a"]
    assert (a.median, a.count, a.last_step, a.solved) == (25.0, 4, 0, True)
    # P30 / P70 of [10, 20, 30, 40] with linear interpolation: 19 and 31
    assert a.low == pytest.approx(19.0) and a.high == pytest.approx(31.0)
    assert collector.entries["b"].median == 5.0

    # "a" sampled again: solved only once, at length 12 -> latest wins (not a running mean).
    collector.update(summary(3, ["a"], [[12, 50, 60, 70]], [[True, False, False, False]]))
    assert collector.entries["a"].median == 12.0 and collector.entries["a"].last_step == 3
    # ...and unsolved in its latest step -> unsolved, whatever came before.
    collector.update(summary(4, ["a"], [[12, 50, 60, 70]], [[False] * 4]))
    a = collector.entries["a"]
    assert a.median is None and not a.solved and a.count == 0 and a.last_step == 4
    assert collector.entries["b"].solved  # untouched


def test_band_hit_rate_counts_only_groups_with_a_band():
    collector = LengthStatsCollector(path="unused.json")
    # group 0: correct lengths 10, 20, 30, 40 -> band [19, 31]: 20 and 30 inside (2 of 4)
    # group 1: one distinct correct length -> no band, not counted
    hits, eligible = collector.update(
        summary(0, ["a", "b"], [[10, 20, 30, 40], [7, 7, 9, 9]], [[True] * 4, [True, True, False, False]])
    )
    assert (hits, eligible) == (2, 4)
    # group 2: two distinct correct lengths but P30 == P70 (the official lower < upper rule)
    hits, eligible = collector.update(summary(1, ["c"], [[100] * 7 + [103]], [[True] * 8]))
    assert (hits, eligible) == (0, 0)


def test_coverage_uses_the_dataset_ids():
    collector = LengthStatsCollector(path="unused.json")
    collector._problem_ids = ["a", "b", "c", "d"]
    collector.update(summary(0, ["a", "b"], [[3, 4], [3, 4]], [[True, False], [False, False]]))
    assert collector.coverage() == 0.25


def test_state_dict_round_trip_restores_identical_statistics(tmp_path):
    collector = LengthStatsCollector(path=str(tmp_path / "t.json"))
    collector.update(summary(0, ["a", "b"], [[10, 20], [5, 6]], [[True, True], [False, False]]))
    state = json.loads(json.dumps(collector.state_dict()))  # checkpoints must be plain data
    restored = LengthStatsCollector(path=str(tmp_path / "t.json"))
    restored.load_state_dict(state)
    assert restored.entries == collector.entries
    restored.update(summary(1, ["b"], [[9, 11]], [[True, True]]))
    collector.update(summary(1, ["b"], [[9, 11]], [[True, True]]))
    assert restored.entries == collector.entries


def test_written_table_loads_back_and_interrupted_write_keeps_old(tmp_path, monkeypatch):
    path = tmp_path / "table.json"
    collector = LengthStatsCollector(path=str(path))
    collector.metadata = {"model": "tiny:llama"}
    collector.update(summary(0, ["a", "b"], [[10, 20], [5, 6]], [[True, True], [False, False]]))
    collector.write(step=1)
    table = LengthTable.load(path)
    assert table.target("a") == 15 and table.target("b") is None
    assert table.metadata["model"] == "tiny:llama" and table.metadata["step"] == 1

    collector.update(summary(1, ["b"], [[9, 11]], [[True, True]]))

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("killed mid-write")

    monkeypatch.setattr(json, "dump", crash)
    monkeypatch.setattr(json, "dumps", crash)
    with pytest.raises(KeyboardInterrupt):
        collector.write(step=2)
    monkeypatch.undo()
    assert LengthTable.load(path).target("b") is None  # the old table, intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["table.json"]  # no temp file left
