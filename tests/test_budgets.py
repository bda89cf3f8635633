"""The stage-2 BudgetTargets callback driven with synthetic step summaries (no model).

Covers budgets/targets from the table and the fallback, the Eq. 8 refinement semantics,
adherence metrics, the state_dict round trip (either restore order), the refined table
file, and start-up errors/warnings. Run: pytest tests/test_budgets.py -q
"""

from __future__ import annotations

import json

import math
from types import SimpleNamespace

import pytest
import torch

from lapo_lightning.callbacks.budgets import BudgetTargets
from lapo_lightning.length_table import LengthEntry, LengthTable, LengthTableError
from lapo_lightning.rewards import Accuracy, BudgetGaussian
from lapo_lightning.types import ProblemBatch, StepSummary


def entry(median: float | None, step: int = 0) -> LengthEntry:
    solved = median is not None
    return LengthEntry(median=median, low=median, high=median, count=int(solved), last_step=step, solved=solved)


@pytest.fixture
def table_path(tmp_path):
    path = tmp_path / "stage1" / "length_table.json"
    LengthTable({"a": entry(100.5), "b": entry(None), "d": entry(40.0)},
                {"dataset": {"fingerprint": "fp-1"}, "complete": True, "step": 6}).save(path)
    return path


class FakeData:
    def __init__(self, ids: list[str], fingerprint: str = "fp-1") -> None:
        self.problem_ids, self._fp, self.content, self.hashes = ids, fingerprint, None, None

    def describe(self) -> dict:
        return {"source": "fake.jsonl", "size": len(self.problem_ids), "fingerprint": self._fp,
                "content_fingerprint": self.content, "content_hashes": self.hashes}


def fakes(tmp_path, ids=("a", "b", "c", "d"), fingerprint="fp-1", rewards=None):
    logged: list[dict] = []
    trainer = SimpleNamespace(log_dir=str(tmp_path / "logs"), default_root_dir=str(tmp_path), is_global_zero=True,
                              world_size=1, global_step=0, datamodule=FakeData(list(ids), fingerprint))
    module = SimpleNamespace(generation=SimpleNamespace(max_new_tokens=32), rewards=rewards or [Accuracy()],
                             policy_config=SimpleNamespace(model="tiny:llama", adapter=None),
                             log_dict=lambda metrics, batch_size: logged.append(metrics))
    return trainer, module, logged


def ready(tmp_path, table_path, **kwargs) -> tuple[BudgetTargets, SimpleNamespace, SimpleNamespace, list]:
    trainer, module, logged = fakes(tmp_path, rewards=kwargs.pop("rewards", None))
    callback = BudgetTargets(table=str(table_path), allow_partial_match=True, **kwargs)
    with pytest.warns(UserWarning):  # "c" is missing and "b" unsolved
        callback.setup(trainer, module, "fit")
    return callback, trainer, module, logged


def batch(ids: list[str]) -> ProblemBatch:
    return ProblemBatch(problem_ids=ids, problems=[f"q {i}" for i in ids], answers=["1"] * len(ids))


def summary(step: int, ids: list[str], lengths: list[list[int]], correct: list[list[bool]],
            budgets: list[float | None]) -> StepSummary:
    g = len(lengths[0])
    group_index = torch.arange(len(ids)).repeat_interleave(g)
    per_problem = torch.tensor([math.nan if b is None else b for b in budgets])
    n = len(ids) * g
    return StepSummary(step=step, problem_ids=ids, group_index=group_index, lengths=torch.tensor(lengths).flatten(),
                       correct=torch.tensor(correct).flatten(), truncated=torch.zeros(n, dtype=torch.bool),
                       budgets=per_problem[group_index], targets=per_problem[group_index],
                       rewards={"total": torch.zeros(n)})


def test_budgets_and_targets_come_from_the_table_with_the_cap_as_fallback(tmp_path, table_path):
    callback, *_ = ready(tmp_path, table_path)
    b = batch(["a", "b", "c", "d"])
    callback.on_train_batch_start(None, None, b, 0)
    # 100.5 rounds half up; unsolved "b" and missing "c" state the 32-token cap, with no target.
    assert b.budgets == [101, 32, 32, 40]
    assert b.targets == [100.5, None, None, 40.0]
    assert callback.tolerance == 120.0  # no BudgetGaussian configured: the paper's sigma


