"""A run owns its output folders (lapo_lightning.safety.run_lock): a second live run on them is refused
at start-up naming the holder; a killed run's lock is taken over; runs one after another in
one process (lapo demo's phases) each take and release theirs.

Run: pytest tests/test_run_lock.py -q
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from clitools import config_in, fit
from lapo_lightning.safety.run_lock import LOCK_NAME, FolderBusy, FolderLock, lock_all

HOLD = """
import sys, time
from lapo_lightning.safety.run_lock import lock_all
locks = lock_all(sys.argv[1:])
print("locked", flush=True)
time.sleep(120)
"""


@pytest.fixture
def holder(tmp_path):
    """Another process holding the locks of the folders given to it; killed (-9) at the end."""
    procs = []

    def start(*folders) -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, "-c", HOLD, *map(str, folders)], stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "locked"
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        proc.kill()
        proc.wait()


def test_a_live_holder_is_named_and_a_killed_one_taken_over(tmp_path, holder):
    proc = holder(tmp_path / "a")
    with pytest.raises(FolderBusy, match=rf"{tmp_path / 'a'} is in use by another lapo run \(process {proc.pid} on "):
        lock_all([tmp_path / "b", tmp_path / "a"])
    free = FolderLock(tmp_path / "b")  # a refused lock_all released what it had taken
    free.acquire()
    free.release()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    locks = lock_all([tmp_path / "a"])  # the dead process's lock file is still there: taken over
    assert json.loads((tmp_path / "a" / LOCK_NAME).read_text())["pid"] == os.getpid()
    for lock in locks:
        lock.release()


def test_a_second_fit_on_the_same_folders_is_refused_before_it_writes(tmp_path, holder, capsys):
    config = config_in(tmp_path, "debug/stage1.yaml")
    table_dir = tmp_path / "runs" / "debug_stage1"
    text = config.read_text()
    assert str(table_dir) in text, "the debug stage-1 config writes its table under runs/debug_stage1"
    proc = holder(table_dir)
    with pytest.raises(SystemExit) as err:
        fit(config, "--trainer.max_steps", "1")
    message = capsys.readouterr().err
    assert err.value.code == 2 and f"process {proc.pid}" in message and "is in use by another lapo run" in message
    assert not list(tmp_path.rglob("*.ckpt")) and not list(tmp_path.rglob("length_table.json"))


def test_runs_one_after_another_in_one_process_each_take_the_locks(tmp_path):
    config = config_in(tmp_path, "debug/grpo.yaml")
    fit(config, "--trainer.max_steps", "1", "--trainer.limit_val_batches", "0")
    fit(config, "--trainer.max_steps", "2", "--trainer.limit_val_batches", "0", "--ckpt_path", "last")
    folders = [p.parent for p in (tmp_path / "runs").rglob(LOCK_NAME)]
    assert folders, "the runs left their lock files in their output folders"
    for lock in lock_all(folders):  # released: free to take
        lock.release()
