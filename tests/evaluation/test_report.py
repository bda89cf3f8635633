"""Evaluation with a scripted sampler: exact numbers, the report files, budgets and resume.

The sampler returns known completions (right / wrong / no answer, with chosen lengths) per
problem, so accuracy, pass@k, token counts and the level breakdown are known by hand. The
tiny model still loads (the sampler ignores it). Run: pytest tests/evaluation/test_report.py -q
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import lightning.pytorch as pl
import matplotlib.image
import pytest
import torch

from lapo_lightning.evaluation import Benchmark, BenchmarkDataModule, EvalError, EvalModule, ModelSpec, run_evaluation
from lapo_lightning.length_table import LengthEntry, LengthTable
from lapo_lightning.prompts import parse_budget, render_budget
from lapo_lightning.rollout import GenerationConfig, Sampler
from lapo_lightning.types import RolloutBatch

FIXTURE = str(Path(__file__).resolve().parents[1] / "fixtures" / "math500_sample.jsonl")
CAP = 100
ANSWERS = {
    "test/precalculus/807.json": "\\left( 3, \\frac{\\pi}{2} \\right)",  # level 2
    "test/intermediate_algebra/1994.json": "p - q",  # level 5
    "test/algebra/2584.json": "\\frac{14}{3}",  # level 3
    "test/number_theory/572.json": "9",  # level 3
    "test/algebra/1349.json": "\\text{Evelyn}",  # level 2
}
# Per problem, sample k -> (kind, generated tokens); CAP = truncated. "none" = no final answer:
# the right box, but inside reasoning the prompt's <think> opened and the sample never closed.
SCRIPT = {
    "test/precalculus/807.json": [("right", 10), ("right", 20), ("wrong", 30), ("none", CAP)],  # c=2
    "test/intermediate_algebra/1994.json": [("wrong", 80), ("wrong", 90), ("none", CAP), ("right", 60)],  # c=1
    "test/algebra/2584.json": [("right", 40)] * 4,  # c=4
    "test/number_theory/572.json": [("wrong", 50), ("wrong", 50), ("none", 50), ("wrong", 50)],  # c=0
    "test/algebra/1349.json": [("right", 20), ("wrong", 20), ("right", 20), ("wrong", 20)],  # c=2
}
# By hand: 9 of 20 samples right; tokens 160 + 330 + 160 + 200 + 80 = 930; correct tokens 290 over 9.
EXPECTED = {
    "problems": 5, "samples": 20, "pass@1": 9 / 20, "tokens_mean": 930 / 20, "tokens_correct_mean": 290 / 9,
    "truncation_rate": 2 / 20, "unparseable_rate": 3 / 20,
    "pass@2": ((1 - 1 / 6) + (1 - 3 / 6) + 1 + 0 + (1 - 1 / 6)) / 5,  # 1 - C(n-c,2)/C(4,2) per problem
    "pass@4": 4 / 5,
}
EXPECTED_LEVELS = {"2": {"samples": 8, "pass@1": 0.5, "tokens_mean": 30.0},
                   "3": {"samples": 8, "pass@1": 0.5, "tokens_mean": 45.0},
                   "5": {"samples": 4, "pass@1": 0.25, "tokens_mean": 82.5}}


class ScriptedSampler(Sampler):
    """Returns SCRIPT's completions; the k-th row it sees for a problem gets SCRIPT[problem][k]."""

    def __init__(self, fail_on_call: int | None = None) -> None:
        self.calls, self.rows, self.group_sizes, self.prompts = 0, 0, [], []
        self.seen: Counter = Counter()
        self.fail_on_call = fail_on_call

    def sample(self, model, tokenizer, prompts, problems, group_size, gen) -> RolloutBatch:
        self.calls += 1
        if self.fail_on_call is not None and self.calls == self.fail_on_call:
            raise RuntimeError("simulated crash mid-evaluation")
        self.group_sizes.append(group_size)
        self.prompts += prompts
        group_index = torch.arange(len(prompts)).repeat_interleave(group_size)  # [N]
        texts, lengths = [], []
        for i in group_index.tolist():
            pid = problems.problem_ids[i]
            kind, length = SCRIPT[pid][self.seen[pid] % 4]
            self.seen[pid] += 1
            texts.append({"right": f"ok </think> \\boxed{{{ANSWERS[pid]}}}", "wrong": "ok </think> \\boxed{12345}",
                          "none": f"maybe \\boxed{{{ANSWERS[pid]}}} but"}[kind])
            lengths.append(length)
        self.rows += len(texts)
        n, width = len(texts), max(lengths)
        mask = torch.arange(width)[None, :] < torch.tensor(lengths)[:, None]  # [N, T]
        return RolloutBatch(problems=problems, group_index=group_index, prompt_ids=torch.zeros(n, 1, dtype=torch.long),
                            prompt_mask=torch.ones(n, 1, dtype=torch.bool), completion_ids=torch.zeros(n, width,
                            dtype=torch.long), completion_mask=mask, texts=texts,
                            truncated=torch.tensor(lengths) >= gen.max_new_tokens)


