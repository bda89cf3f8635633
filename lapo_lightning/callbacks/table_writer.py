"""Base for the callbacks that own a length table (stage-1 statistics, stage-2 targets).

Rank zero writes the table atomically (``LengthTable.save``). At a checkpoint the callback
only takes a snapshot of the table in the checkpoint (``on_save_checkpoint`` runs before the
checkpoint file is written); the snapshot reaches the disk at the start of the next step or at
the end of fit, once the checkpoint file is whole. So the table on disk never runs ahead of the
newest checkpoint: a kill leaves it equal to the newest checkpoint's table or one checkpoint
behind, and the resume (``--ckpt_path last``) rewrites it from the checkpoint's own copy.

The table written at a checkpoint says ``complete: false`` (the run may be killed before its
end); the one written when fit ends normally says ``complete: true``. Stage 2
(``BudgetTargets``) refuses an incomplete stage-1 table unless ``allow_partial_table`` is set.
"""

from __future__ import annotations

import time
from pathlib import Path

import lightning.pytorch as pl

from lapo_lightning.safety.atomic import clean_stale
from lapo_lightning.length_table import LengthEntry, LengthTable, check_writable


class LengthTableWriter(pl.Callback):
    """Subclasses keep ``entries``, ``metadata`` and a resolved ``path``."""

    path: str | None
    entries: dict[str, LengthEntry]
    metadata: dict
    _pending: LengthTable | None = None  # the newest checkpoint's table, not yet on disk

    def resolve_path(self, trainer: pl.Trainer, default_name: str) -> None:
        """Default the path into the run's log folder, remove temp files a killed write left
        there, and fail now if it is not writable (not at the first checkpoint, hours in)."""
        if self.path is None:
            self.path = str(Path(trainer.log_dir or trainer.default_root_dir) / default_name)
        if trainer.is_global_zero:
            clean_stale(Path(self.path).parent)
            check_writable(self.path)

    @staticmethod
    def run_metadata(trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict:
        """Which model, adapter and dataset produced the table."""
        policy = getattr(pl_module, "policy_config", None)
        datamodule = getattr(trainer, "datamodule", None)
        return {
            "model": getattr(policy, "model", None),
            "adapter": getattr(policy, "adapter", None),
            "dataset": datamodule.describe() if hasattr(datamodule, "describe") else None,
        }

    def extra_metadata(self) -> dict:
        """Run counters a subclass adds to the written table's metadata."""
        return {}

    def snapshot(self, step: int, complete: bool = False) -> LengthTable:
        metadata = dict(self.metadata, step=step, complete=complete,
                        written_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"), **self.extra_metadata())
        return LengthTable(dict(self.entries), metadata)

    def write(self, step: int, complete: bool = False) -> Path:
        path = Path(self.path)
        self.snapshot(step, complete).save(path)
        return path

    def flush(self) -> None:
        """Write the table taken at the last checkpoint (whose file is now whole)."""
        if self._pending is not None:
            pending, self._pending = self._pending, None
            pending.save(self.path)

    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        if trainer.is_global_zero:
            self._pending = self.snapshot(trainer.global_step, complete=False)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        # Only rank zero has a snapshot. Not flushed on an exception: the failure may be that
        # very checkpoint's write (disk full), and the table must not run ahead of it.
        self.flush()

    def on_fit_end(self, trainer, pl_module) -> None:
        if trainer.is_global_zero:
            self._pending = None
            self.write(trainer.global_step, complete=not trainer.interrupted)
