"""``lapo eval`` through the real command: the debug config end to end, resume, adapters, bad input.

The end-to-end runs (marked slow) generate with tiny random-init models on the first 5
MATH-500 problems of data/math500.jsonl; their numbers only show the report's format. The
bad-input cases fail at start-up, before any weights load.
Run: pytest tests/evaluation/test_eval_e2e.py -q   (about half a minute on 2 CPU cores)
"""

from __future__ import annotations

import json

import matplotlib.image
import pytest
import yaml

from clitools import ROOT, config_in
from lapo_lightning.cli.main import main
from lapo_lightning.rollout import HFGenerate

PLOTS = ("tokens_by_level", "accuracy_vs_tokens", "length_histograms", "budget_sweep")


@pytest.fixture(autouse=True)
def in_repo(monkeypatch):
    monkeypatch.chdir(ROOT)  # configs name data/... relative to the checkout


@pytest.fixture(scope="module")
def adapters(tmp_path_factory):
    """LoRA adapters saved for tiny:llama (hidden 64) and for tiny:llama-h32 (a different base)."""
    from lapo_lightning.policy import PolicyConfig, load_policy

    folder = tmp_path_factory.mktemp("adapters")
    for name, model in (("fits", "tiny:llama"), ("other", "tiny:llama-h32")):
        policy, _ = load_policy(PolicyConfig(model=model))
        policy.save_pretrained(folder / name)
    return folder


def write_config(tmp_path, models, benchmarks=None, **data) -> str:
    config = {
        "trainer": {"accelerator": "cpu", "devices": 1},
        "model": {"models": models, "report_dir": str(tmp_path / "report"), "progress": False,
                  "generation": {"max_new_tokens": 8, "temperature": 0.6, "top_p": 0.95}},
        "data": {"benchmarks": benchmarks or [{"name": "math500", "path": "data/math500.jsonl", "samples": 1,
                                               "level_field": "level"}], "max_problems": 2, **data},
    }
    path = tmp_path / "eval.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


@pytest.mark.slow
def test_debug_config_writes_the_whole_report_then_resumes_without_generating(tmp_path, monkeypatch, capsys):
    config = config_in(tmp_path, "debug/eval.yaml")
    main(["eval", "--config", str(config)])
    report = tmp_path / "runs" / "debug_eval"
    for name in ("results.json", "report.md", "samples.jsonl", "settings.json", "config.yaml"):
        assert (report / name).stat().st_size > 0, name
    for name in PLOTS:
        image = matplotlib.image.imread(report / f"{name}.png")
        assert image.shape[0] > 100 and image.shape[1] > 100 and image.std() > 0, name  # not blank

    results = json.loads((report / "results.json").read_text())
    cells = {(r["model"], r["condition"]): r for r in results["results"]}
    assert set(cells) == {(m, c) for m in ("tiny-llama", "tiny-qwen2") for c in ("none", "8", "24")}
    for row in cells.values():
        assert row["problems"] == 5 and row["samples"] == 10 and 1 <= row["tokens_mean"] <= 32
        assert set(row["by_level"]) <= {"2", "3", "5"}  # levels of the first 5 MATH-500 problems
    records = [json.loads(line) for line in (report / "samples.jsonl").read_text().splitlines()]
    assert len(records) == 2 * 3 * 5 * 2  # models x budget conditions x problems x samples
    assert all(r["length"] <= 32 and r["truncated"] <= (r["length"] == 32) for r in records)
    assert {r["budget"] for r in records} == {None, 8, 24}
    table = (report / "report.md").read_text()
    assert "| Model | math500 | Average |" in table and "| `tiny-qwen2` |" in table
    with capsys.disabled():  # printed in the test output: the table quoted in the README
        print("\n" + table.split("## Pass@1 / #Tok: budget")[0])

    calls = []
    monkeypatch.setattr(HFGenerate, "sample", lambda *a, **k: calls.append(a) or pytest.fail("re-generated"))
    main(["eval", "--config", str(config)])
    assert not calls
    assert json.loads((report / "results.json").read_text())["results"] == results["results"]