def evaluate(folder: Path, sampler: Sampler, models=("fake",), budgets=("none",), cap: int = CAP, plots=False,
             progress=False, **data):
    module = EvalModule(models=[ModelSpec(name, "tiny:llama") for name in models], sampler=sampler, plots=plots,
                        generation=GenerationConfig(max_new_tokens=cap), report_dir=str(folder), progress=progress)
    datamodule = BenchmarkDataModule(benchmarks=[Benchmark("math500", FIXTURE, samples=4, level_field="level")],
                                     budgets=list(budgets), rollouts_per_batch=8, **data)  # 2 problems per batch
    trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    rows = run_evaluation(module, datamodule, trainer)
    return rows, trainer


def assert_expected(row: dict) -> None:
    for key, value in EXPECTED.items():
        assert row[key] == pytest.approx(value), key
    assert row["by_level"] == EXPECTED_LEVELS  # exact binary fractions


def test_scripted_run_gives_hand_computed_numbers_and_all_report_files(tmp_path):
    sampler = ScriptedSampler()
    rows, trainer = evaluate(tmp_path, sampler, models=("base", "lapo"), plots=True)
    assert [(r["model"], r["benchmark"]) for r in rows] == [("base", "math500"), ("lapo", "math500")]
    for row in rows:
        assert_expected(row)
    assert sampler.calls == 6 and sampler.group_sizes == [4] * 6  # 3 batches x 2 models, all 4 samples at once
    assert float(trainer.callback_metrics["lapo/none/math500/pass@1"]) == pytest.approx(0.45)  # logged too

    results = json.loads((tmp_path / "results.json").read_text())
    assert results["averages"]["base"]["none"]["pass@1"] == pytest.approx(0.45)
    assert_expected(results["results"][0])
    records = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert len(records) == 40
    first = next(r for r in records if r["model"] == "base" and r["problem_id"] == "test/algebra/2584.json")
    assert first["answer"] == "\\frac{14}{3}" and first["correct"] and first["length"] == 40 and first["level"] == 3
    assert all(r["gold"] == ANSWERS[r["problem_id"]] for r in records)  # the reference, to compare by eye
    unparsed = [r for r in records if r["model"] == "base" and not r["parsed"]]
    assert len(unparsed) == 3 and all(r["answer"] is None and not r["correct"] for r in unparsed)

    report = (tmp_path / "report.md").read_text()
    assert "| Model | math500 | Average |" in report
    assert "| `base` | 45.0 / 46 | 45.0 / 46 |" in report  # 46.5 tokens, rounded half to even
    assert "| `lapo` | math500 | 50.0 / 30 | 50.0 / 45 | 25.0 / 82 |" in report  # levels 2, 3, 5
    # 95% intervals: problems resampled whole (their Pass@1 0.5, 0.25, 1, 0, 0.5); the two models
    # answer identically, so the paired difference is exactly 0.
    low, high = results["results"][0]["pass@1_ci"]
    assert 0.0 < low < 0.45 < high < 1.0 and results["baseline"] == "base"
    lapo = results["results"][1]
    assert lapo["vs_baseline"] == {"model": "base", "pass@1": [0.0, 0.0, 0.0], "tokens_mean": [0.0, 0.0, 0.0]}
    assert "## 95% intervals" in report and "| `lapo` | none | math500 | 45.0 | [" in report
    same = "| +0.0 [0.0, 0.0] | +0 [0, 0] |"
    assert report.split("## Details")[0].count(same) == 1  # lapo's row; base is the baseline
    per_level = report.split("Per level, 95% intervals")[1]  # one row per level of lapo, paired the same way
    assert per_level.count(same) == 3 and "| `lapo` | math500 | 5 | 4 | 25.0 | [" in per_level
    for name in ("tokens_by_level", "accuracy_vs_tokens", "length_histograms"):
        image = matplotlib.image.imread(tmp_path / f"{name}.png")
        assert image.shape[0] > 100 and image.shape[1] > 100
    assert not (tmp_path / "budget_sweep.png").exists()  # no budgets, no sweep


def test_budgets_fixed_sweep_and_length_table(tmp_path):
    table = tmp_path / "table.json"
    LengthTable({"test/algebra/2584.json": LengthEntry(33.0, 30.0, 36.0, 2, 1, True)}).save(table)
    sampler = ScriptedSampler()
    rows, _ = evaluate(tmp_path / "report", sampler, budgets=("none", "short", 20, "table"),
                       budget_short=60, length_table=str(table), fallback_budget=77, plots=True)
    stated = Counter(parse_budget(p) for p in sampler.prompts)
    assert stated == {None: 5, 60: 5, 20: 5, 33: 1, 77: 4}  # table: one target, four fallbacks
    by_condition = {r["condition"]: r for r in rows}
    assert list(by_condition) == ["none", "short", "20", "table"]
    assert by_condition["none"]["budget_abs_error"] is None
    lengths = [length for script in SCRIPT.values() for _, length in script]
    assert by_condition["20"]["budget_abs_error"] == pytest.approx(sum(abs(x - 20) for x in lengths) / 20)
    assert by_condition["short"]["budget_mean"] == 60 and by_condition["table"]["budget"] is None
    report = (tmp_path / "report" / "report.md").read_text()
    assert "budget short, n = 60 tokens" in report and "budget n = 20 tokens" in report
    assert matplotlib.image.imread(tmp_path / "report" / "budget_sweep.png").size > 0


