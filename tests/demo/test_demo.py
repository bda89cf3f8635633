"""`lapo demo` end to end in smoke mode (a few steps per phase), its resume, and its summary."""

from __future__ import annotations

import json

import pytest

from lapo_lightning.cli import phases
from lapo_lightning.demo import run as demo
from lapo_lightning.demo.summary import summarize, target_checks
from tests.clitools import config_in


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """Every demo config copied with its outputs redirected, then the whole demo in smoke mode."""
    tmp = tmp_path_factory.mktemp("demo")
    for name, _, file, _, _ in demo.PHASES:  # a smaller model than the real demo's: this checks plumbing
        config_in(tmp, f"demo/{file}", **({"tiny:llama-h128-l4-n": "tiny:llama-h64-l2-n"} if name == "sft" else {}))
    lines = []
    summary = demo.run_demo(tmp, smoke=True, log=lines.append)
    return tmp, summary, lines


def test_smoke_demo_writes_every_artefact(smoke_run):
    tmp, summary, lines = smoke_run
    runs = tmp / "runs" / "demo"
    assert (runs / "sft" / "model" / "config.json").is_file()  # the whole SFT model
    for name in ("acc_only", "stage1", "stage2"):
        assert (runs / name / "adapter" / "adapter_config.json").is_file()
    assert (runs / "stage1" / "length_table.json").is_file()
    assert (runs / "stage2" / "length_table_refined.json").is_file()
    for report in ("eval_sampled", "eval_greedy"):
        folder = runs / report
        assert {"report.md", "results.json", "samples.jsonl"} <= {p.name for p in folder.iterdir()}
        assert list(folder.glob("*.png"))
    text = (runs / "demo_summary.md").read_text()
    for model in ("sft-base", "acc-only", "lapo-stage1", "lapo-stage2"):
        assert f"`{model}`" in text and model in summary["sampled"] and model in summary["greedy"]
    assert "Level 4 (T=1)" in text and "Targets:" in text and "Total time" in text
    assert sum("finished in" in line for line in lines) == len(demo.PHASES)


def test_rerun_skips_finished_phases_and_redoes_an_unfinished_one(smoke_run, monkeypatch):
    tmp, _, _ = smoke_run
    ran = []
    monkeypatch.setattr(phases, "run_phase", lambda phase, *a: ran.append(phase.name))
    lines = []
    demo.run_demo(tmp, smoke=True, log=lines.append)
    assert ran == [] and sum("skipped" in line for line in lines) == len(demo.PHASES)
    (tmp / "runs" / "demo" / "stage2" / "adapter" / phases.MARKER).unlink()  # "interrupted" during stage 2
    demo.run_demo(tmp, smoke=True, log=lines.append)
    assert ran == ["stage2"]


def test_a_full_run_does_not_trust_smoke_markers(tmp_path):
    (tmp_path / phases.MARKER).write_text(json.dumps({"smoke": True}))
    assert phases.is_done(tmp_path, smoke=True) and not phases.is_done(tmp_path, smoke=False)
    (tmp_path / phases.MARKER).write_text(json.dumps({"smoke": False}))
    assert phases.is_done(tmp_path, smoke=False)


def test_missing_configs_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="sft.yaml.*repository root"):
        demo.run_demo(tmp_path)


def _results(folder, rows):
    folder.mkdir(parents=True)
    results = [{"model": m, "condition": "none", "problems": 10, "pass@1": acc, "tokens_mean": tok,
                "by_level": {str(lv): {"pass@1": acc, "tokens_mean": t} for lv, t in enumerate(levels, start=1)}}
               for m, acc, tok, levels in rows]
    (folder / "results.json").write_text(json.dumps({"results": results}))


def test_summary_checks_the_targets_with_the_measured_numbers(tmp_path):
    rows = [("sft-base", 0.90, 60.0, [30, 50, 70, 90]), ("acc-only", 0.95, 55.0, [30, 45, 60, 85]),
            ("lapo-stage1", 0.89, 40.0, [20, 30, 50, 60]), ("lapo-stage2", 0.87, 41.0, [20, 35, 30, 79])]
    _results(tmp_path / "s", rows)
    _results(tmp_path / "g", rows)
    checks = dict(target_checks(summarize(tmp_path / "s", tmp_path / "g")["sampled"]))
    assert checks == {
        "lapo-stage1: Pass@1 -1.0 points vs the base (target: at most 2 below)": True,
        "lapo-stage2: Pass@1 -3.0 points vs the base (target: at most 2 below)": False,
        "lapo-stage1: 33.3% fewer tokens than the base (target: at least 30%)": True,
        "lapo-stage2: 41.0 tokens vs stage 1's 40.0 (target: at most as many)": False,
        "sft-base: tokens by level 30 < 50 < 70 < 90": True,
        "acc-only: tokens by level 30 < 45 < 60 < 85": True,
        "lapo-stage1: tokens by level 20 < 30 < 50 < 60": True,
        "lapo-stage2: tokens by level 20 < 35 < 30 < 79 (not rising)": False,
    }
    text = summarize(tmp_path / "s", tmp_path / "g")["markdown"]
    assert "| `lapo-stage1` | 89.0 / 40.0 | 89.0 / 40.0 | 89.0 / 20.0 |" in text