def test_explicit_fallback_and_sigma_from_the_reward(tmp_path, table_path):
    callback, *_ = ready(tmp_path, table_path, fallback_budget=50, rewards=[Accuracy(), BudgetGaussian(sigma=8)])
    b = batch(["b", "c"])
    callback.apply(b)
    assert b.budgets == [50, 50] and b.targets == [None, None]
    assert callback.tolerance == 8.0
    assert callback.fallback_budget == 50


def test_refinement_shrinks_solves_and_never_grows(tmp_path, table_path):
    callback, trainer, module, logged = ready(tmp_path, table_path)
    # Step 0: "a" (target 100.5) solved at median 80 -> shrinks; "b" (unsolved) solved at
    # median 60 -> gets its first target; "c" (missing) unsolved -> stays without one.
    s0 = summary(0, ["a", "b", "c"], [[70, 90, 500, 500], [50, 70, 9, 9], [5, 5, 5, 5]],
                 [[True, True, False, False], [True, True, False, False], [False] * 4], [101, 32, 32])
    callback.on_train_batch_end(trainer, module, {"summary": s0}, None, 0)
    assert callback.targets["a"] == 80.0 and callback.targets["b"] == 60.0 and callback.targets.get("c") is None
    assert callback.entries["a"] == LengthEntry(median=80.0, low=pytest.approx(76.0), high=pytest.approx(84.0),
                                                count=2, last_step=0, solved=True)
    metrics = logged[-1]
    assert metrics["budget/targets_shrunk"] == 1 and metrics["budget/newly_solved"] == 1
    # The next sampling states the refined budgets.
    b = batch(["a", "b", "c"])
    callback.apply(b)
    assert b.budgets == [80, 60, 32] and b.targets == [80.0, 60.0, None]

    # Step 1: a larger median does not grow "a"; unsolved now keeps "b"; "d" equal stays.
    s1 = summary(1, ["a", "b", "d"], [[300, 300], [10, 10], [40, 40]], [[True, True], [False, False], [True, True]],
                 [80, 60, 40])
    callback.on_train_batch_end(trainer, module, {"summary": s1}, None, 1)
    assert callback.targets["a"] == 80.0 and callback.targets["b"] == 60.0 and callback.targets["d"] == 40.0
    assert callback.entries["a"].last_step == 0  # the step that set the target
    assert logged[-1]["budget/targets_shrunk"] == 1 and logged[-1]["budget/newly_solved"] == 0  # cumulative / per step


def test_adherence_metrics_by_hand(tmp_path, table_path):
    callback, trainer, module, logged = ready(tmp_path, table_path, sigma=10)
    # budgets 100 and none: only the first group counts. L - n = [-20, 5, 10, 40]; correct [T, T, F, F].
    s = summary(0, ["a", "c"], [[80, 105, 110, 140], [1, 2, 3, 4]], [[True, True, False, False], [False] * 4],
                [100, None])
    callback.on_train_batch_end(trainer, module, {"summary": s}, None, 0)
    m = logged[-1]
    assert m["budget/abs_error"] == pytest.approx((20 + 5 + 10 + 40) / 4)
    assert m["budget/signed_error"] == pytest.approx((-20 + 5 + 10 + 40) / 4)
    assert m["budget/abs_error_correct"] == pytest.approx(12.5)
    assert m["budget/within_sigma"] == pytest.approx(0.5)  # 5 and 10 are within 10 tokens
    assert m["budget/mean_target"] == pytest.approx((92.5 + 40.0) / 2)  # "a" shrank to median(80, 105)


def test_state_dict_round_trip_in_either_restore_order(tmp_path, table_path):
    callback, trainer, module, _ = ready(tmp_path, table_path)
    s = summary(3, ["a", "b"], [[10, 20], [30, 30]], [[True, True], [True, False]], [101, 32])
    callback.on_train_batch_end(trainer, module, {"summary": s}, None, 0)
    state = callback.state_dict()

    # Lightning's order on resume: setup (reads the stage-1 file), then load_state_dict.
    after = BudgetTargets(table=str(table_path), allow_partial_match=True)
    with pytest.warns(UserWarning):
        after.setup(*fakes(tmp_path)[:2], "fit")
    after.load_state_dict(state)
    assert after.state_dict() == state and after.targets["a"] == 15.0 and after.shrunk == 1

    # The other order must not let the table file clobber the restored targets either.
    before = BudgetTargets(table=str(table_path), allow_partial_match=True)
    before.load_state_dict(state)
    with pytest.warns(UserWarning):
        before.setup(*fakes(tmp_path)[:2], "fit")
    assert before.state_dict() == state


