"""A run owns its output folders: one lock file in each, held from start-up until the run ends.

Flow: ``lapo fit`` adds :class:`FolderLocks` to the trainer's callbacks and takes the locks
(``cli.fit.LapoCLI.before_fit``) before any weights load or any file is touched: every
folder the run writes into (checkpoint folders, the adapter export's folder, the folders of
the length tables it writes), in sorted order; ``teardown`` releases them (Lightning calls it
after a normal end and after an exception). A second run that reaches a locked folder stops
at start-up with one line naming the holder: its process id, host, start time and command.

The lock is ``fcntl.flock`` on ``<folder>/.lapo-run.lock``: the kernel drops it when the
holding process ends, however it ends (``kill -9`` and a crash included), so a lock file left
by a killed run is simply taken over by the next run, which writes its own holder line into
it; no stale-lock heuristic (pid checks, ages) is needed. It is advisory and per host: two
machines writing one network folder are not stopped. Only rank zero locks (the processes of
one multi-GPU run share its folders), and a run's own in-process phases (``lapo demo``) take
and release the locks one phase at a time.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path

import lightning.pytorch as pl

LOCK_NAME = ".lapo-run.lock"


class FolderBusy(RuntimeError):
    """Another live run holds an output folder of this one."""


class FolderLock:
    """An exclusive lock on one folder (created if missing), recorded with who holds it."""

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder).expanduser().absolute()
        self.fd: int | None = None

    def acquire(self) -> None:
        import fcntl

        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.folder / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # BlockingIOError: held by a live process
            holder = _read(fd)
            os.close(fd)
            raise FolderBusy(f"{self.folder} is in use by another lapo run ({describe(holder)}); wait for it to "
                             "end, or give this run other output folders") from None
        holder = {"pid": os.getpid(), "host": socket.gethostname(),
                  "started": time.strftime("%Y-%m-%d %H:%M:%S"), "command": " ".join(sys.argv)[:300]}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(holder) + "\n").encode(), 0)
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing drops the flock; the file stays, naming the last holder
            self.fd = None


def _read(fd: int) -> dict:
    try:
        return json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (OSError, ValueError):
        return {}


def describe(holder: dict) -> str:
    """``process 123 on host, started 2026-12-04 03:00:00: lapo fit --config ...``"""
    if not holder:
        return "a process that has not recorded itself yet"
    return (f"process {holder.get('pid', '?')} on {holder.get('host', '?')}, started {holder.get('started', '?')}: "
            f"{holder.get('command', '?')}")


def lock_all(folders) -> list[FolderLock]:
    """Lock each distinct folder (sorted, so two runs never wait on each other in a circle);
    on a busy one, release what was taken and raise :class:`FolderBusy`."""
    locks: list[FolderLock] = []
    try:
        for folder in sorted({Path(f).expanduser().absolute() for f in folders}):
            lock = FolderLock(folder)
            lock.acquire()
            locks.append(lock)
    except BaseException:
        for lock in locks:
            lock.release()
        raise
    return locks


def output_folders(trainer: pl.Trainer) -> list[Path]:
    """Every folder this run writes results into: checkpoint folders, the adapter export's
    parent, and the folders of the length tables its callbacks write."""
    from lapo_lightning.safety.checkpointing import checkpoint_dirs
    from lapo_lightning.run_outputs import results

    return list(checkpoint_dirs(trainer)) + [result.path.parent for result in results(trainer)]


class FolderLocks(pl.Callback):
    """Lock the run's output folders (rank zero) before anything is written, release them at
    ``teardown``. ``lapo fit`` calls :meth:`acquire` before it touches the checkpoint folders;
    ``setup`` takes them otherwise (a Trainer built in Python with this callback)."""

    def __init__(self) -> None:
        self.locks: list[FolderLock] = []

    def acquire(self, trainer: pl.Trainer) -> None:
        if trainer.is_global_zero and not self.locks:
            self.locks = lock_all(output_folders(trainer))

    def release(self) -> None:
        for lock in self.locks:
            lock.release()
        self.locks = []

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit":
            self.acquire(trainer)

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self.release()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self.release()  # a failed fit skips teardown; the next run in this process must get the folders