def test_interrupted_evaluation_resumes_from_records_without_regenerating(tmp_path):
    crashing = ScriptedSampler(fail_on_call=2)
    with pytest.raises(RuntimeError, match="simulated crash"):
        evaluate(tmp_path, crashing)
    kept = (tmp_path / "samples.jsonl").read_text().splitlines()
    assert len(kept) == 8  # the first batch (2 problems x 4 samples) was recorded before the crash

    resumed = ScriptedSampler()
    rows, _ = evaluate(tmp_path, resumed)
    assert resumed.rows == 12 and resumed.calls == 2  # only the 3 unrecorded problems
    assert (tmp_path / "samples.jsonl").read_text().splitlines()[:8] == kept
    assert_expected(rows[0])  # the same numbers as an uninterrupted run

    again = ScriptedSampler()
    rows, _ = evaluate(tmp_path, again)
    assert again.calls == 0  # everything recorded: the model is not even loaded
    assert_expected(rows[0])


def test_resume_mid_problem_and_after_a_torn_write(tmp_path):
    evaluate(tmp_path, ScriptedSampler())
    path = tmp_path / "samples.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    # Forget sample 0 of 807 and samples 1, 2 of 2584 (their regenerated values equal the
    # originals: the sampler restarts each problem's script at entry 0), then tear the last
    # line (number_theory/572 sample 3, also alike) in half, as a kill mid-write would.
    forget = {("test/precalculus/807.json", 0), ("test/algebra/2584.json", 1), ("test/algebra/2584.json", 2)}
    kept = [line for line in lines if (json.loads(line)["problem_id"], json.loads(line)["sample"]) not in forget]
    assert json.loads(kept[-1])["problem_id"] == "test/number_theory/572.json"  # the last batch
    path.write_text("".join(kept[:-1]) + kept[-1][:25])

    resumed = ScriptedSampler()
    with pytest.warns(UserWarning, match="partially written"):
        rows, _ = evaluate(tmp_path, resumed)
    assert resumed.rows == 4 and resumed.group_sizes == [1, 1]  # mixed counts: one row per missing sample
    assert_expected(rows[0])
    assert len(path.read_text().splitlines()) == 20


def test_records_written_before_the_gold_field_still_resume(tmp_path):
    evaluate(tmp_path, ScriptedSampler())
    path = tmp_path / "samples.jsonl"
    old = [json.loads(line) for line in path.read_text().splitlines()]
    path.write_text("".join(json.dumps({k: v for k, v in r.items() if k != "gold"}) + "\n" for r in old))
    resumed = ScriptedSampler()
    rows, _ = evaluate(tmp_path, resumed)
    assert resumed.calls == 0  # every sample is still recorded
    assert_expected(rows[0])


def test_report_folder_made_with_other_settings_is_refused(tmp_path):
    evaluate(tmp_path, ScriptedSampler())
    with pytest.raises(EvalError, match=r"model.report_dir.*generation"):
        evaluate(tmp_path, ScriptedSampler(), cap=50)


class StatesItsOwnBudget(ScriptedSampler):
    """SCRIPT's completions, each opened with the stage-2 sentence a LAPO model writes itself."""

    def sample(self, *args, **kwargs) -> RolloutBatch:
        batch = super().sample(*args, **kwargs)
        batch.texts = [render_budget(25) + " " + text for text in batch.texts]
        return batch


def test_a_budget_the_model_states_itself_is_recorded_and_measured(tmp_path):
    rows, _ = evaluate(tmp_path / "report", StatesItsOwnBudget(), budgets=("none", 20))
    by_condition = {r["condition"]: r for r in rows}
    lengths = [length for script in SCRIPT.values() for _, length in script]
    assert by_condition["none"]["own_budget_rate"] == 1.0
    assert by_condition["none"]["own_budget_abs_error"] == pytest.approx(sum(abs(x - 25) for x in lengths) / 20)
    # With a budget in the prompt the model's own sentence is not its budget: only |L - 20| counts.
    assert by_condition["20"]["own_budget_rate"] is None and by_condition["20"]["own_budget_abs_error"] is None
    records = [json.loads(line) for line in (tmp_path / "report" / "samples.jsonl").read_text().splitlines()]
    assert {(r["condition"], r["own_budget"]) for r in records} == {("none", 25), ("20", None)}


def test_progress_to_a_file_is_plain_lines(tmp_path, capsys):
    """pytest's capture is not a terminal, as a log file is not: each model ends with one line."""
    evaluate(tmp_path, ScriptedSampler(), models=("base", "lapo"), progress=True)
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("eval ")]
    assert [line.split(" | ")[0] for line in lines] == ["eval base: 20/20 samples", "eval lapo: 20/20 samples"]
