"""A failure after start-up ends in one line, the traceback in the run's folder (failures.py).

The runs go through ``cli.run``, the ``lapo`` console script itself, on the debug config
(checkpoints every 2 steps), with a reward plugin from this file that fails at its third call.
"""

from __future__ import annotations

import errno
import signal
import sys
from pathlib import Path

import pytest
import torch

from clitools import config_in
from lapo_lightning.cli import main as cli
from lapo_lightning.cli.failures import LOG_NAME, RunFolders, one_line, report, resume_command, write_log
from lapo_lightning.rewards import Reward


class FailsAtThirdCall(Reward):
    """Zero rewards, then ``error`` from its third call on: a plugin that breaks mid-run."""

    error: BaseException = RuntimeError("the grader service is down")
    calls = 0

    def __call__(self, batch):
        FailsAtThirdCall.calls += 1
        if FailsAtThirdCall.calls >= 3:
            raise FailsAtThirdCall.error
        return torch.zeros(len(batch))


def lapo(monkeypatch, *argv: str) -> int:
    """``lapo ARGV`` as the console script runs it; its exit status."""
    monkeypatch.setattr(sys, "argv", ["lapo", *argv])
    with pytest.raises(SystemExit) as exit_:
        cli.run()
    return exit_.value.code


@pytest.fixture
def failing_reward(monkeypatch):
    FailsAtThirdCall.calls = 0
    yield FailsAtThirdCall
    FailsAtThirdCall.error = RuntimeError("the grader service is down")


def stderr_lines(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("lapo")]


@pytest.mark.slow
def test_a_reward_that_raises_mid_run_is_one_line_naming_it_and_the_resume(tmp_path, monkeypatch, capsys,
                                                                            failing_reward):
    config = config_in(tmp_path, "debug/grpo.yaml")
    argv = ("fit", "--config", str(config), "--model.rewards+=test_failures.FailsAtThirdCall",
            "--trainer.limit_val_batches", "0")
    assert lapo(monkeypatch, *argv) == 1
    lines = stderr_lines(capsys)
    log = tmp_path / "runs" / "debug_grpo" / LOG_NAME
    assert lines == [
        "lapo fit: reward FailsAtThirdCall (name 'fails_at_third_call') raised RuntimeError: the grader service is "
        f"down; resume with: lapo {' '.join(argv)} --ckpt_path last (traceback: {log}; --debug shows it)"]
    text = log.read_text()
    assert "Traceback (most recent call last)" in text and "the grader service is down" in text
    assert (tmp_path / "runs" / "debug_grpo" / "checkpoints" / "last.ckpt").is_file()  # steps 1-2 kept


@pytest.mark.slow
def test_ctrl_c_during_training_says_how_to_resume(tmp_path, monkeypatch, capsys, failing_reward):
    failing_reward.error = KeyboardInterrupt()
    config = config_in(tmp_path, "debug/grpo.yaml")
    handler = signal.getsignal(signal.SIGINT)
    try:
        status = lapo(monkeypatch, "fit", "--config", str(config), "--model.rewards+=test_failures.FailsAtThirdCall",
                      "--trainer.limit_val_batches", "0")
    finally:
        signal.signal(signal.SIGINT, handler)  # Lightning ignores further Ctrl-C once it has seen one
    assert status == 1  # Lightning's own exit after a Ctrl-C
    [line] = stderr_lines(capsys)
    assert line.startswith("lapo fit: interrupted (Ctrl-C); resume with: lapo fit --config ")
    assert "--ckpt_path last (traceback: " in line


@pytest.mark.slow
def test_a_setting_lightning_refuses_after_start_up_is_one_line_exit_2(tmp_path, monkeypatch, capsys):
    config = config_in(tmp_path, "debug/grpo.yaml")
    argv = ("fit", "--config", str(config), "--trainer.val_check_interval", "1000")
    assert lapo(monkeypatch, *argv) == 2
    [line] = stderr_lines(capsys)
    assert line.startswith("lapo fit: Lightning refused the settings: `val_check_interval` (1000) must be less than")
    assert "resume with" not in line  # no step ran: nothing of this run to resume
    # --debug: the same line, then the traceback itself.
    monkeypatch.setattr(sys, "argv", ["lapo", *argv, "--debug"])
    monkeypatch.setenv("LAPO_DEBUG", "0")  # restored after the test: --debug sets it to 1
    with pytest.raises(ValueError, match="val_check_interval"):
        cli.run()
    [line] = stderr_lines(capsys)
    assert line.endswith(f"(traceback: {tmp_path / 'runs' / 'debug_grpo' / LOG_NAME})")


def test_input_refused_after_start_up_exits_2_and_names_the_callback(tmp_path):
    """A stage-2 table that shares no id with the data is refused in BudgetTargets.setup, inside
    the run: the line names the callback, and the exit status is bad input's."""
    from lapo_lightning.callbacks import BudgetTargets
    from lapo_lightning.length_table import LengthTable, LengthTableError

    with pytest.raises(LengthTableError) as refused:
        BudgetTargets(table="t.json").check_dataset(LengthTable({}), ["y"], {})
    assert report(refused.value, ["fit"], RunFolders(tmp_path), write=lambda line: None) == 2
    assert one_line(refused.value).startswith("callback BudgetTargets raised LengthTableError: "
                                              "trainer.callbacks[BudgetTargets].table: t.json shares no problem ids")


def test_an_unwritable_file_names_the_file():
    error = PermissionError(errno.EACCES, "Permission denied", "runs/stage1/checkpoints/last.ckpt")
    assert one_line(error) == "could not write runs/stage1/checkpoints/last.ckpt: Permission denied"


def test_the_traceback_goes_to_a_temp_file_when_the_run_folder_cannot_take_it(tmp_path):
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the run folder should be")
    try:
        raise OSError(errno.ENOSPC, "No space left on device")
    except OSError as error:
        path = write_log(error, blocked, ["fit"])
    assert path is not None and path.parent != blocked and "No space left on device" in path.read_text()
    path.unlink()


def test_an_error_is_reported_once(tmp_path):
    written: list[str] = []
    error = RuntimeError("boom")
    assert report(error, ["eval"], RunFolders(tmp_path), written.append) == 1
    assert report(error, ["eval"], RunFolders(tmp_path), written.append) == 1
    assert written == [f"lapo eval: RuntimeError: boom (traceback: {tmp_path / LOG_NAME}; --debug shows it)\n"]


def test_the_resume_command_replaces_an_earlier_checkpoint_path():
    ckpt = Path("runs/x/last.ckpt")
    assert resume_command(["fit", "--config", "a b.yaml", "--ckpt_path", "runs/x/step=2.ckpt"], ckpt) == \
        "lapo fit --config 'a b.yaml' --ckpt_path last"
    assert resume_command(["fit", "--ckpt_path=runs/x/step=2.ckpt"], ckpt) == "lapo fit --ckpt_path last"
    assert resume_command(["fit"], None) is None