def test_refined_table_is_written_atomically_and_loads(tmp_path, table_path):
    out = tmp_path / "stage2" / "refined.json"
    callback, trainer, module, _ = ready(tmp_path, table_path, path=str(out))
    s = summary(0, ["a"], [[50, 60]], [[True, True]], [101])
    callback.on_train_batch_end(trainer, module, {"summary": s}, None, 0)
    trainer.global_step = 7
    callback.on_save_checkpoint(trainer, module, {})
    # Not before the checkpoint file itself is written: the table must never run ahead of it.
    assert not out.exists()
    callback.on_train_batch_start(trainer, module, batch(["a"]), 1)  # the next step: the checkpoint is whole
    table = LengthTable.load(out)
    assert table.target("a") == 55 and table.target("d") == 40 and table.target("b") is None
    assert table.metadata["step"] == 7 and table.metadata["source_table"] == str(table_path)
    assert table.metadata["targets_shrunk"] == 1 and "written_at" in table.metadata
    assert table.complete is False  # written at a checkpoint: the run may not finish
    assert [p.name for p in out.parent.iterdir()] == ["refined.json"]  # no temp file left behind
    trainer.global_step = 9
    trainer.interrupted = False
    callback.on_fit_end(trainer, module)
    assert LengthTable.load(out).metadata["step"] == 9 and LengthTable.load(out).complete is True


def partial_table(tmp_path, complete) -> str:
    path = tmp_path / "partial" / "length_table.json"
    metadata = {"step": 3} if complete is None else {"step": 3, "complete": complete}
    LengthTable({"a": entry(100.5), "b": entry(None), "d": entry(40.0)}, metadata).save(path)
    return str(path)


def test_incomplete_stage1_table_is_refused_naming_file_step_and_coverage(tmp_path):
    path = partial_table(tmp_path, complete=False)
    with pytest.raises(LengthTableError) as err:
        BudgetTargets(table=path).setup(*fakes(tmp_path)[:2], "fit")
    assert str(err.value) == (
        f"trainer.callbacks[BudgetTargets].table: {path} is the table of a stage-1 run that did not finish "
        "(written at its checkpoint of step 3, 3 problems, 2 solved): finish stage 1 first (lapo fit --config "
        "<stage-1 config> --ckpt_path last), or set trainer.callbacks[BudgetTargets].allow_partial_table: true "
        "to use it as it is")


def test_incomplete_stage1_table_is_used_when_allowed(tmp_path):
    callback = BudgetTargets(table=partial_table(tmp_path, complete=False), allow_partial_table=True,
                             allow_partial_match=True)
    with pytest.warns(UserWarning, match="did not finish .* used anyway"):
        callback.setup(*fakes(tmp_path)[:2], "fit")
    assert callback.target("a") == 100.5


def test_unmarked_table_from_before_the_mark_is_used_with_a_warning(tmp_path):
    callback = BudgetTargets(table=partial_table(tmp_path, complete=None), allow_partial_match=True)
    with pytest.warns(UserWarning, match="does not say whether its stage-1 run finished"):
        callback.setup(*fakes(tmp_path)[:2], "fit")
    assert callback.target("d") == 40.0


def test_default_output_path_is_in_the_log_dir(tmp_path, table_path):
    callback, *_ = ready(tmp_path, table_path)
    assert callback.path == str(tmp_path / "logs" / "length_table_refined.json")


@pytest.mark.parametrize("content", [None, "{not json", '{"format": "something-else"}'],
                         ids=["missing", "corrupt", "wrong_format"])
def test_missing_or_corrupt_table_fails_naming_key_and_file(tmp_path, content):
    path = tmp_path / "table.json"
    if content is not None:
        path.write_text(content)
    trainer, module, _ = fakes(tmp_path)
    with pytest.raises(LengthTableError) as err:
        BudgetTargets(table=str(path)).setup(trainer, module, "fit")
    assert "trainer.callbacks[BudgetTargets].table" in str(err.value) and str(path) in str(err.value)


def test_a_table_of_other_problems_is_refused_naming_how_many(tmp_path, table_path):
    trainer, module, _ = fakes(tmp_path, ids=("a", "b", "x", "y", "z"), fingerprint="fp-2")
    with pytest.raises(LengthTableError) as err:
        BudgetTargets(table=str(table_path)).setup(trainer, module, "fit")
    text = str(err.value)
    assert "is not the table of this data" in text and "allow_partial_match: true" in text
    assert "3 of the 5 training problems are not in it, e.g. ['x', 'y', 'z']" in text
    assert "1 of its 3 problems are not in data.train_file, e.g. ['d']" in text


