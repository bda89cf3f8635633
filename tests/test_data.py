"""Problem loading and LapoDataModule: file formats, ids, field names, every bad-input error,
seeded order, validation holdout, and ProblemBatch batches.

Run: HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 python -m pytest tests/test_data.py -q
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from lightning.pytorch.utilities import move_data_to_device

from lapo_lightning.data import LapoDataModule
from lapo_lightning.problem_sets.files import DataError, Problem, ProblemFields, load_problems, problem_id_for
from lapo_lightning.types import ProblemBatch

FIXTURES = Path(__file__).parent / "fixtures"
ROWS = [
    {"id": "a", "problem": "1+1?", "answer": "2", "level": 1},
    {"id": "b", "problem": "2+2?", "answer": 4, "level": 2},  # numeric answers are common
    {"id": "c", "problem": "half of 3?", "answer": 1.5},
]


def write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def numbered_rows(n: int) -> list[dict]:
    return [{"id": f"p{i}", "problem": f"What is {i}+{i}?", "answer": str(2 * i)} for i in range(n)]


# ----- load_problems -------------------------------------------------------------------------
def test_jsonl_json_and_parquet_give_the_same_problems(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    jsonl = write_jsonl(tmp_path / "p.jsonl", ROWS)
    (tmp_path / "p.json").write_text(json.dumps(ROWS))
    (tmp_path / "wrapped.json").write_text(json.dumps({"data": ROWS}))
    # Parquet columns have one type each, so its answers are already strings.
    pq.write_table(pa.Table.from_pylist([{**r, "answer": str(r["answer"])} for r in ROWS]), tmp_path / "p.parquet")
    expected = load_problems(jsonl, ProblemFields())
    assert [(p.id, p.problem, p.answer) for p in expected] == [("a", "1+1?", "2"), ("b", "2+2?", "4"), ("c", "half of 3?", "1.5")]
    assert expected[0].extra == {"level": 1}
    for name in ("p.json", "wrapped.json", "p.parquet"):
        assert load_problems(str(tmp_path / name), ProblemFields()) == expected, name


def test_json_file_with_one_object_per_line_is_read_as_json_lines(tmp_path):
    path = write_jsonl(tmp_path / "lines.json", ROWS)
    assert [p.id for p in load_problems(path, ProblemFields())] == ["a", "b", "c"]


def test_row_numbers_unsupported_types_and_non_objects(tmp_path):
    (tmp_path / "list.json").write_text(json.dumps([ROWS[0], {"id": "x", "problem": "p"}]))
    with pytest.raises(DataError, match=r"list\.json row 2; fields found: \['id', 'problem'\]"):
        load_problems(str(tmp_path / "list.json"), ProblemFields())
    (tmp_path / "p.csv").write_text("id,problem,answer\n")
    with pytest.raises(DataError, match=r"data\.train_file: unsupported file type '\.csv'"):
        load_problems(str(tmp_path / "p.csv"), ProblemFields())
    path = write_jsonl(tmp_path / "n.jsonl", [ROWS[0]])
    (tmp_path / "n.jsonl").write_text((tmp_path / "n.jsonl").read_text() + "[1, 2]\n")
    with pytest.raises(DataError, match=r"n\.jsonl line 2 is list, expected an object"):
        load_problems(path, ProblemFields())


def test_hashed_ids_are_stable_and_used_when_the_id_field_is_absent_or_empty(tmp_path):
    rows = [{"problem": "1+1?", "answer": "2"}, {"id": "", "problem": "2+2?", "answer": "4"}, {"id": 7, "problem": "x", "answer": "y"}]
    problems = load_problems(write_jsonl(tmp_path / "p.jsonl", rows), ProblemFields())
    assert problems[0].id == problem_id_for("1+1?") and problems[1].id == problem_id_for("2+2?")
    assert problems[2].id == "7"  # numeric ids become strings
    assert problem_id_for("1+1?") == problem_id_for("1+1?") != problem_id_for("1+1? ")
    assert problem_id_for("1+1?").startswith("sha1-") and len(problem_id_for("1+1?")) == 5 + 16
    no_id_field = load_problems(str(tmp_path / "p.jsonl"), ProblemFields(id=None))
    assert no_id_field[2].id == problem_id_for("x")


def test_custom_field_names(tmp_path):
    rows = [{"uid": "q1", "question": "3*3?", "final": 9, "source": "t"}]
    fields = ProblemFields(problem="question", answer="final", id="uid")
    (p,) = load_problems(write_jsonl(tmp_path / "c.jsonl", rows), fields)
    assert p == Problem("q1", "3*3?", "9", {"source": "t"}) and p.extra == {"source": "t"}


def test_missing_field_names_the_field_file_line_and_fields_found(tmp_path):
    rows = [ROWS[0], {"id": "z"}, {"id": "b", "problem": "p", "solution": "s"}]
    path = write_jsonl(tmp_path / "bad.jsonl", [ROWS[0], {"id": "b", "problem": "p", "solution": "s"}])
    with pytest.raises(DataError) as err:
        load_problems(path, ProblemFields())
    msg = str(err.value)
    assert "data.fields.answer" in msg and "'answer'" in msg and "bad.jsonl line 2" in msg
    assert "['id', 'problem', 'solution']" in msg
    path = write_jsonl(tmp_path / "bad2.jsonl", rows)
    with pytest.raises(DataError, match=r"data\.fields\.problem: field 'problem' not found in .*bad2\.jsonl line 2"):
        load_problems(path, ProblemFields())


def test_empty_answer_and_bad_json_are_reported(tmp_path):
    path = write_jsonl(tmp_path / "e.jsonl", [{"id": "a", "problem": "p", "answer": "  "}])
    with pytest.raises(DataError, match=r"field 'answer' is empty in .*e\.jsonl line 1"):
        load_problems(path, ProblemFields())
    (tmp_path / "j.jsonl").write_text('{"id": "a", "problem": "p", "answer": "1"}\n{oops\n')
    with pytest.raises(DataError, match=r"data\.train_file: .*j\.jsonl line 2 is not valid JSON"):
        load_problems(str(tmp_path / "j.jsonl"), ProblemFields())


def test_every_bad_line_of_a_file_is_reported_in_one_error(tmp_path):
    (tmp_path / "m.jsonl").write_text("\n".join([
        '{"id": "a", "problem": "p", "answer": "1"}',
        '{oops',                                          # line 2: not JSON
        '{"id": "b", "problem": "p2"}',                   # line 3: no answer
        '[1, 2]',                                         # line 4: not an object
        '{"id": "c", "problem": "p3", "answer": ["3"]}',  # line 5: a list answer
        '{"id": "a", "problem": "p4", "answer": "4"}',    # line 6: duplicate id
    ]) + "\n")
    with pytest.raises(DataError) as err:
        load_problems(str(tmp_path / "m.jsonl"), ProblemFields())
    lines = err.value.problems
    assert str(err.value) == "\n".join(lines)
    for expected in ("line 2 is not valid JSON", "field 'answer' not found in", "line 4 is list, expected an object",
                     "m.jsonl line 5 is a list ([\"3\"]), expected text or a number", "1 duplicate problem ids"):
        assert sum(expected in line for line in lines) == 1, (expected, lines)
    assert len(lines) == 5


def test_a_file_with_thousands_of_bad_lines_lists_the_first_and_counts_the_rest(tmp_path):
    from lapo_lightning.problem_sets.files import MAX_REPORTED

    (tmp_path / "bad.jsonl").write_text("{oops\n" * (MAX_REPORTED + 30))
    with pytest.raises(DataError) as err:
        load_problems(str(tmp_path / "bad.jsonl"), ProblemFields())
    assert len(err.value.problems) == MAX_REPORTED + 1
    assert err.value.problems[-1] == f"data.train_file: ... and 30 more problems in {tmp_path / 'bad.jsonl'}"


@pytest.mark.parametrize(("answer", "why"), [
    (["3"], 'is a list (["3"]), expected text or a number'),
    ({"value": 3}, 'is an object ({"value": 3}), expected text or a number'),
    (True, "is true/false (true), expected text or a number"),
])
def test_non_text_answers_are_refused_naming_file_line_and_field(tmp_path, answer, why):
    path = write_jsonl(tmp_path / "a.jsonl", [ROWS[0], {"id": "x", "problem": "p", "answer": answer}])
    with pytest.raises(DataError) as err:
        load_problems(path, ProblemFields())
    assert err.value.problems == [f"data.fields.answer: field 'answer' in {path} line 2 {why}"]


def test_numeric_answers_are_kept_as_text_but_not_infinite_ones(tmp_path):
    answers = [p.answer for p in load_problems(write_jsonl(tmp_path / "n.jsonl", ROWS), ProblemFields())]
    assert answers == ["2", "4", "1.5"]
    path = tmp_path / "inf.jsonl"
    path.write_text('{"id": "x", "problem": "p", "answer": Infinity}\n')  # Python's json reads it
    with pytest.raises(DataError, match=r"inf\.jsonl line 1 is inf, expected text or a finite number"):
        load_problems(str(path), ProblemFields())


@pytest.mark.parametrize(("pid", "why"), [
    ("../../outside", "a '..' path segment is not allowed in ids"),
    ("a/../../b", "a '..' path segment is not allowed in ids"),
    ("/etc/passwd", "an absolute path is not allowed as an id"),
    ("~/x", "an absolute path is not allowed as an id"),
    ("C:evil", "an absolute path is not allowed as an id"),
    ("a\\b", "backslashes (a path separator) are not allowed in ids"),
    ("two\nlines", "control characters (newline, tab, NUL, ...) are not allowed in ids"),
    ("nul\x00", "control characters (newline, tab, NUL, ...) are not allowed in ids"),
])
def test_ids_that_could_point_outside_a_folder_are_refused_naming_file_and_line(tmp_path, pid, why):
    path = write_jsonl(tmp_path / "ids.jsonl", [ROWS[0], {"id": pid, "problem": "p", "answer": "1"}])
    with pytest.raises(DataError) as err:
        load_problems(path, ProblemFields())
    assert err.value.problems == [f"data.fields.id: field 'id' in {path} line 2 is {pid!r}: {why}"]


def test_relative_slash_ids_as_in_math_are_accepted(tmp_path):
    path = write_jsonl(tmp_path / "ok.jsonl", [{"id": "train/algebra/0.json", "problem": "p", "answer": "1"},
                                               {"id": 7, "problem": "q", "answer": "2"}])
    assert [p.id for p in load_problems(path, ProblemFields())] == ["train/algebra/0.json", "7"]


# Characters str.splitlines() treats as line breaks but JSON allows raw inside a string.
UNICODE_BREAKS = "\u2028\u2029\x85\x0b\x0c\x1c\x1d\x1e"


@pytest.mark.parametrize("suffix", [".jsonl", ".json"])  # .json: one object per line, read as JSON lines
def test_line_separators_inside_strings_do_not_split_a_record(tmp_path, suffix):
    rows = [{"id": "a", "problem": f"x{UNICODE_BREAKS}y", "answer": "1"}, {"id": "b", "problem": "q", "answer": "2"}]
    path = tmp_path / f"u{suffix}"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\r\n" for r in rows), encoding="utf-8")
    problems = load_problems(str(path), ProblemFields())
    assert [p.problem for p in problems] == [f"x{UNICODE_BREAKS}y", "q"]
    (tmp_path / "bad.jsonl").write_text(json.dumps(rows[0], ensure_ascii=False) + "\n{oops\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"bad\.jsonl line 2 is not valid JSON"):  # numbering still by "\n"
        load_problems(str(tmp_path / "bad.jsonl"), ProblemFields())


def test_answer_questions_file_keeps_line_separators_inside_strings(tmp_path):
    from lapo_lightning.inference import read_questions  # `lapo answer --file`

    path = tmp_path / "q.jsonl"
    path.write_text(json.dumps({"problem": f"x{UNICODE_BREAKS}y"}, ensure_ascii=False) + "\r\n", encoding="utf-8")
    assert read_questions(str(path)) == [f"x{UNICODE_BREAKS}y"]
    (tmp_path / "q.txt").write_text(f"a{UNICODE_BREAKS}b\r\nc\n", encoding="utf-8")
    assert read_questions(str(tmp_path / "q.txt")) == [f"a{UNICODE_BREAKS}b", "c"]


def test_empty_dataset(tmp_path):
    (tmp_path / "empty.jsonl").write_text("\n\n")
    with pytest.raises(DataError, match=r"data\.train_file: .*empty\.jsonl holds no problems"):
        load_problems(str(tmp_path / "empty.jsonl"), ProblemFields())


def test_missing_file_names_the_config_key(tmp_path):
    missing = str(tmp_path / "nope.jsonl")
    with pytest.raises(DataError, match=r"data\.train_file: file not found: .*nope\.jsonl"):
        load_problems(missing, ProblemFields())
    with pytest.raises(DataError, match=r"data\.val_file: file not found"):
        load_problems(missing, ProblemFields(), key="data.val_file")


def test_duplicate_ids_name_two_duplicates(tmp_path):
    rows = numbered_rows(4) + [{"id": "p1", "problem": "x", "answer": "1"}, {"id": "p3", "problem": "y", "answer": "1"}]
    with pytest.raises(DataError) as err:
        load_problems(write_jsonl(tmp_path / "d.jsonl", rows), ProblemFields())
    msg = str(err.value)
    assert "2 duplicate problem ids" in msg and "'p1' (#2 and #5)" in msg and "'p3' (#4 and #6)" in msg
    same_text = [{"problem": "same", "answer": "1"}, {"problem": "same", "answer": "1"}]
    with pytest.raises(DataError, match="hashes of the problem text"):
        load_problems(write_jsonl(tmp_path / "s.jsonl", same_text), ProblemFields())


def test_hub_id_fails_fast_and_clearly_offline(monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(DataError, match=r"data\.train_file: could not load 'no-such-org/no-such-set'.*local"):
        load_problems("no-such-org/no-such-set", ProblemFields())


def test_fixtures_load():
    assert len(load_problems(str(FIXTURES / "math500_sample.jsonl"), ProblemFields())) == 5
    train = load_problems(str(FIXTURES / "train_sample.jsonl"), ProblemFields())
    assert len(train) == 12 and all(p.answer and "level" in p.extra for p in train)


# ----- LapoDataModule ------------------------------------------------------------------------
def test_init_checks_are_cheap_and_name_the_keys(tmp_path):
    with pytest.raises(DataError, match=r"data\.train_file: file not found"):
        LapoDataModule(str(tmp_path / "missing.jsonl"))
    with pytest.raises(DataError) as err:
        LapoDataModule(write_jsonl(tmp_path / "p.jsonl", ROWS), problems_per_step=0, val_fraction=1.0)
    assert err.value.problems == ["data.problems_per_step must be >= 1, got 0",
                                  "data.val_fraction must be in [0, 1), got 1.0"]
    # A broken file is not read in __init__: loading happens in setup().
    (tmp_path / "broken.jsonl").write_text("{not json\n")
    dm = LapoDataModule(str(tmp_path / "broken.jsonl"))
    with pytest.raises(DataError, match="not valid JSON"):
        dm.setup("fit")


def test_setup_is_idempotent_and_describes_the_data(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", numbered_rows(10))
    dm = LapoDataModule(path, max_problems=7)
    dm.setup("fit")
    first = dm.train_problems
    dm.setup("validate")
    assert dm.train_problems is first and dm.problem_ids == [f"p{i}" for i in range(7)]
    info = dm.describe()
    assert info["source"] == path and info["size"] == 7 and info["fingerprint"] == dm.fingerprint
    assert len(dm.fingerprint) == 12
    assert LapoDataModule(path, max_problems=6).fingerprint != dm.fingerprint


def test_batches_are_problem_batches_of_the_right_size(tmp_path):
    dm = LapoDataModule(write_jsonl(tmp_path / "p.jsonl", numbered_rows(10)), problems_per_step=4)
    batches = list(dm.train_dataloader())
    assert [len(b) for b in batches] == [4, 4, 2]  # drop_last=False
    assert all(isinstance(b, ProblemBatch) and b.budgets == [None] * len(b) for b in batches)
    assert sorted(pid for b in batches for pid in b.problem_ids) == sorted(dm.problem_ids)
    b = batches[0]
    assert all(b.answers[i] == str(2 * int(pid[1:])) for i, pid in enumerate(b.problem_ids))


def test_order_is_seeded_per_epoch_and_resumes_mid_epoch(tmp_path):
    """The order of epoch e depends on (seed, e) only; a restored position skips done batches."""
    dm = LapoDataModule(write_jsonl(tmp_path / "p.jsonl", numbered_rows(10)), problems_per_step=4, seed=3)

    def epoch_ids(loader, epoch: int) -> list[str]:
        loader.sampler.set_epoch(epoch)  # what Lightning does at each epoch start
        return [pid for b in loader for pid in b.problem_ids]

    loader = dm.train_dataloader()
    first, second = epoch_ids(loader, 0), epoch_ids(loader, 1)
    assert first != second and sorted(first) == sorted(second)
    assert epoch_ids(dm.train_dataloader(), 1) == second  # a fresh process agrees

    dm.load_state_dict({"epoch": 1, "batches_done": 1})  # as saved in a mid-epoch checkpoint
    resumed = dm.train_dataloader()
    assert epoch_ids(resumed, 1) == second[4:]  # the first batch is not trained on twice
    assert epoch_ids(resumed, 1) == second  # the skip applies once


def test_seeded_order_is_reproducible(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", numbered_rows(30))

    def order(seed: int) -> list[str]:
        return [pid for b in LapoDataModule(path, problems_per_step=5, seed=seed).train_dataloader() for pid in b.problem_ids]

    assert order(3) == order(3)
    assert order(3) != order(4) and order(3) != [f"p{i}" for i in range(30)]


def test_val_fraction_holdout_is_seeded_and_disjoint(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", numbered_rows(20))
    dm = LapoDataModule(path, val_fraction=0.25, seed=1, problems_per_step=3)
    val_ids = [p.id for p in dm.val_problems]
    assert len(val_ids) == 5 and len(dm.problem_ids) == 15
    assert not set(val_ids) & set(dm.problem_ids)
    assert val_ids == [p.id for p in LapoDataModule(path, val_fraction=0.25, seed=1).val_problems]
    val_batches = list(dm.val_dataloader())
    assert [len(b) for b in val_batches] == [3, 2] and all(isinstance(b, ProblemBatch) for b in val_batches)
    assert [pid for b in val_batches for pid in b.problem_ids] == val_ids  # not shuffled


def test_val_file_and_no_validation(tmp_path):
    train = write_jsonl(tmp_path / "t.jsonl", numbered_rows(6))
    val = write_jsonl(tmp_path / "v.jsonl", ROWS)
    dm = LapoDataModule(train, val_file=val)
    assert [p.id for p in dm.val_problems] == ["a", "b", "c"] and len(dm.problem_ids) == 6
    assert LapoDataModule(train).val_dataloader() == []  # Lightning then skips validation
    with pytest.raises(DataError, match="data.val_file or data.val_fraction"):
        LapoDataModule(train, val_file=val, val_fraction=0.1)
    with pytest.raises(DataError, match="leaves no training problems"):
        LapoDataModule(write_jsonl(tmp_path / "one.jsonl", ROWS[:1]), val_fraction=0.5).setup()


def test_problem_batch_survives_transfer_to_device():
    batch = ProblemBatch(problem_ids=["a", "b"], problems=["p", "q"], answers=["1", "2"], budgets=[None, 300])
    moved = move_data_to_device(batch, torch.device("cpu"))
    assert isinstance(moved, ProblemBatch) and moved == batch


def test_bucketed_order_is_a_seeded_permutation_of_similar_length_batches():
    from lapo_lightning.order import EpochShuffle

    lengths = [(i * 37) % 101 for i in range(256)]
    sampler = EpochShuffle(256, seed=1, lengths=lengths, batch_size=8, pool=4)
    order = list(sampler)
    assert sorted(order) == list(range(256)) and order == list(EpochShuffle(256, 1, lengths=lengths, batch_size=8, pool=4))
    batches = [order[i:i + 8] for i in range(0, 256, 8)]
    spread = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches) / len(batches)
    plain = list(EpochShuffle(256, seed=1))
    plain_spread = sum(max(lengths[i] for i in plain[k:k + 8]) - min(lengths[i] for i in plain[k:k + 8])
                       for k in range(0, 256, 8)) / 32
    assert spread < 0.5 * plain_spread  # padding saved
    sampler.set_epoch(1)
    assert list(sampler) != order  # a new order each epoch
    sampler.set_epoch(0)
    sampler.skip_once(0, 24)
    assert list(sampler) == order[24:]  # the resume skip applies to the bucketed order
