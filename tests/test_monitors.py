"""Training monitors driven with synthetic step summaries: the silent-failure warning and
the sample table. Run: pytest tests/test_monitors.py -q
"""

from __future__ import annotations

import json
import logging
from types import SimpleNamespace

import pytest
import torch

from lapo_lightning.callbacks.monitors import SampleLogger, TrainingHealthMonitor
from lapo_lightning.types import StepSummary


def summary(step: int, truncated: bool, rewards: list[float]) -> StepSummary:
    n = len(rewards)
    return StepSummary(
        step=step, problem_ids=["p0", "p1"], group_index=torch.tensor([0, 0, 1, 1][:n]),
        lengths=torch.full((n,), 7), correct=torch.zeros(n, dtype=torch.bool),
        truncated=torch.full((n,), truncated), budgets=torch.full((n,), float("nan")),
        targets=torch.full((n,), float("nan")), rewards={"total": torch.tensor(rewards)},
        texts=[f"text {i}" for i in range(n)],
    )


def run(monitor, summaries, trainer=None):
    trainer = trainer or SimpleNamespace(is_global_zero=True, log_dir=None)
    for s in summaries:
        monitor.on_train_batch_end(trainer, None, {"summary": s}, None, 0)


def test_health_monitor_warns_once_when_every_rollout_is_truncated():
    monitor = TrainingHealthMonitor(threshold=0.95, patience=3)
    with pytest.warns(UserWarning, match="truncation share"):
        run(monitor, [summary(i, True, [0.0, 1.0, 0.0, 1.0]) for i in range(5)])
    assert len(monitor.warnings) == 1 and "max_new_tokens" in monitor.warnings[0]


def test_health_monitor_warns_on_zero_reward_spread_and_not_on_healthy_steps():
    monitor = TrainingHealthMonitor(threshold=0.95, patience=3)
    run(monitor, [summary(i, False, [0.0, 1.0, 0.0, 1.0]) for i in range(4)])
    assert monitor.warnings == []
    with pytest.warns(UserWarning, match="zero_spread"):
        run(monitor, [summary(i, False, [1.0, 1.0, 0.0, 0.0]) for i in range(3)])
    assert len(monitor.warnings) == 1


def test_health_monitor_warns_at_the_end_of_a_run_shorter_than_its_patience():
    monitor = TrainingHealthMonitor(threshold=0.95, patience=5)
    run(monitor, [summary(i, True, [1.0, 1.0, 0.0, 0.0]) for i in range(3)])  # 3 bad steps, then the run ends
    assert monitor.warnings == []
    with pytest.warns(UserWarning, match=r"in all 3 steps of this run \(fewer than patience=5\)"):
        monitor.on_train_end(None, None)
    assert [w.split()[0] for w in monitor.warnings] == ["truncation", "zero_spread"]
    healthy = TrainingHealthMonitor(threshold=0.95, patience=5)
    run(healthy, [summary(0, True, [0.0, 1.0, 0.0, 1.0]), summary(1, False, [0.0, 1.0, 0.0, 1.0])])
    healthy.on_train_end(None, None)
    assert healthy.warnings == []  # truncation only in one of the two steps


def summary_of(step: int, correct: list[bool], truncated: list[bool], rewards: list[float]) -> StepSummary:
    """Two problems x two rollouts with the given flags."""
    base = summary(step, False, rewards)
    base.correct, base.truncated = torch.tensor(correct), torch.tensor(truncated)
    return base


@pytest.mark.parametrize(("correct", "truncated", "settings", "first_cause"), [
    # no group has a right answer: the task is too hard (nothing truncated)
    ([False] * 4, [False] * 4, {"temperature": 1.0, "max_new_tokens": 64}, "the task is too hard for the model"),
    # every completion cut off at the cap: the cap first
    ([False] * 4, [True] * 4, {"temperature": 1.0, "max_new_tokens": 8},
     "the length cap is too short (every completion of a group cut off: raise model.generation.max_new_tokens, now 8)"),
    # all right: too easy
    ([True] * 4, [False] * 4, {"temperature": 1.0, "max_new_tokens": 64}, "the task is too easy"),
    # temperature 0 makes the group identical, whatever they scored
    ([False] * 4, [False] * 4, {"temperature": 0.0, "max_new_tokens": 64}, "sampling temperature 0.0"),
])
def test_zero_advantage_warning_puts_the_likely_cause_first(correct, truncated, settings, first_cause):
    monitor = TrainingHealthMonitor(threshold=0.95, patience=2)
    module = SimpleNamespace(generation=SimpleNamespace(**settings))
    steps = [summary_of(i, correct, truncated, [float(c) for c in correct]) for i in range(2)]
    with pytest.warns(UserWarning, match="zero_spread share"):
        for s in steps:
            monitor.on_train_batch_end(SimpleNamespace(), module, {"summary": s}, None, 0)
    (message,) = [w for w in monitor.warnings if w.startswith("zero_spread")]
    causes = message.split("likely causes: ", 1)[1]
    assert causes.startswith(first_cause), causes
    assert "every advantage is 0" in message and message.endswith("training is learning nothing")