def test_a_partial_match_allowed_explicitly_warns_with_counts(tmp_path, table_path):
    trainer, module, _ = fakes(tmp_path, ids=("a", "b", "x", "y", "z"), fingerprint="fp-2")
    with pytest.warns(UserWarning) as record:
        BudgetTargets(table=str(table_path), allow_partial_match=True).setup(trainer, module, "fit")
    text = " ".join(str(w.message) for w in record)
    assert "used anyway (allow_partial_match: true)" in text
    assert "4 of 5 training problems have no target" in text
    assert "3 missing from" in text and "1 unsolved" in text and "fallback budget 32" in text


def test_same_ids_with_other_text_are_refused_and_ids_compare_in_nfc(tmp_path):
    path = tmp_path / "t.json"
    LengthTable({"caf\u00e9": entry(50.0)}, {"dataset": {"content_fingerprint": "c-1"}, "complete": True}).save(path)
    trainer, module, _ = fakes(tmp_path, ids=("cafe\u0301",))  # the same id, decomposed
    trainer.datamodule.content = "c-1"
    callback = BudgetTargets(table=str(path))
    callback.setup(trainer, module, "fit")  # matches after NFC
    assert callback.target("cafe\u0301") == 50.0
    trainer.datamodule.content = "c-2"
    with pytest.raises(LengthTableError, match="text or answers differ .*content fingerprint c-1 in the table, c-2"):
        BudgetTargets(table=str(path)).setup(trainer, module, "fit")


def test_same_ids_with_other_text_are_named_one_by_one(tmp_path):
    """Tables record a hash of each problem's text and answer: the refusal says how many differ
    and which, and a partial match may accept them on purpose."""
    path = tmp_path / "t.json"
    recorded = {"content_fingerprint": "c-1", "content_hashes": {"a": "h-a", "b": "h-b", "c": "h-c"}}
    LengthTable({k: entry(50.0) for k in "abc"}, {"dataset": recorded, "complete": True}).save(path)
    trainer, module, _ = fakes(tmp_path, ids=("a", "b", "c"))
    trainer.datamodule.content, trainer.datamodule.hashes = "c-2", {"a": "h-a", "b": "other", "c": "also other"}
    with pytest.raises(LengthTableError, match=r"2 of the 3 problems in both have other text or answers under the "
                                               r"same id, e.g. \['b', 'c'\]"):
        BudgetTargets(table=str(path)).setup(trainer, module, "fit")
    BudgetTargets(table=str(path), allow_partial_match=True).setup(trainer, module, "fit")


def test_the_table_records_each_problems_content_hash(tmp_path):
    from lapo_lightning.data import LapoDataModule

    rows = [{"id": "x", "problem": "1+1?", "answer": "2"}, {"id": "y", "problem": "2+2?", "answer": "4"}]
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    first = LapoDataModule(str(data), problems_per_step=1)
    first.setup("fit")
    rows[1]["problem"] = "2+3?"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    second = LapoDataModule(str(data), problems_per_step=1)
    second.setup("fit")
    a, b = first.describe()["content_hashes"], second.describe()["content_hashes"]
    assert a.keys() == b.keys() == {"x", "y"} and a["x"] == b["x"] and a["y"] != b["y"]


def test_table_sharing_no_ids_with_the_dataset_is_an_error(tmp_path, table_path):
    trainer, module, _ = fakes(tmp_path, ids=("x", "y"))
    with pytest.raises(LengthTableError, match="shares no problem ids"):
        BudgetTargets(table=str(table_path)).setup(trainer, module, "fit")


def test_refusing_to_overwrite_the_stage1_table_and_bad_arguments(tmp_path, table_path):
    trainer, module, _ = fakes(tmp_path)
    with pytest.raises(ValueError, match="trainer.callbacks\\[BudgetTargets\\].path"):
        BudgetTargets(table=str(table_path), path=str(table_path)).setup(trainer, module, "fit")
    with pytest.raises(ValueError, match="fallback_budget"):
        BudgetTargets(table="t.json", fallback_budget=0)
    with pytest.raises(ValueError, match="sigma"):
        BudgetTargets(table="t.json", sigma=-1)