@pytest.mark.slow
def test_base_and_adapter_in_one_report(tmp_path, adapters):
    config = write_config(tmp_path, [{"name": "base", "model": "tiny:llama"},
                                     {"name": "tuned", "model": "tiny:llama", "adapter": str(adapters / "fits")}])
    main(["eval", "--config", config])
    results = json.loads((tmp_path / "report" / "results.json").read_text())
    assert [r["model"] for r in results["results"]] == ["base", "tuned"]
    assert results["settings"]["models"][1]["adapter"] == str(adapters / "fits")


def _bad_jsonl(tmp_path, name: str, rows: list[dict]) -> str:
    path = tmp_path / name
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.mark.parametrize("case", ["missing_field", "empty", "unknown_folder", "unknown_hub_id", "adapter_mismatch",
                                  "no_adapter", "bad_budget"])
def test_bad_input_fails_at_start_up_naming_the_file_or_key(case, tmp_path, adapters, monkeypatch, capsys):
    import lapo_lightning.evaluation.module as module

    monkeypatch.setattr(module, "load_for_eval", lambda *a, **k: pytest.fail("weights loaded before the checks"))
    models = [{"name": "base", "model": "tiny:llama"}]
    benchmarks, data, expect = None, {}, []
    if case == "missing_field":
        path = _bad_jsonl(tmp_path, "noanswer.jsonl", [{"id": "a", "problem": "1+1?", "solution": "2"}])
        benchmarks, expect = [{"name": "b", "path": path}], ["data.benchmarks[0].fields.answer: field 'answer' not "
                                                             "found in", "noanswer.jsonl line 1"]
    elif case == "empty":
        path = _bad_jsonl(tmp_path, "empty.jsonl", [])
        benchmarks, expect = [{"name": "b", "path": path}], ["empty.jsonl", "data.benchmarks[0].path"]
    elif case == "unknown_folder":
        models.append({"name": "gone", "model": str(tmp_path / "no_model")})
        expect = ["model.models[1] (gone).model", "no_model"]
    elif case == "unknown_hub_id":
        models.append({"name": "typo", "model": "no-such-org/no-such-model"})
        expect = ["model.models[1] (typo).model", "no-such-org/no-such-model"]
    elif case == "adapter_mismatch":
        models.append({"name": "wrong", "model": "tiny:llama", "adapter": str(adapters / "other")})
        expect = ["model.models[1] (wrong)", str(adapters / "other"), "tiny:llama", "llama-h32", "shape"]
    elif case == "no_adapter":
        models.append({"name": "wrong", "model": "tiny:llama", "adapter": str(tmp_path)})
        expect = ["model.models[1] (wrong).adapter", "adapter_config.json"]
    elif case == "bad_budget":
        data, expect = {"budgets": ["none", "medium"]}, ["data.budgets", "medium"]
    with pytest.raises(SystemExit) as err:  # one line per problem, exit status 2, as `lapo fit` refuses input
        main(["eval", "--config", write_config(tmp_path, models, benchmarks, **data)])
    assert err.value.code == 2
    err_lines = capsys.readouterr().err.splitlines()
    lines = err_lines[next(i for i, line in enumerate(err_lines) if line.startswith("lapo eval: ")):]
    assert "found before loading any weights" in lines[0] and all(line.startswith("  ") for line in lines[1:])
    for snippet in expect:
        assert any(snippet in line for line in lines[1:]), (snippet, lines)
    assert not (tmp_path / "report").exists()  # nothing written on a failed start


def test_bad_sampling_settings_are_one_line_exit_2(tmp_path, capsys):
    config = write_config(tmp_path, [{"name": "base", "model": "tiny:llama"}], None)
    with pytest.raises(SystemExit) as err:
        main(["eval", "--config", config, "--model.generation.top_p", "1.5"])
    assert err.value.code == 2
    assert capsys.readouterr().err.splitlines()[-2:] == ["lapo eval: 1 problem found before loading any weights:",
                                                         "  model.generation.top_p: must be in (0, 1] (got 1.5)"]
