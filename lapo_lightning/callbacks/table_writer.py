"""Base for the callbacks that own a length table (stage-1 statistics, stage-2 targets).

The table is written atomically (``LengthTable.save``) by rank zero at every checkpoint
and at the end of fit, so the file on disk always matches a state a run can resume from.
"""

from __future__ import annotations

import time
from pathlib import Path

import lightning.pytorch as pl

from lapo_lightning.length_table import LengthEntry, LengthTable, check_writable


class LengthTableWriter(pl.Callback):
    """Subclasses keep ``entries``, ``metadata`` and a resolved ``path``."""

    path: str | None
    entries: dict[str, LengthEntry]
    metadata: dict

    def resolve_path(self, trainer: pl.Trainer, default_name: str) -> None:
        """Default the path into the run's log folder, and fail now if it is not writable
        (not at the first checkpoint, hours into training)."""
        if self.path is None:
            self.path = str(Path(trainer.log_dir or trainer.default_root_dir) / default_name)
        if trainer.is_global_zero:
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

    def snapshot(self, step: int) -> LengthTable:
        metadata = dict(self.metadata, step=step, written_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                        **self.extra_metadata())
        return LengthTable(dict(self.entries), metadata)

    def write(self, step: int) -> Path:
        path = Path(self.path)
        self.snapshot(step).save(path)
        return path

    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        if trainer.is_global_zero:
            self.write(trainer.global_step)

    def on_fit_end(self, trainer, pl_module) -> None:
        if trainer.is_global_zero:
            self.write(trainer.global_step)