def test_zero_advantage_warning_reports_the_kind_of_groups_seen():
    monitor = TrainingHealthMonitor(threshold=0.95, patience=2)
    with pytest.warns(UserWarning):
        run(monitor, [summary_of(0, [False, False, True, True], [True, True, False, False], [0.0, 0.0, 1.0, 1.0]),
                      summary_of(1, [False] * 4, [False] * 4, [0.0] * 4)])
    assert "in these steps 75% of groups all wrong, 25% of groups all correct, 25% of groups all truncated" \
        in monitor.warnings[0]


def test_health_monitor_state_survives_a_resume():
    monitor = TrainingHealthMonitor(threshold=0.95, patience=3)
    run(monitor, [summary(i, True, [0.0, 1.0, 0.0, 1.0]) for i in range(2)])
    restored = TrainingHealthMonitor(threshold=0.95, patience=3)
    restored.load_state_dict(monitor.state_dict())
    with pytest.warns(UserWarning, match="truncation share"):
        run(restored, [summary(2, True, [0.0, 1.0, 0.0, 1.0])])  # third bad step in a row
    # The group kinds behind the zero-advantage advice come back too (older checkpoints lack them).
    assert len(restored.state_dict()["groups"]) == 3
    legacy = TrainingHealthMonitor(threshold=0.95, patience=3)
    legacy.load_state_dict({k: v for k, v in monitor.state_dict().items() if k != "groups"})
    assert list(legacy.state_dict()["truncation"]) == [1.0, 1.0]


def test_sample_logger_prints_and_appends_jsonl(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    logger = SampleLogger(every_n_steps=2, rows=2)
    trainer = SimpleNamespace(is_global_zero=True, log_dir=str(tmp_path))
    run(logger, [summary(i, False, [0.0, 1.0, 0.5, 0.25]) for i in range(3)], trainer)  # logs at batches 1 and 3
    records = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [0, 0, 2, 2]
    assert "samples at step 2:" in caplog.text and "text 1" in caplog.text
    assert records[1] == {"step": 0, "problem_id": "p0", "length": 7, "correct": False, "reward": 1.0, "text": "text 1"}


def test_sample_logger_also_logs_the_last_batch_of_a_short_run(tmp_path):
    logger = SampleLogger(every_n_steps=25, rows=1)
    trainer = SimpleNamespace(is_global_zero=True, log_dir=str(tmp_path))
    run(logger, [summary(i, False, [0.0, 1.0, 0.5, 0.25]) for i in range(4)], trainer)
    logger.on_train_end(trainer, None)
    logger.on_train_end(trainer, None)  # a second end (fit, then another stage) adds nothing
    records = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [0, 3]  # the first and the last batch


def test_two_sample_loggers_write_two_files_not_duplicate_rows(tmp_path):
    first, second = SampleLogger(every_n_steps=2, rows=2), SampleLogger(every_n_steps=1, rows=1)
    trainer = SimpleNamespace(is_global_zero=True, log_dir=str(tmp_path), callbacks=[object(), first, second])
    for logger in (first, second):
        logger.setup(trainer, None, "fit")
    summaries = [summary(i, False, [0.0, 1.0, 0.5, 0.25]) for i in range(3)]
    for s in summaries:
        for logger in (first, second):
            logger.on_train_batch_end(trainer, None, {"summary": s}, None, 0)
    rows = {name: [(r["step"], r["text"]) for r in map(json.loads, (tmp_path / name).read_text().splitlines())]
            for name in ("samples.jsonl", "samples.1.jsonl")}
    assert rows["samples.jsonl"] == [(0, "text 0"), (0, "text 1"), (2, "text 0"), (2, "text 1")]
    assert rows["samples.1.jsonl"] == [(0, "text 0"), (1, "text 0"), (2, "text 0")]
