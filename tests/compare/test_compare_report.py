"""The comparison report from evaluation results (lapo_lightning/compare/report.py)."""

from __future__ import annotations

import json

import pytest

from lapo_lightning.compare.report import budget_cells, collect_rows, row_label, write_report


def _result(model, condition, acc, tokens, budget=None, abs_error=None, levels=(10.0, 20.0)):
    return {"model": model, "condition": condition, "benchmark": "sums", "budget": budget, "problems": 5,
            "samples_per_problem": 4, "pass@1": acc, "tokens_mean": tokens, "truncation_rate": 0.25,
            "budget_mean": budget, "budget_abs_error": abs_error,
            "by_level": {str(i): {"pass@1": acc, "tokens_mean": t} for i, t in enumerate(levels, start=1)}}


def _report(folder, *results):
    folder.mkdir(parents=True)
    (folder / "results.json").write_text(json.dumps({"settings": {"generation": {"temperature": 1.0}},
                                                     "results": list(results)}))
    return folder


def test_labels_name_the_budget_only_when_one_was_stated():
    assert row_label("acc-only", "none") == "acc-only"
    assert row_label("l1-max", "32") == "l1-max @ n=32"
    assert row_label("lapo-stage2", "table") == "lapo-stage2 @ table"


def test_rows_come_from_every_report_and_a_shared_cell_counts_once(tmp_path):
    a = _report(tmp_path / "a", _result("base", "none", 0.5, 40.0), _result("lapo", "none", 0.6, 30.0))
    b = _report(tmp_path / "b", _result("lapo", "none", 0.1, 99.0), _result("lapo", "32", 0.55, 31.0, 32, 4.0))
    rows = collect_rows([a, b])
    assert [(r["label"], r["pass@1"]) for r in rows] == [("base", 0.5), ("lapo", 0.6), ("lapo @ n=32", 0.55)]


def test_a_missing_evaluation_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nowhere[/\\]results.json is missing"):
        collect_rows([tmp_path / "nowhere"])


def test_report_table_marks_the_front_and_times_every_phase(tmp_path):
    # Points (tokens, Pass@1): base (40, .5), acc (35, .7), kimi (25, .6), l1 @ 16 (30, .55).
    # acc-only dominates base; kimi is cheaper than acc-only; l1 @ 16 loses to kimi on both.
    # acc carries what lapo eval writes: 95% intervals and the paired difference to the baseline.
    acc = _result("acc", "none", 0.7, 35.0) | {
        "pass@1_ci": [0.6, 0.8], "tokens_mean_ci": [33.0, 37.0],
        "vs_baseline": {"model": "base", "pass@1": [0.2, 0.05, 0.35], "tokens_mean": [-5.0, -8.0, 1.0]}}
    a = _report(tmp_path / "eval", _result("base", "none", 0.5, 40.0), acc, _result("kimi", "none", 0.6, 25.0))
    b = _report(tmp_path / "eval_budgets", _result("l1", "16", 0.55, 30.0, budget=16, abs_error=14.0))
    timings = {"sft": {"seconds": 300.0, "this_run": False, "smoke": False},
               "kimi": {"seconds": 120.4, "this_run": True, "smoke": False}}
    out = write_report(tmp_path / "report", [a, b], timings, "Methods", notes="Same steps for all.")
    text = (tmp_path / "report" / "report.md").read_text()
    assert text == out["markdown"] and text.startswith("# Methods\n\nSame steps for all.\n")
    assert "## sums: 5 problems, 4 samples each, temperature 1.0" in text
    assert "| `base` | 50.0 | – | 40.0 | – | – | – | 10.0 | 20.0 | 25.0 | – | – |  |" in text
    assert ("| `acc` | 70.0 | [60.0, 80.0] | 35.0 | [33.0, 37.0] | +20.0 [5.0, 35.0] * vs `base` | "
            "-5.0 [-8.0, 1.0] vs `base` | 10.0 | 20.0 | 25.0 | – | – | yes |") in text  # * only where 0 is outside
    assert "| `kimi` | 60.0 | – | 25.0 | – | – | – | 10.0 | 20.0 | 25.0 | – | – | yes |" in text
    assert "| `l1 @ n=16` | 55.0 | – | 30.0 | – | – | – | 10.0 | 20.0 | 25.0 | 16 | 14.0 |  |" in text
    assert "| sft | 300 | earlier run |" in text and "| kimi | 120 | this run |" in text
    assert "| **total** | **420** (7.0 min) | |" in text
    assert (tmp_path / "report" / "pareto_sums.png").stat().st_size > 5000
    saved = json.loads((tmp_path / "report" / "compare.json").read_text())
    assert [r["pareto"] for r in saved["rows"]] == [False, True, True, False]
    assert saved["timings"]["kimi"]["seconds"] == 120.4


def test_budget_cells_prefer_the_prompt_budget_then_the_models_own():
    stated = _result("l1", "16", 0.5, 30.0, budget=16, abs_error=14.0)
    assert budget_cells(stated) == ("16", "14.0")
    own = {**_result("lapo", "none", 0.5, 30.0), "own_budget_rate": 0.875, "own_budget_abs_error": 6.25}
    assert budget_cells(own) == ("own (88%)", "6.2")
    silent = {**_result("kimi", "none", 0.5, 30.0), "own_budget_rate": 0.0, "own_budget_abs_error": None}
    assert budget_cells(silent) == ("–", "–") == budget_cells(_result("old-report", "none", 0.5, 30.0))
