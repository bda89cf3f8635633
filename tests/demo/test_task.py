"""The demo's synthetic task: generator, traces, splits, and the files shipped in data/demo."""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from pathlib import Path

import pytest
import yaml

from lapo_lightning.problem_sets.files import ProblemFields, load_problems
from lapo_lightning.demo.task import CHECK_WEIGHTS, SPLITS, SumProblem, make_splits, trace, write_splits
from lapo_lightning.prompts import PlainPrompt, opens_think
from lapo_lightning.verify import MathVerifier

ROOT = Path(__file__).resolve().parents[2]


def test_running_sum_steps_and_level():
    p = SumProblem((3, 5, 2, 7))
    assert (p.text, p.answer, p.level) == ("3+5+2+7", 17, 3)
    assert p.steps() == ["3+5=8", "8+2=10", "10+7=17"]


def test_trace_holds_every_step_then_redundant_checks_then_the_boxed_answer():
    p = SumProblem((3, 5, 2, 7))
    assert trace(p, random.Random(0), checks=0) == " 3+5=8 8+2=10 10+7=17 </think> \\boxed{17}"
    text = trace(p, random.Random(0), checks=3)
    checks = re.findall(r"check (\S+) ok", text)
    assert len(checks) == 3 and set(checks) <= set(p.steps())  # checks restate real steps: redundant
    assert text.startswith(" 3+5=8 8+2=10 10+7=17 check ") and text.endswith(" </think> \\boxed{17}")


def test_traces_verify_with_the_real_math_verifier():
    rng = random.Random(1)
    problems = [SumProblem(tuple(rng.randint(1, 9) for _ in range(lv + 1))) for lv in (1, 2, 3, 4)]
    texts = [trace(p, rng) for p in problems]
    result = MathVerifier()(texts + texts, [str(p.answer) for p in problems] + [str(p.answer + 1) for p in problems],
                            opened=[True] * 8)  # the demo prompt opens <think>; the trace closes it
    assert result.correct.tolist() == [True] * 4 + [False] * 4


@pytest.mark.parametrize("config", ["stage1.yaml", "stage2.yaml", "acc_only.yaml", "eval_greedy.yaml",
                                    "eval_sampled.yaml"])
def test_the_demo_prompt_opens_think_and_the_shipped_traces_close_it(config):
    """The default verifier grades the demo's completions: its prompt leaves <think> open and
    every SFT trace closes it before the box (without its ``</think>`` the same trace is incorrect)."""
    model = yaml.safe_load((ROOT / "configs" / "demo" / config).read_text())["model"]
    assert "verifier" not in model  # the default MathVerifier, think_tags on
    prompt = PlainPrompt(**model["prompt"]["init_args"])
    rows = [json.loads(line) for line in (ROOT / "data" / "demo" / "sft.jsonl").read_text().splitlines()[:200]]
    opened = [opens_think(prompt.render(r["problem"], budget=7)) for r in rows]
    assert all(opened)
    answers = [r["answer"] for r in rows]
    result = MathVerifier()([r["solution"] for r in rows], answers, opened)
    assert result.correct.all() and not result.unclosed.any()
    cut = [r["solution"].replace("</think>", "") for r in rows]  # the same box, never leaving the reasoning
    assert not MathVerifier()(cut, answers, opened).correct.any()


def test_splits_are_seeded_sized_and_keep_test_problems_out_of_training():
    splits = make_splits(seed=3)
    assert splits == make_splits(seed=3) and splits != make_splits(seed=4)
    for name, rows in splits.items():
        assert Counter(r["level"] for r in rows) == Counter(SPLITS[name])
        assert len({r["id"] for r in rows}) == len(rows)
    test = [r["problem"] for r in splits["test"]]
    assert len(set(test)) == len(test)
    seen = {r["problem"] for name in ("sft", "train") for r in splits[name]}
    assert not seen & set(test)
    for row in splits["sft"]:
        assert row["solution"].endswith(f"\\boxed{{{row['answer']}}}")
        assert sum(map(int, row["problem"].split("+"))) == int(row["answer"])


def test_redundant_checks_do_not_depend_on_the_level():
    rows = make_splits(seed=0)["sft"]
    mean_checks = {lv: sum(r["solution"].count("check") for r in rows if r["level"] == lv) / 3000 for lv in (1, 2, 3, 4)}
    expected = sum(k * w for k, w in enumerate(CHECK_WEIGHTS))
    assert all(abs(m - expected) < 0.1 for m in mean_checks.values()), mean_checks


def test_shipped_files_are_what_the_generator_writes(tmp_path):
    """data/demo/*.jsonl must not drift from the code that documents how they were made."""
    for split, path in write_splits(tmp_path, seed=0).items():
        shipped = ROOT / "data" / "demo" / f"{split}.jsonl"
        assert shipped.read_bytes() == path.read_bytes(), "regenerate with python -m lapo_lightning.demo.task"


@pytest.mark.parametrize("split", ["sft", "train", "test"])
def test_shipped_files_load_through_the_data_module_loader(split):
    problems = load_problems(str(ROOT / "data" / "demo" / f"{split}.jsonl"), ProblemFields())
    assert problems[0].extra["level"] in (1, 2, 3, 4)
    assert ("solution" in problems[0].extra) == (split == "sft")
    assert json.loads((ROOT / "data" / "demo" / f"{split}.jsonl").read_text().splitlines()[0])["id"] == problems[0].id
