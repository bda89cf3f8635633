"""Checkpoints that are whole or absent, and a resume that starts from the right one.

Flow: ``LapoCLI.before_fit`` calls :func:`prepare_fit` before any weights load. It

1. makes the trainer save through :class:`AtomicCheckpointIO` (temp file, fsync, rename: a
   kill or a full disk never leaves a truncated checkpoint under its real name), unless the
   user configured another checkpoint plugin;
2. removes what killed writes left in the checkpoint folders (``atomic.clean_stale``) and
   checks that those folders are writable;
3. resolves ``--ckpt_path last`` itself: the newest ``last*.ckpt`` of the run's
   ``ModelCheckpoint`` folders; with none but other checkpoints there it refuses and names the
   newest one (Lightning would warn, train from step 0 and write ``-v1`` files beside them);
   with no checkpoint at all it says the run starts from step 0;
4. reads the chosen checkpoint once (memory-mapped, ``weights_only``) and refuses a truncated,
   corrupt or non-checkpoint file in one line naming the last good checkpoint of its folder,
   and one saved by another run (``run_identity``).
"""

from __future__ import annotations

import math
import os
import zipfile
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from lapo_lightning.safety import atomic, run_identity


class CheckpointError(ValueError):
    """A checkpoint that cannot be resumed from (missing, corrupt, not a checkpoint)."""


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` whose saves are atomic (``atomic.write_file``) and whose write
    errors name the folder (disk full, read-only)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options, got {storage_options!r}")
        atomic.write_file(path, lambda f: torch.save(checkpoint, f), what="checkpoint")


def checkpoint_dirs(trainer) -> list[Path]:
    """The folders the trainer's ``ModelCheckpoint`` callbacks save into."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    folders = []
    for callback in trainer.checkpoint_callbacks:
        if isinstance(callback, ModelCheckpoint):
            # dirpath is set in setup when not configured; resolve it as Lightning will.
            folder = callback.dirpath or callback._ModelCheckpoint__resolve_ckpt_dir(trainer)
            folders.append(Path(folder))
    return folders


def _newest(paths: list[Path]) -> Path | None:
    return max(paths, key=lambda p: (p.stat().st_mtime, p.name), default=None)


def problem(path: str | os.PathLike) -> str | None:
    """Why ``path`` is not a whole torch checkpoint archive (None when it is); reads no tensors."""
    path = Path(path)
    if not path.is_file():
        return "no such file" if not path.exists() else "not a file"
    if path.stat().st_size == 0:
        return "empty file (0 bytes)"
    if not zipfile.is_zipfile(path):
        return "not a checkpoint archive (truncated, or another kind of file)"
    try:
        with zipfile.ZipFile(path) as archive:
            broken = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        return f"corrupt archive ({e})"
    return f"corrupt archive (bad data in {broken})" if broken else None


def newest_whole(paths) -> Path | None:
    """The most recently written of ``paths`` that is a whole checkpoint archive (None when none
    is): a file cut short by a kill is passed over for the one before it."""
    existing = {Path(p) for p in paths if Path(p).is_file()}
    for path in sorted(existing, key=lambda p: (p.stat().st_mtime_ns, str(p)), reverse=True):
        if problem(path) is None:
            return path
    return None


def last_good(folder: Path, exclude: Path | None = None) -> Path | None:
    """The newest whole ``*.ckpt`` in ``folder`` (other than ``exclude``)."""
    return newest_whole(p for p in folder.glob("*.ckpt") if exclude is None or p.resolve() != exclude.resolve())


def _unusable(path: Path, why: str) -> CheckpointError:
    good = last_good(path.parent, exclude=path) if path.parent.is_dir() else None
    hint = (f"the last good checkpoint in {path.parent} is {good}: resume with --ckpt_path {good}" if good
            else f"no other good checkpoint in {path.parent}")
    return CheckpointError(f"--ckpt_path {path}: {why}; {hint}")


def load_checkpoint(path: str | os.PathLike) -> dict:
    """The checkpoint at ``path``, tensors memory-mapped; :class:`CheckpointError` in one line
    naming the file and the last good checkpoint beside it when it is not a whole checkpoint."""
    path = Path(path)
    why = problem(path)
    if why is not None:
        raise _unusable(path, why)
    try:
        data = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means "not our checkpoint"
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise _unusable(path, f"cannot be read as a checkpoint ({type(e).__name__}: {first[:200]})") from None
    if not isinstance(data, dict) or "state_dict" not in data or "global_step" not in data:
        found = sorted(data)[:5] if isinstance(data, dict) else type(data).__name__
        raise _unusable(path, f"not a Lightning checkpoint (no state_dict/global_step; found {found})")
    return data


def resolve_last(folders: list[Path]) -> Path | None:
    """``--ckpt_path last``: the newest ``last*.ckpt`` in ``folders``; None (start from step 0)
    when they hold no checkpoint; :class:`CheckpointError` when they hold some but no ``last``."""
    lasts = [p for folder in folders if folder.is_dir() for p in folder.glob("last*.ckpt")]
    if lasts:
        return _newest(lasts)
    others = [p for folder in folders if folder.is_dir() for p in folder.glob("*.ckpt")]
    if others:
        newest = _newest(others)
        raise CheckpointError(
            f"--ckpt_path last: {newest.parent} holds {len(others)} checkpoints but no last.ckpt (they were saved "
            f"without save_last: true); the newest is {newest}: resume from it with --ckpt_path {newest}"
        )
    where = ", ".join(str(f) for f in folders) or "(no ModelCheckpoint folder configured)"
    rank_zero_info(f"--ckpt_path last: no checkpoint in {where}: starting from step 0")
    return None


def prepare_fit(trainer, module, ckpt_path: str | None, datamodule=None) -> str | None:
    """Everything checkpoint-related before ``trainer.fit``; returns the ckpt_path to pass on.
    ``datamodule``: the run's data, so a checkpoint of other data is refused before weights load."""
    strategy = trainer.strategy
    if type(strategy.checkpoint_io) is TorchCheckpointIO:  # the default one; a user's own plugin stays
        strategy.checkpoint_io = AtomicCheckpointIO()
    folders = checkpoint_dirs(trainer)
    for folder in folders:
        atomic.clean_stale(folder)
        atomic.check_writable_folder(folder, "checkpoint folder")
    if ckpt_path == "last":
        resolved = resolve_last(folders)
        ckpt_path = None if resolved is None else str(resolved)
    elif ckpt_path is None:
        existing = [p for folder in folders if folder.is_dir() for p in folder.glob("*.ckpt")]
        if existing:
            rank_zero_warn(f"starting from step 0, but {existing[0].parent} already holds {len(existing)} "
                           f"checkpoints: to continue that run instead, pass --ckpt_path last")
    if ckpt_path is None or ckpt_path in ("best", "hpc") or "://" in str(ckpt_path):
        return ckpt_path
    checkpoint = load_checkpoint(ckpt_path)
    if hasattr(module, "policy_config"):
        current = run_identity.identity(module, trainer.callbacks, datamodule)
        recorded = checkpoint.get(run_identity.KEY)
        if recorded is not None:
            lines = run_identity.differences(recorded, current)
            if lines:
                raise run_identity.refusal(str(ckpt_path), lines, recorded, current)
    return ckpt_path


def unaligned_checkpoint_warning(checkpoint_callbacks, updates: int) -> None:
    """Warn when a ``ModelCheckpoint(every_n_train_steps=n)`` saves less often than asked:
    checkpoints are written between batches, after each batch's ``updates`` optimizer steps
    (``model.grpo.num_iterations x steps_per_generation``), so n must be a multiple of them."""
    for callback in checkpoint_callbacks:
        every = getattr(callback, "_every_n_train_steps", 0)
        if every and updates > 1 and every % updates:
            rank_zero_warn(f"ModelCheckpoint every_n_train_steps={every} is not a multiple of the {updates} optimizer "
                           "steps each batch makes (model.grpo.num_iterations x steps_per_generation): checkpoints "
                           f"are written only every {math.lcm(every, updates)} steps")
