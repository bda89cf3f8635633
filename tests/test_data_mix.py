"""Data recipes: mixing sources with filters and counts, duplicates across sources, the
contamination check, stable ids (two loads, a resume, two processes), the one resolved set both
stages read (and its refusal when stale), ``lapo data``, and the paper's mix built offline from
the rows shipped in data/.

Run: HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 python -m pytest tests/test_data_mix.py -q
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lapo_lightning.cli.data import main as data_main
from lapo_lightning.problem_sets.mix import resolve
from lapo_lightning.problem_sets.recipe import load_recipe, recipe_from_dict
from lapo_lightning.problem_sets.text import text_id, text_key
from lapo_lightning.problem_sets.files import DataError
from lapo_lightning.problem_sets.resolved import ensure_resolved, report_path

ROOT = Path(__file__).resolve().parents[1]


def write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def numbered(prefix: str, n: int, **extra) -> list[dict]:
    return [{"problem": f"{prefix} problem number {i}?", "answer": str(i), **extra} for i in range(n)]


@pytest.fixture(autouse=True)
def datasets_cache_in_tmp(tmp_path, monkeypatch):
    """``load_dataset`` caches under tmp_path (``cache_dir`` is read here, not at import time)."""
    import datasets

    real = datasets.load_dataset
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: real(*a, **{**k, "cache_dir": str(tmp_path / "hf")}))


def recipe_file(tmp_path: Path, name: str = "mix.yaml", **raw) -> str:
    raw.setdefault("output", str(tmp_path / "out" / "mix.jsonl"))
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return str(path)


def two_sources(tmp_path: Path) -> dict:
    """a: 30 problems without levels; b: 40 with levels 1-5 (8 each), 3 of which repeat a's text
    in another spelling, and one repeat of its own."""
    a = numbered("alpha", 30)
    b = [{"question": f"beta problem number {i}?", "sol": f"so \\boxed{{{i}}}", "lvl": f"Level {i % 5 + 1}"}
         for i in range(40)]
    for i in range(3):  # b's rows 0, 5, 10 (level 1) are a's problems 0-2, spaced and cased differently
        b[5 * i]["question"] = f"ALPHA  problem number {i} ?"
    b.append({"question": "beta problem number 39?", "sol": "\\boxed{39}", "lvl": "Level 5"})  # repeat within b
    return {"a": write_jsonl(tmp_path / "a.jsonl", a), "b": write_jsonl(tmp_path / "b.jsonl", b)}


B_COLUMNS = {"problem": "question", "answer": None, "solution": "sol", "level": "lvl"}


def test_exact_counts_filters_and_duplicates_across_sources(tmp_path):
    files = two_sources(tmp_path)
    recipe = recipe_from_dict({"output": "o.jsonl", "sources": [
        {"name": "a", "path": files["a"], "count": 20},
        {"name": "b", "path": files["b"], "columns": B_COLUMNS, "min_level": 1, "max_level": 3, "fraction": 0.5},
    ]}, "mix.yaml")
    mixed, report = resolve(recipe, seed=0)
    a, b = report["sources"]
    assert (a["loaded"], a["drawn"], a["available"]) == (30, 20, 30)
    # b: 41 rows, 17 at levels 4-5 (its repeat is level 5), 24 left; those of a's problems 0-2 drawn above
    # are duplicates across sources (how many depends on which 20 of a were drawn); half the rest is drawn.
    drawn_a = {int(r["problem"].split()[-1][:-1]) for r in mixed if r["source"] == "a"}
    across = len(drawn_a & {0, 1, 2})
    assert (b["loaded"], b["filtered_out"], b["duplicates_within"], b["duplicates_across"]) == (41, 17, 0, across)
    assert b["available"] == 24 - across and b["drawn"] == round((24 - across) * 0.5)
    assert report["total"] == len(mixed) == 20 + b["drawn"]
    assert set(report["levels"]["b"]) <= {"1", "2", "3"} and report["levels"]["a"] == {"none": 20}
    assert len(set(mixed["id"])) == len(mixed)  # one id per problem
    assert len({text_key(p) for p in mixed["problem"]}) == len(mixed)  # no normalised text twice


def test_duplicates_within_a_source_and_without_deduplication(tmp_path):
    files = two_sources(tmp_path)
    source = {"name": "b", "path": files["b"], "columns": B_COLUMNS, "min_level": 5}
    _, report = resolve(recipe_from_dict({"output": "o.jsonl", "sources": [source]}, "r"), seed=0)
    assert report["sources"][0]["duplicates_within"] == 1 and report["sources"][0]["drawn"] == 8
    with pytest.raises(DataError, match=r"1 problem ids occur more than once .*deduplicate: true"):
        resolve(recipe_from_dict({"output": "o.jsonl", "sources": [source], "deduplicate": False}, "r"), seed=0)


def test_draws_follow_the_seed_and_ignore_other_sources(tmp_path):
    files = two_sources(tmp_path)
    a = {"name": "a", "path": files["a"], "count": 10}
    c = {"name": "c", "path": write_jsonl(tmp_path / "c.jsonl", numbered("gamma", 5))}
    alone = lambda seed: resolve(recipe_from_dict({"output": "o.jsonl", "sources": [a]}, "r"), seed)[0]["id"]  # noqa: E731
    assert alone(0) == alone(0) != alone(1)
    with_c = resolve(recipe_from_dict({"output": "o.jsonl", "sources": [a, c]}, "r"), 0)[0]
    assert with_c["id"][:10] == alone(0)  # adding a source leaves a's draw as it was


def test_asking_for_more_than_is_left_says_where_the_rows_went(tmp_path):
    files = two_sources(tmp_path)
    recipe = recipe_from_dict({"output": "o.jsonl", "sources": [
        {"name": "b", "path": files["b"], "columns": B_COLUMNS, "max_level": 2, "count": 17}]}, "mix.yaml")
    with pytest.raises(DataError) as err:
        resolve(recipe, 0)
    assert str(err.value).startswith("mix.yaml: sources[0].count: 17 problems asked of b, only 16 left (loaded 41, "
                                     "unusable 0, outside the levels 25, repeated 0")


def test_contamination_against_a_benchmark_file_drops_keeps_or_refuses(tmp_path):
    files = two_sources(tmp_path)
    bench = write_jsonl(tmp_path / "bench.jsonl", [
        {"id": "t1", "problem": "Alpha problem number 4?", "answer": "4"},       # in a, other case
        {"id": "t2", "problem": "alpha problem   number 7 ?", "answer": "7"},    # in a, other spacing
        {"id": "t3", "problem": "Something else entirely", "answer": "0"}])
    raw = {"output": "o.jsonl", "sources": [{"name": "a", "path": files["a"]}], "contamination": {"files": [bench]}}
    mixed, report = resolve(recipe_from_dict(raw, "r"), 0)
    assert report["benchmarks"] == {"bench": 2} and report["sources"][0]["contaminated"] == 2
    assert len(mixed) == 28 and not {"alpha problem number 4?", "alpha problem number 7?"} & set(mixed["problem"])
    raw["contamination"]["action"] = "keep"
    mixed, report = resolve(recipe_from_dict(raw, "r"), 0)
    assert len(mixed) == 30 and report["benchmarks"] == {"bench": 2} and report["contamination_action"] == "keep"
    raw["contamination"]["action"] = "error"
    with pytest.raises(DataError, match=r"r: sources\[0\] \(a\): 2 problems are also in the evaluation benchmarks"):
        resolve(recipe_from_dict(raw, "r"), 0)


def test_contamination_reads_the_benchmarks_of_an_eval_config(tmp_path):
    math500 = [json.loads(line) for line in (ROOT / "data" / "math500.jsonl").read_text().splitlines()[:3]]
    rows = [{"problem": r["problem"], "answer": r["answer"]} for r in math500] + numbered("x", 5)
    raw = {"output": "o.jsonl", "sources": [{"name": "t", "path": write_jsonl(tmp_path / "t.jsonl", rows)}],
           "contamination": {"eval_config": str(ROOT / "configs" / "eval.yaml")}}
    cwd = os.getcwd()
    os.chdir(ROOT)  # the eval config's benchmark paths are relative to the repository
    try:
        mixed, report = resolve(recipe_from_dict(raw, "r"), 0)
    finally:
        os.chdir(cwd)
    assert report["benchmarks"] == {"math500": 3, "aime24": 0, "amc23": 0, "olympiadbench": 0} and len(mixed) == 5


@pytest.mark.parametrize(("raw", "says"), [
    ({"sources": []}, "r: sources: required: a list of one or more sources"),
    ({"sources": [{"path": "a.jsonl"}]}, "r: output: required"),
    ({"sources": [{"path": "a.jsonl"}], "output": "o.json"}, "r: output: 'o.json' must end in .jsonl"),
    ({"sources": [{"path": "a.jsonl"}], "output": "o.jsonl", "mix": 1}, "r: mix: unknown setting"),
    ({"sources": [{"path": "a.jsonl"}, {"path": "b/a.jsonl"}], "output": "o.jsonl"}, "names must differ"),
    ({"sources": [{"path": "a.jsonl", "count": -1}], "output": "o.jsonl"}, "r: sources[0].count: expected a whole"),
    ({"sources": [{"path": "a.jsonl"}], "output": "o.jsonl", "contamination": {"action": "warn"}},
     "r: contamination.action: expected one of drop, keep, error, found 'warn'"),
])
def test_bad_recipes_name_the_file_and_key(raw, says):
    with pytest.raises(DataError) as err:
        recipe_from_dict(raw, "r")
    assert says in str(err.value)


def test_an_eval_config_without_benchmarks_is_named(tmp_path):
    (tmp_path / "eval.yaml").write_text("model: {}\n")
    raw = {"output": "o.jsonl", "sources": [{"path": write_jsonl(tmp_path / "a.jsonl", numbered("a", 2))}],
           "contamination": {"eval_config": str(tmp_path / "eval.yaml")}}
    with pytest.raises(DataError, match=r"r: contamination\.eval_config: .*eval\.yaml lists no data\.benchmarks"):
        resolve(recipe_from_dict(raw, "r"), 0)


# ----- the resolved set ---------------------------------------------------------------------
def test_the_resolved_set_is_written_once_and_refused_when_stale(tmp_path):
    files = two_sources(tmp_path)
    path = recipe_file(tmp_path, sources=[{"name": "a", "path": files["a"], "count": 12}])
    out = ensure_resolved(path, seed=0)
    first = out.read_bytes()
    manifest = json.loads(report_path(out).read_text())
    assert manifest["rows"] == 12 and manifest["inputs"]["seed"] == 0 and manifest["report"]["total"] == 12
    assert ensure_resolved(path, seed=0) == out and out.read_bytes() == first  # read again, not rebuilt
    with pytest.raises(DataError, match=r"drawn with seed 0, this run's data\.seed is 1\. Resolve it again with "
                                        r"`lapo data --config .*mix\.yaml --seed 1`"):
        ensure_resolved(path, seed=1)
    rows = (tmp_path / "a.jsonl").read_text().replace("alpha problem number 29", "alpha problem number 99")
    (tmp_path / "a.jsonl").write_text(rows)
    with pytest.raises(DataError, match=r"these files changed: .*a\.jsonl"):
        ensure_resolved(path, seed=0)
    out.write_text(out.read_text().replace("alpha", "ALPHA"))
    with pytest.raises(DataError, match=r"mix\.jsonl itself was edited after it was written"):
        ensure_resolved(path, seed=0)


def test_ids_are_stable_across_loads_a_resume_and_processes(tmp_path):
    from lapo_lightning.data import LapoDataModule

    files = two_sources(tmp_path)
    path = recipe_file(tmp_path, sources=[{"name": "a", "path": files["a"], "count": 25},
                                          {"name": "b", "path": files["b"], "columns": B_COLUMNS, "count": 10}])
    first = LapoDataModule(path, problems_per_step=4)
    first.prepare_data()
    ids = first.problem_ids
    assert ids == [text_id(text_key(p.problem)) for p in first.train_problems]
    out = tmp_path / "out" / "mix.jsonl"
    written = out.read_bytes()
    resumed = LapoDataModule(path, problems_per_step=4)  # a resumed run in a new process reads the same file
    assert resumed.problem_ids == ids and resumed.content_hashes() == first.content_hashes()
    out.unlink()
    report_path(out).unlink()
    again = resolve(load_recipe(path), 0)[0]  # resolved anew: the same ids in the same order
    assert again["id"] == ids
    code = ("import sys; from lapo_lightning.problem_sets.resolved import ensure_resolved; "
            "sys.stdout.write(ensure_resolved(sys.argv[1], 0).read_text())")
    env = {**os.environ, "PYTHONHASHSEED": "123", "HF_DATASETS_CACHE": str(tmp_path / "hf2")}
    done = subprocess.run([sys.executable, "-c", code, path], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.encode("utf-8") == written  # another process, another hash seed: byte-identical


def test_stage_two_refuses_a_table_from_another_resolved_set_naming_how_many(tmp_path):
    from lapo_lightning.callbacks.budgets import BudgetTargets
    from lapo_lightning.data import LapoDataModule
    from lapo_lightning.length_table import LengthEntry, LengthTable

    files = two_sources(tmp_path)
    source = {"name": "a", "path": files["a"], "count": 20}
    stage1 = LapoDataModule(recipe_file(tmp_path, sources=[source]))
    entries = {pid: LengthEntry(50.0, 40.0, 60.0, 2, 1, True) for pid in stage1.problem_ids}
    table_path = tmp_path / "table.json"
    LengthTable(entries, {"dataset": stage1.describe(), "complete": True}).save(table_path)
    stage2 = LapoDataModule(recipe_file(tmp_path, sources=[source]))  # the same recipe: the same set
    BudgetTargets(table=str(table_path)).check_dataset(LengthTable.load(table_path), stage2.problem_ids,
                                                       stage2.describe())
    other = LapoDataModule(recipe_file(tmp_path, "other.yaml", output=str(tmp_path / "other.jsonl"),
                                       sources=[{**source, "count": 22}]))
    missing = len(set(other.problem_ids) - set(stage1.problem_ids))
    with pytest.raises(Exception, match=rf"{missing} of the 22 training problems are not in it"):
        BudgetTargets(table=str(table_path)).check_dataset(LengthTable.load(table_path), other.problem_ids,
                                                           other.describe())


def test_lapo_table_matches_a_table_against_a_recipes_resolved_set(tmp_path, capsys):
    from lapo_lightning.length_table import LengthEntry, LengthTable
    from lapo_lightning.length_table import main as table_main

    files = two_sources(tmp_path)
    path = recipe_file(tmp_path, sources=[{"name": "a", "path": files["a"], "count": 10}])
    ids = [json.loads(line)["id"] for line in ensure_resolved(path, 0).read_text().splitlines()]
    LengthTable({pid: LengthEntry(50.0, 40.0, 60.0, 2, 1, True) for pid in ids[:5]}).save(tmp_path / "t.json")
    assert table_main([str(tmp_path / "t.json"), "--dataset", path]) == 0
    out = capsys.readouterr().out
    assert "(coverage 50.0%)" in out and "missing_from_table: 5" in out


# ----- lapo data and the paper's mix ----------------------------------------------------------
def paper_offline(tmp_path: Path, monkeypatch) -> str:
    """configs/data/paper_mix_offline.yaml with its output in tmp_path, run from the repository."""
    raw = yaml.safe_load((ROOT / "configs" / "data" / "paper_mix_offline.yaml").read_text())
    raw["output"] = str(tmp_path / "paper_mix_offline.jsonl")
    (tmp_path / "paper.yaml").write_text(yaml.safe_dump(raw))
    monkeypatch.chdir(ROOT)
    return str(tmp_path / "paper.yaml")


def test_lapo_data_builds_the_paper_mix_offline_with_its_counts(tmp_path, monkeypatch, capsys):
    assert data_main(["--config", paper_offline(tmp_path, monkeypatch)]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].endswith("seed 0: 1000 problems")
    assert lines[2].split() == ["deepscaler", "803", "0", "0", "26", "0", "0", "777", "600"]
    assert lines[3].split() == ["math", "7,498", "2", "1,914", "2", "0", "0", "5,580", "400"]
    assert "unusable in math: row 1656: no \\boxed{} answer in its solution" in out
    assert "  math: level 3: 99, level 4: 120, level 5: 181" in out
    assert "overlaps with the evaluation benchmarks, dropped: math500 0, aime24 0, amc23 0, olympiadbench 0" in out
    written = [json.loads(line) for line in (tmp_path / "paper_mix_offline.jsonl").read_text().splitlines()]
    assert len(written) == 1000 and sum(r["source"] == "math" for r in written) == 400
    assert all(3 <= r["level"] <= 5 for r in written if r["source"] == "math")
    assert f"wrote {tmp_path / 'paper_mix_offline.jsonl'} (1,000 problems)" in out and "note:" not in out


def test_lapo_data_reads_a_training_configs_recipe_and_seed_and_notes_a_changed_set(tmp_path, monkeypatch, capsys):
    recipe = paper_offline(tmp_path, monkeypatch)
    training = tmp_path / "stage1.yaml"
    training.write_text(yaml.safe_dump({"data": {"train_file": recipe, "seed": 3}}))
    assert data_main(["--config", str(training), "--rows", "1"]) == 0
    assert "seed 3: 1000 problems" in capsys.readouterr().out
    assert data_main(["--config", str(training), "--seed", "4"]) == 0
    assert "note: this replaced an earlier, different set" in capsys.readouterr().out
    training.write_text(yaml.safe_dump({"data": {"train_file": "data/math_train.jsonl"}}))
    assert data_main(["--config", str(training)]) == 2
    assert "is a problem file, not a data recipe" in capsys.readouterr().err


def test_the_paper_stage_configs_read_one_resolved_set(monkeypatch):
    monkeypatch.chdir(ROOT)
    stages = [yaml.safe_load((ROOT / "configs" / name).read_text())["data"] for name in ("stage1.yaml", "stage2.yaml")]
    assert stages[0]["train_file"] == stages[1]["train_file"] == "configs/data/paper_mix_offline.yaml"
    assert stages[0].get("seed", 0) == stages[1].get("seed", 0)
    hub = load_recipe(ROOT / "configs" / "data" / "paper_mix.yaml")
    assert [(s.path, s.config, s.split, s.count, s.min_level, s.max_level) for s in hub.sources] == [
        ("agentica-org/DeepScaleR-Preview-Dataset", "default", "train", 6000, None, None),
        ("DigitalLearningGmbH/MATH-lighteval", "default", "train", 4000, 3, 5)]
    offline = load_recipe(ROOT / "configs" / "data" / "paper_mix_offline.yaml")
    assert [vars(s.columns) for s in offline.sources] == [vars(s.columns) for s in hub.sources]


def test_lapo_dispatches_data(tmp_path, monkeypatch):
    from lapo_lightning.cli.main import main

    with pytest.raises(SystemExit) as done:
        main(["data", "--config", str(tmp_path / "missing.yaml")])
    assert done.value.code == 2


@pytest.mark.slow
def test_lapo_fit_stage_one_then_two_train_on_one_resolved_set(tmp_path, monkeypatch, capsys):
    """The debug LAPO chain with a recipe as data.train_file: stage 1 (one step over the whole
    4-problem set) writes the set in prepare_data; the stage-2 config reads the same file and its
    BudgetTargets accepts stage 1's table; a stage 2 that would draw another set (another seed)
    is refused at lapo fit's start-up with the command that resolves it."""
    from clitools import config_in, fit

    from lapo_lightning.callbacks.budgets import BudgetTargets
    from lapo_lightning.cli.main import build_cli
    from lapo_lightning.length_table import LengthTable

    monkeypatch.chdir(ROOT)
    recipe = recipe_file(tmp_path, output=str(tmp_path / "set.jsonl"), sources=[
        {"name": "debug", "path": "data/debug_arithmetic.jsonl", "columns": {"level": "level", "id": None}, "count": 4}])
    use = {"train_file: data/debug_arithmetic.jsonl": f"train_file: {recipe}"}
    small = ["--model.grpo.group_size", "2", "--model.grpo.micro_batch_size", "8", "--model.generation.max_new_tokens", "8"]
    stage1 = fit(config_in(tmp_path / "s1", "debug/stage1.yaml", **use), "--trainer.max_steps", "1", *small)
    written = (tmp_path / "set.jsonl").read_bytes()
    ids = stage1.datamodule.problem_ids
    assert len(ids) == 4 and all(pid.startswith("q-") for pid in ids)  # one step of 4 problems: the whole set
    table_path = next((tmp_path / "s1" / "runs").rglob("length_table.json"))
    table = LengthTable.load(table_path)
    assert table.metadata["dataset"]["content_hashes"] == stage1.datamodule.content_hashes()
    stage2_config = config_in(tmp_path / "s2", "debug/stage2.yaml", **use).read_text()
    stage2_config = stage2_config.replace(str(tmp_path / "s2" / "runs" / "debug_stage1"),
                                          str(tmp_path / "s1" / "runs" / "debug_stage1"))
    (tmp_path / "s2" / "stage2.yaml").write_text(stage2_config)
    stage2 = build_cli(["--config", str(tmp_path / "s2" / "stage2.yaml")], run=False)  # no training: its inputs
    (budgets,) = [cb for cb in stage2.trainer.callbacks if isinstance(cb, BudgetTargets)]
    stage2.datamodule.prepare_data()
    budgets.check_dataset(LengthTable.load(budgets.table), stage2.datamodule.problem_ids, stage2.datamodule.describe())
    assert stage2.datamodule.problem_ids == ids and (tmp_path / "set.jsonl").read_bytes() == written
    with pytest.raises((SystemExit, ValueError)) as err:  # lapo fit's start-up check, before any weights
        fit(tmp_path / "s2" / "stage2.yaml", "--data.seed", "1")
    message = str(err.value) + capsys.readouterr().err
    assert "drawn with seed 0, this run's data.seed is 1" in message and "lapo data --config" in message
