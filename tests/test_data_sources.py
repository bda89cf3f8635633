"""One data source through ``datasets``: every place a source can live (a local folder laid out
like a hub dataset repository, loaded by the hub's own code path; a save_to_disk folder; JSONL,
JSON, Parquet and CSV files), the column mapping (answer or a solution's last box, level, id),
and every bad input with its message.

Run: HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 python -m pytest tests/test_data_sources.py -q
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lapo_lightning.problem_sets.sources import Columns, Source, open_dataset, source_from_dict, standardise
from lapo_lightning.problem_sets.text import level_value, normalise, text_id, text_key
from lapo_lightning.problem_sets.files import DataError

ROWS = [
    {"problem": "What is $1+1$?", "level": "Level 3", "type": "Algebra", "solution": "It is $\\boxed{2}$."},
    {"problem": "Compute $\\frac{1}{2}+\\frac{1}{2}$.", "level": "Level 5", "type": "Algebra",
     "solution": "First \\boxed{0}, no: $\\boxed{\\frac{2}{2}}=1$, so \\boxed{1}."},
    {"problem": "Find x.", "level": "Level ?", "type": "Geometry", "solution": "No box here."},
]
MATH_COLUMNS = {"problem": "problem", "answer": None, "solution": "solution", "level": "level", "id": None}


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def hub_folder(root: Path, train: list[dict], test: list[dict] | None = None) -> Path:
    """A folder as a hub dataset repository is laid out: data files and a README.md card naming them."""
    write_jsonl(root / "data" / "train.jsonl", train)
    write_jsonl(root / "data" / "test.jsonl", test or train[:1])
    (root / "README.md").write_text(
        "---\nconfigs:\n- config_name: default\n  data_files:\n  - split: train\n    path: data/train.jsonl\n"
        "  - split: test\n    path: data/test.jsonl\nlicense: mit\n---\n# A MATH-like set\n", encoding="utf-8")
    return root


def load(source: Source, tmp_path: Path):
    return standardise(open_dataset(source, str(tmp_path / "cache")), source)


def test_a_hub_layout_folder_loads_through_the_hub_path_with_config_and_split(tmp_path, monkeypatch):
    import datasets

    folder = hub_folder(tmp_path / "MATH-like", ROWS, [{"problem": "test row", "solution": "\\boxed{7}",
                                                       "level": "Level 1", "type": "x"}])
    calls = []
    real = datasets.load_dataset
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: calls.append((a, k)) or real(*a, **k))
    source = source_from_dict({"path": str(folder), "config": "default", "split": "train", "columns": MATH_COLUMNS},
                               "sources[0]")
    ds = load(source, tmp_path)
    # The same call a hub id gets: the folder in place of the id, with config and split.
    assert calls == [((str(folder), "default"), {"split": "train", "revision": None, "cache_dir": str(tmp_path / "cache")})]
    assert ds["answer"] == ["2", "1", None] and ds["level"] == [3.0, 5.0, None]
    assert ds["issue"] == [None, None, "no \\boxed{} answer in its solution"]
    assert ds["id"][:2] == [text_id(text_key(r["problem"])) for r in ROWS[:2]] and ds["row"] == [1, 2, 3]
    assert set(ds["source"]) == {"MATH-like"}  # the default name: the folder's
    test = load(source_from_dict({"path": str(folder), "split": "test", "columns": MATH_COLUMNS}, "s"), tmp_path)
    assert test["answer"] == ["7"] and test["level"] == [1.0]


def test_a_folder_of_data_files_without_a_card_loads_its_split_from_the_file_names(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "plain").mkdir()
    pq.write_table(pa.Table.from_pylist([{"problem": "p1", "answer": "1"}, {"problem": "p2", "answer": "2"}]),
                   tmp_path / "plain" / "train.parquet")
    pq.write_table(pa.Table.from_pylist([{"problem": "t1", "answer": "3"}]), tmp_path / "plain" / "test.parquet")
    train = load(source_from_dict({"path": str(tmp_path / "plain")}, "s"), tmp_path)
    test = load(source_from_dict({"path": str(tmp_path / "plain"), "split": "test"}, "s"), tmp_path)
    assert train["problem"] == ["p1", "p2"] and test["answer"] == ["3"]


def test_hub_layout_folder_config_and_split_errors_name_the_setting(tmp_path):
    folder = hub_folder(tmp_path / "hub", ROWS)
    with pytest.raises(DataError, match=r"sources\[0\]\.config: 'nope' is not a configuration of .*hub.*default"):
        load(source_from_dict({"path": str(folder), "config": "nope", "columns": MATH_COLUMNS}, "sources[0]"), tmp_path)
    with pytest.raises(DataError, match=r"sources\[0\]\.split: 'validation' is not a split of .*hub"):
        load(source_from_dict({"path": str(folder), "split": "validation", "columns": MATH_COLUMNS}, "sources[0]"),
             tmp_path)


def test_a_hub_id_offline_says_what_to_do(tmp_path, monkeypatch):
    import datasets

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    calls = []
    real = datasets.load_dataset
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: calls.append((a, k)) or real(*a, **k))
    source = source_from_dict({"path": "no-such-org/no-such-set", "revision": "abc123"}, "sources[2]")
    with pytest.raises(DataError) as err:
        load(source, tmp_path)
    # The call a hub-layout folder gets too (test above), with the revision a hub id may pin.
    assert calls == [(("no-such-org/no-such-set", None), {"split": "train", "revision": "abc123",
                                                         "cache_dir": str(tmp_path / "cache")})]
    text = str(err.value)
    assert text.startswith("sources[2].path: could not load 'no-such-org/no-such-set' (config None, split train, "
                           "revision abc123)") and "Use a local file or folder" in text


def test_files_of_every_format_and_a_save_to_disk_folder_give_the_same_rows(tmp_path):
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"question": "2+2?", "final": 4, "uid": "a", "difficulty": 1.5},
            {"question": "3*3?", "final": "9", "uid": "b", "difficulty": 2.0}]
    write_jsonl(tmp_path / "p.jsonl", rows)
    (tmp_path / "p.json").write_text(json.dumps(rows))
    as_text = [{**r, "final": str(r["final"])} for r in rows]  # Parquet and CSV columns have one type
    pq.write_table(pa.Table.from_pylist(as_text), tmp_path / "p.parquet")
    (tmp_path / "p.csv").write_text("question,final,uid,difficulty\n2+2?,4,a,1.5\n3*3?,9,b,2.0\n")
    datasets.Dataset.from_list(as_text).save_to_disk(str(tmp_path / "saved"))
    datasets.DatasetDict({"train": datasets.Dataset.from_list(as_text)}).save_to_disk(str(tmp_path / "saved_dict"))
    columns = {"problem": "question", "answer": "final", "level": "difficulty", "id": "uid"}
    for name in ("p.jsonl", "p.json", "p.parquet", "p.csv", "saved", "saved_dict"):
        ds = load(source_from_dict({"path": str(tmp_path / name), "columns": columns}, "s"), tmp_path)
        got = [(r["id"], r["problem"], r["answer"], r["level"]) for r in ds]
        assert got == [("a", "2+2?", "4", 1.5), ("b", "3*3?", "9", 2.0)], name
    with pytest.raises(DataError, match=r"s\.split: 'test' is not a split of .*saved_dict .*\['train'\]"):
        load(source_from_dict({"path": str(tmp_path / "saved_dict"), "split": "test", "columns": columns}, "s"),
             tmp_path)


def test_a_missing_column_names_the_setting_and_the_columns_found(tmp_path):
    path = write_jsonl(tmp_path / "q.jsonl", [{"question": "1+1?", "answer": "2"}])
    with pytest.raises(DataError) as err:
        load(source_from_dict({"path": str(path), "columns": {"level": "lvl"}}, "sources[1]"), tmp_path)
    assert err.value.problems == [
        f"sources[1].columns.problem: column 'problem' not in {path}; its columns: ['question', 'answer']",
        f"sources[1].columns.level: column 'lvl' not in {path}; its columns: ['question', 'answer']"]


def test_a_list_column_is_refused_by_type(tmp_path):
    path = write_jsonl(tmp_path / "l.jsonl", [{"problem": "p", "answer": ["1", "2"]}])
    with pytest.raises(DataError, match=r"sources\[0\]\.columns\.answer: column 'answer' of .*l\.jsonl holds List"):
        load(source_from_dict({"path": str(path)}, "sources[0]"), tmp_path)


def test_bad_jsonl_lines_keep_their_file_and_line_messages(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"problem": "p", "answer": "1"}\n{oops\n[1, 2]\n', encoding="utf-8")
    with pytest.raises(DataError) as err:
        load(source_from_dict({"path": str(path)}, "sources[0]"), tmp_path)
    assert err.value.problems[0].startswith(f"sources[0].path: {path} line 2 is not valid JSON")
    assert err.value.problems[1] == f"sources[0].path: {path} line 3 is list, expected an object"


def test_missing_and_unsupported_files(tmp_path):
    with pytest.raises(DataError, match=r"sources\[0\]\.path: file not found: .*nope\.jsonl \(found nothing there\)"):
        load(source_from_dict({"path": str(tmp_path / "nope.jsonl")}, "sources[0]"), tmp_path)
    (tmp_path / "p.txt").write_text("x")
    with pytest.raises(DataError, match=r"unsupported file type '\.txt' .*\.jsonl, \.json, \.parquet or \.csv"):
        load(source_from_dict({"path": str(tmp_path / "p.txt")}, "sources[0]"), tmp_path)


def test_rows_without_problem_or_answer_are_marked_and_unsafe_ids_are_refused(tmp_path):
    rows = [{"id": "a", "problem": "p", "answer": ""}, {"id": "b", "problem": None, "answer": "1"},
            {"id": 7, "problem": "q", "answer": 3.5}]
    ds = load(source_from_dict({"path": str(write_jsonl(tmp_path / "r.jsonl", rows)), "columns": {"id": "id"}}, "s"),
              tmp_path)
    assert ds["issue"] == ["empty answer", "no problem", None] and ds["id"] == ["a", "b", "7"] and ds["answer"][2] == "3.5"
    bad = write_jsonl(tmp_path / "ids.jsonl", [{"id": "../x", "problem": "p", "answer": "1"}])
    with pytest.raises(DataError, match=r"s\.columns\.id: column 'id' of .*ids\.jsonl: id in row 1 is '\.\./x': "
                                        r"a '\.\.' path segment is not allowed in ids"):
        load(source_from_dict({"path": str(bad), "columns": {"id": "id"}}, "s"), tmp_path)


@pytest.mark.parametrize(("raw", "says"), [
    ({"path": "x.jsonl", "colums": {}}, "sources[0].colums: unknown setting (known: path, name, config"),
    ({"columns": {}}, "sources[0].path: required"),
    ({"path": "x.jsonl", "count": 0}, "sources[0].count: expected a whole number >= 1, found 0"),
    ({"path": "x.jsonl", "fraction": 1.5}, "sources[0].fraction: expected a number in (0, 1], found 1.5"),
    ({"path": "x.jsonl", "count": 5, "fraction": 0.5}, "sources[0]: set count or fraction, not both"),
    ({"path": "x.jsonl", "min_level": 5, "max_level": 3}, "sources[0]: min_level 5 is above max_level 3"),
    ({"path": "x.jsonl", "columns": {"question": "q"}}, "sources[0].columns.question: unknown role"),
    ({"path": "x.jsonl", "columns": {"answer": None}}, "sources[0].columns: name an answer column"),
    ("x.jsonl", "sources[0]: expected a mapping"),
])
def test_bad_source_settings_name_the_key(raw, says):
    with pytest.raises(DataError) as err:
        source_from_dict(raw, "sources[0]")
    assert says in str(err.value)


def test_text_keys_and_levels():
    assert normalise("Compute  $2 + 3$.\n") == normalise("COMPUTE 2+3.") == "compute2+3."
    assert text_key("What is 1+1?") == text_key("  what is 1 + 1 ?") != text_key("What is 1+2?")
    assert text_id(text_key("x")).startswith("q-") and len(text_id(text_key("x"))) == 18
    assert [level_value(v) for v in (3, "Level 4", 2.5, "Level ?", None, True, float("nan"))] == \
        [3.0, 4.0, 2.5, None, None, None, None]
    assert Source("a/b").describe() == "a/b (train)"
    assert Source("a/b", config="default", revision="abc").describe() == "a/b (default, train, revision abc)"
    assert Columns().answer == "answer"
