"""LAPO stage 1 (Discovery): per-problem length statistics -> the length table for stage 2.

Flow: after every training batch this callback reads the ``StepSummary`` that
``training_step`` returned, gathers it from every process, and records for each sampled
problem the median / P30 / P70 of its *correct* completion lengths in that step (paper
Eqs. 1, 4-5). Latest wins: a problem sampled again overwrites its entry, and a problem no
rollout solved in its latest step is marked unsolved. The table is written atomically at
every checkpoint and at the end of fit, and is also kept in the checkpoint itself
(``state_dict``) so a resumed run continues with identical statistics.

Departs from the official code: it keys by problem id (not prompt text), measures lengths
in generated token ids only (no prompt text), marks unsolved problems (never a median of 0),
and keeps one entry per problem, so no post-hoc script is needed.
"""

from __future__ import annotations

from dataclasses import asdict

import lightning.pytorch as pl
import torch
import torch.distributed as dist

from lapo_lightning.algo import group_length_stats, has_band
from lapo_lightning.callbacks.table_writer import LengthTableWriter
from lapo_lightning.length_table import LengthEntry
from lapo_lightning.types import StepSummary


def gather_summaries(trainer: pl.Trainer, summary: StepSummary) -> list[StepSummary]:
    """Every process's summary, in rank order, on every process (identical everywhere)."""
    if trainer.world_size == 1 or not (dist.is_available() and dist.is_initialized()):
        return [summary]
    gathered: list = [None] * trainer.world_size
    dist.all_gather_object(gathered, summary)
    return gathered


class LengthStatsCollector(LengthTableWriter):
    """Track each problem's latest correct-length statistics and write the length table.

    Args:
        path: where to write the table; default ``<log_dir>/length_table.json``.
        low_pct, high_pct: the band percentiles recorded beside the median; need
            ``0 <= low_pct < high_pct <= 100`` (equal ones would record no band at all).
    """

    def __init__(self, path: str | None = None, low_pct: float = 30.0, high_pct: float = 70.0) -> None:
        if not 0 <= low_pct < high_pct <= 100:
            raise ValueError(f"LengthStatsCollector: need 0 <= low_pct < high_pct <= 100, got low_pct={low_pct}, "
                             f"high_pct={high_pct}")
        self.path = path
        self.low_pct, self.high_pct = low_pct, high_pct
        self.entries: dict[str, LengthEntry] = {}
        self.metadata: dict = {}
        self._problem_ids: list[str] = []

    # ------------------------------------------------------------------ hooks
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self.resolve_path(trainer, "length_table.json")
        self._problem_ids = list(getattr(getattr(trainer, "datamodule", None), "problem_ids", []) or [])
        self.metadata = {
            **self.run_metadata(trainer, pl_module),
            "settings": {"low_pct": self.low_pct, "high_pct": self.high_pct, "length_unit": "generated tokens incl. EOS"},
        }

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        hits = in_band = 0
        for summary in gather_summaries(trainer, outputs["summary"]):
            h, n = self.update(summary)
            hits, in_band = hits + h, in_band + n
        metrics = {"stage1/coverage": self.coverage(), "stage1/problems_seen": float(len(self.entries))}
        if in_band:
            metrics["stage1/band_hit_rate"] = hits / in_band
        targets = sorted(e.median for e in self.entries.values() if e.solved)
        if targets:
            t = torch.tensor(targets)
            metrics.update({
                "stage1/target_p10": float(t.quantile(0.1)),
                "stage1/target_median": float(t.median()),
                "stage1/target_p90": float(t.quantile(0.9)),
            })
        pl_module.log_dict(metrics, batch_size=1)

    # ------------------------------------------------------------------ logic
    def update(self, summary: StepSummary) -> tuple[int, int]:
        """Record one step's statistics; returns (correct rollouts in band, correct rollouts with a band)."""
        num_groups = len(summary.problem_ids)
        stats = group_length_stats(summary.lengths, summary.correct, summary.group_index,
                                   self.low_pct, self.high_pct, num_groups=num_groups)
        for g, pid in enumerate(summary.problem_ids):
            solved = int(stats.num_correct[g]) > 0
            self.entries[pid] = LengthEntry(
                median=float(stats.median[g]) if solved else None,
                low=float(stats.low[g]) if solved else None,
                high=float(stats.high[g]) if solved else None,
                count=int(stats.num_correct[g]),
                last_step=summary.step,
                solved=solved,
            )
        # Only groups with a real band (P_low < P_high) give band rewards; count those.
        lengths = summary.lengths.float()
        in_band_group = summary.correct & has_band(stats)[summary.group_index]  # [N]
        low, high = stats.low[summary.group_index], stats.high[summary.group_index]  # [N]
        inside = in_band_group & (lengths >= low) & (lengths <= high)
        return int(inside.sum()), int(in_band_group.sum())

    def coverage(self) -> float:
        """Share of training problems that have a target (solved in their latest step)."""
        ids = self._problem_ids or list(self.entries)
        return sum(1 for pid in ids if pid in self.entries and self.entries[pid].solved) / max(len(ids), 1)

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        return {"entries": {pid: asdict(e) for pid, e in self.entries.items()}, "path": self.path}

    def load_state_dict(self, state_dict: dict) -> None:
        self.entries = {pid: LengthEntry(**raw) for pid, raw in state_dict["entries"].items()}
        self.path = self.path or state_dict.get("path")
