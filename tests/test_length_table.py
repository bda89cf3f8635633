"""LengthTable: save/load round trip, version/format/corrupt-file/malformed-entry errors, atomic
writes that leave no partial or temp file, target rounding, coverage, match report, summary
quantiles computed by hand, check_writable, and the ``python -m lapo_lightning.length_table`` entry.

Run: HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 python -m pytest tests/test_length_table.py -q
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from lapo_lightning.safety import atomic
from lapo_lightning import length_table as lt
from lapo_lightning.length_table import FORMAT_VERSION, LengthEntry, LengthTable, LengthTableError, check_writable, main

FIXTURES = Path(__file__).parent / "fixtures"


def solved(median: float, step: int = 3) -> LengthEntry:
    return LengthEntry(median=median, low=median - 10, high=median + 10, count=4, last_step=step, solved=True)


UNSOLVED = LengthEntry(median=None, low=None, high=None, count=0, last_step=5, solved=False)


@pytest.fixture
def table() -> LengthTable:
    # targets 100, 101 (100.5 rounds half up), 200, 400; "u" unsolved
    entries = {"a": solved(100.0), "b": solved(100.5), "c": solved(200.0), "d": solved(399.6), "u": UNSOLVED}
    return LengthTable(entries, {"run": "stage1-debug", "step": 12})


def test_round_trip(tmp_path, table):
    path = tmp_path / "out" / "length_table.json"  # parent created on save
    table.save(path)
    loaded = LengthTable.load(path)
    assert loaded == table
    raw = json.loads(path.read_text())
    assert raw["format"] == "lapo-length-table" and raw["version"] == FORMAT_VERSION == 1
    assert raw["entries"]["u"] == {"median": None, "low": None, "high": None, "count": 0, "last_step": 5, "solved": False}
    assert LengthTable.from_dict(table.to_dict()) == table  # the checkpoint path


def test_targets_round_half_up_and_none_when_unsolved_or_missing(table):
    assert [table.target(k) for k in "abcd"] == [100, 101, 200, 400]
    assert table.target("u") is None and table.target("nope") is None
    assert LengthTable({"x": solved(102.5)}).target("x") == 103  # not banker's rounding (102)


def test_coverage_and_match_report(table):
    ids = ["a", "b", "u", "new1", "new2"]
    assert table.coverage(ids) == pytest.approx(2 / 5)
    assert table.coverage([]) == 0.0
    report = table.match_report(ids)
    assert {k: v for k, v in report.items() if not k.endswith("examples")} == {
        "dataset": 5,
        "table": 5,
        "in_both": 3,
        "with_target": 2,
        "unsolved": 1,
        "missing_from_table": 2,
        "unknown_to_dataset": 2,
    }
    assert report["missing_examples"] == ["new1", "new2"] and report["unknown_examples"] == ["c", "d"]


def test_summary_quantiles_by_hand(table):
    s = table.summary()
    assert s["count"] == 5 and s["solved"] == 4 and s["unsolved_share"] == pytest.approx(0.2)
    # targets sorted [100, 101, 200, 400]; position q*(4-1), linear interpolation:
    # q=0.1 -> 0.3: 100 + 0.3*1 = 100.3;  q=0.25 -> 0.75: 100.75;  q=0.5 -> 1.5: 101 + 0.5*99 = 150.5
    # q=0.75 -> 2.25: 200 + 0.25*200 = 250;  q=0.9 -> 2.7: 200 + 0.7*200 = 340
    expected = {0.0: 100, 0.1: 100.3, 0.25: 100.75, 0.5: 150.5, 0.75: 250, 0.9: 340, 1.0: 400}
    assert s["quantiles"] == pytest.approx(expected)
    text = table.format_summary()
    assert "5 problems, 4 solved (20.0% unsolved)" in text and "median 150.5" in text and "p90 340" in text
    assert "run: stage1-debug" in text and len(text.splitlines()) >= 3
    empty = LengthTable({"u": UNSOLVED}).summary()
    assert empty["solved"] == 0 and empty["quantiles"] == {} and empty["unsolved_share"] == 1.0


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(LengthTableError, match=r"length table not found: .*nope\.json"):
        LengthTable.load(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "lapo-length-table", "vers')
    with pytest.raises(LengthTableError, match=r"bad\.json: corrupt length table, not valid JSON"):
        LengthTable.load(bad)
    bad.write_text(json.dumps([1, 2]))
    with pytest.raises(LengthTableError, match="not a length table"):
        LengthTable.load(bad)


@pytest.mark.parametrize("version", [2, None, "1"])
def test_wrong_or_missing_version(tmp_path, table, version):
    data = table.to_dict()
    data["version"] = version
    if version is None:
        del data["version"]
    (tmp_path / "t.json").write_text(json.dumps(data))
    with pytest.raises(LengthTableError, match=rf"t\.json: length table version {version!r} found, expected 1"):
        LengthTable.load(tmp_path / "t.json")


@pytest.mark.parametrize(
    "change, why",
    [
        ({"median": "120"}, "median must be a number"),
        ({"count": 2.0}, "count must be an integer"),
        ({"solved": "yes"}, "solved must be true/false"),
        ({"solved": False}, "solved=False but median=100.0"),
        ({"extra": 1}, "fields"),
    ],
)
def test_malformed_entry_names_the_problem_id(tmp_path, table, change, why):
    data = table.to_dict()
    data["entries"]["a"].update(change)
    (tmp_path / "t.json").write_text(json.dumps(data))
    with pytest.raises(LengthTableError, match=rf"malformed entry for problem id 'a': .*{why}"):
        LengthTable.load(tmp_path / "t.json")


def test_interrupted_save_keeps_the_old_table_and_leaves_no_temp_file(tmp_path, table, monkeypatch):
    path = tmp_path / "length_table.json"
    old = LengthTable({"old": solved(50.0)}, {"step": 1})
    old.save(path)
    before = path.read_bytes()

    def crash(fd):
        raise KeyboardInterrupt  # even a Ctrl-C mid-write (temp file written, not yet renamed)

    monkeypatch.setattr(atomic.os, "fsync", crash)
    with pytest.raises(KeyboardInterrupt):
        table.save(path)
    assert path.read_bytes() == before and LengthTable.load(path) == old
    assert [p.name for p in tmp_path.iterdir()] == ["length_table.json"]
    # No target at all before a failed first save either.
    with pytest.raises(KeyboardInterrupt):
        table.save(tmp_path / "fresh.json")
    assert [p.name for p in tmp_path.iterdir()] == ["length_table.json"]


def test_nan_median_fails_before_replacing(tmp_path, table):
    path = tmp_path / "t.json"
    table.save(path)
    with pytest.raises(ValueError):
        LengthTable({"n": solved(float("nan"))}).save(path)
    assert LengthTable.load(path) == table and len(list(tmp_path.iterdir())) == 1


def test_check_writable(tmp_path):
    check_writable(tmp_path / "new" / "dir" / "table.json")  # creates the parent
    assert (tmp_path / "new" / "dir").is_dir() and not list((tmp_path / "new" / "dir").iterdir())
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(LengthTableError, match=r"cannot write the length table to .*a_file/sub/table\.json"):
        check_writable(blocker / "sub" / "table.json")
    with pytest.raises(LengthTableError, match="is a directory"):
        check_writable(tmp_path)


def test_main_prints_summary_and_match_report(tmp_path, table, capsys):
    table.save(tmp_path / "t.json")
    assert main([str(tmp_path / "t.json")]) == 0
    out = capsys.readouterr().out
    assert "5 problems, 4 solved" in out and "missing_from_table" not in out
    math_ids = ["test/precalculus/807.json"]  # first row of the fixture
    LengthTable({math_ids[0]: solved(300.0), "gone": UNSOLVED}).save(tmp_path / "m.json")
    assert main([str(tmp_path / "m.json"), "--dataset", str(FIXTURES / "math500_sample.jsonl")]) == 0
    out = capsys.readouterr().out
    assert "coverage 20.0%" in out and "in_both: 1" in out and "missing_from_table: 4" in out
    assert "unknown_to_dataset: 1" in out


def test_main_advises_when_few_problems_have_a_target(tmp_path, table, capsys):
    LengthTable({"u": UNSOLVED, "v": UNSOLVED}).save(tmp_path / "none.json")
    assert main([str(tmp_path / "none.json")]) == 0
    out = capsys.readouterr().out
    assert "0 solved (100.0% unsolved)" in out and "advice: only 0% of the problems have a target" in out
    for hint in ("fallback budget", "verify/miss_rate", "verify/unclosed_think_rate", "think_tags: false",
                 "model.grpo.group_size", "model.generation.max_new_tokens", "easier training data"):
        assert hint in out, hint
    table.save(tmp_path / "t.json")  # 4 of 5 solved: no advice
    assert main([str(tmp_path / "t.json")]) == 0 and "advice" not in capsys.readouterr().out
    # Against a dataset, the coverage stage 2 will see decides (1 of 5 problems here).
    LengthTable({"test/precalculus/807.json": solved(300.0)}).save(tmp_path / "m.json")
    assert main([str(tmp_path / "m.json"), "--dataset", str(FIXTURES / "math500_sample.jsonl")]) == 0
    assert "advice: only 20% of the problems" in capsys.readouterr().out


def test_lapo_table_imports_no_training_stack(tmp_path, table):
    # `lapo table` used to import torch, transformers and Lightning first: seconds for a JSON summary.
    table.save(tmp_path / "t.json")
    script = ("import sys; from lapo_lightning.cli.main import main\n"
              "try:\n    main(['table', sys.argv[1]])\nexcept SystemExit as e:\n    assert e.code == 0, e.code\n"
              "print(sorted(m for m in ('torch', 'transformers', 'lightning', 'peft') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", script, str(tmp_path / "t.json")], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "5 problems, 4 solved" in out.stdout and out.stdout.strip().endswith("[]")


def test_main_bad_input_exits_2_with_one_line(tmp_path, capsys):
    assert main([str(tmp_path / "missing.json")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: length table not found") and err.count("\n") == 1
    (tmp_path / "t.json").write_text("{")
    assert main([str(tmp_path / "t.json")]) == 2
    LengthTable({}).save(tmp_path / "ok.json")
    assert main([str(tmp_path / "ok.json"), "--dataset", str(tmp_path / "nope.jsonl")]) == 2
    assert "--dataset: file not found" in capsys.readouterr().err


# ----- medians no run can produce: refused naming the file and the problem --------------------
def write_raw_median(path: Path, median_text: str) -> Path:
    """A one-entry table whose median is the literal JSON ``median_text`` (NaN/Infinity included)."""
    entry = '{"median": %s, "low": 1.0, "high": 2.0, "count": 3, "last_step": 0, "solved": true}' % median_text
    path.write_text('{"format": "lapo-length-table", "version": %d, "metadata": {}, "entries": {"p/7": %s}}'
                    % (FORMAT_VERSION, entry))
    return path


@pytest.mark.parametrize("median", ["0", "0.4", "-3", "1e9", "NaN", "Infinity", "-Infinity"])
def test_impossible_median_is_refused_naming_file_and_problem(tmp_path, median):
    path = write_raw_median(tmp_path / "t.json", median)
    with pytest.raises(LengthTableError) as err:
        LengthTable.load(path)
    assert str(err.value).startswith(f"{path}: malformed entry for problem id 'p/7': median ")
    assert "is not a token count" in str(err.value)


@pytest.mark.parametrize("median", ["1", "12.5", "399.6", "1000000"])
def test_possible_medians_load(tmp_path, median):
    assert LengthTable.load(write_raw_median(tmp_path / "t.json", median)).entries["p/7"].median == float(median)


def test_lapo_table_exits_non_zero_on_a_negative_median(tmp_path, capsys):
    path = write_raw_median(tmp_path / "t.json", "-5")
    assert main([str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {path}: malformed entry for problem id 'p/7': median -5 is not a token count")


def test_complete_mark(tmp_path):
    assert LengthTable({}, {"complete": True}).complete is True
    assert LengthTable({}, {"complete": False}).complete is False
    assert LengthTable({}, {}).complete is None  # a table from before the mark
