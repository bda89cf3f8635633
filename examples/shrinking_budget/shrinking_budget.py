"""A length method of your own, in one file: a callback that states budgets and a reward that uses them.

The method ("shrinking budget"): every problem starts with a budget of ``start`` tokens; after
each step that solved it, its budget becomes ``slack`` x its shortest correct answer so far
(never more than before). The prompt states the budget, and the reward pays a correct answer in
full within it, less the further it runs over, nothing at twice the budget.

    cd examples/shrinking_budget && lapo fit --config config.yaml

``lapo fit`` imports this module by the ``class_path`` the config gives it
(``shrinking_budget.ShrinkingBudget``): run from this folder, it is importable as it would be
with ``python -m``. docs/plugins.md explains each contract used here.
"""

from __future__ import annotations

import lightning.pytorch as pl
import torch
from torch import Tensor

from lapo_lightning.callbacks.length_stats import gather_summaries
from lapo_lightning.rewards import Reward
from lapo_lightning.types import ProblemBatch, RolloutBatch, StepSummary


class ShrinkingBudget(pl.Callback):
    """States each problem's budget before a step; lowers it after a step that solved the problem.

    Args:
        start: budget of a problem not solved yet (tokens).
        slack: the new budget is ``slack`` x the shortest correct length seen.
    """

    def __init__(self, start: int = 24, slack: float = 1.0) -> None:
        if start < 1 or slack <= 0:
            raise ValueError(f"trainer.callbacks[ShrinkingBudget]: need start >= 1 and slack > 0, got {start}, {slack}")
        self.start, self.slack = int(start), float(slack)
        self.budgets: dict[str, int] = {}  # problem id -> budget; the whole state of the method

    def budget(self, problem_id: str) -> int:
        return self.budgets.get(problem_id, self.start)

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: ProblemBatch,
                             batch_idx: int) -> None:
        # In place: training_step renders the prompts from this very object.
        batch.budgets[:] = [self.budget(pid) for pid in batch.problem_ids]
        batch.targets[:] = [float(b) for b in batch.budgets]

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch,
                           batch_idx: int) -> None:
        # Every process sees every process's rollouts, so all of them hold the same budgets.
        for summary in gather_summaries(trainer, outputs["summary"]):
            self.update(summary)
        pl_module.log("shrinking/mean_budget", sum(map(self.budget, batch.problem_ids)) / len(batch.problem_ids),
                      batch_size=1)

    def update(self, summary: StepSummary) -> None:
        for g, pid in enumerate(summary.problem_ids):
            solved = summary.correct & (summary.group_index == g)
            if bool(solved.any()):
                shortest = int(summary.lengths[solved].min())
                self.budgets[pid] = min(self.budget(pid), max(1, round(self.slack * shortest)))

    # A checkpoint holds this, so `--ckpt_path last` continues with the same budgets.
    def state_dict(self) -> dict:
        return {"budgets": dict(self.budgets)}

    def load_state_dict(self, state_dict: dict) -> None:
        self.budgets = dict(state_dict["budgets"])


def under_budget_reward(lengths: Tensor, correct: Tensor, budgets: Tensor) -> Tensor:
    """[N] float: 1 for a correct answer within its budget, falling linearly to 0 at twice the
    budget; 0 for a wrong answer or where no budget was stated (NaN).

    Example: lengths [10, 15, 30, 10], correct [T, T, T, F], budgets [10, 10, 10, 10]
    -> [1.0, 0.5, 0.0, 0.0].
    """
    stated = ~torch.isnan(budgets)
    safe = torch.where(stated, budgets, torch.ones_like(budgets))
    over = (lengths.float() - safe).clamp(min=0) / safe
    return torch.where(correct.bool() & stated, (1 - over).clamp(min=0), torch.zeros_like(over))


class UnderBudget(Reward):
    """The reward half of the method: :func:`under_budget_reward` on each rollout."""

    def __call__(self, batch: RolloutBatch) -> Tensor:
        # batch.budgets is per rollout: each problem's budget repeated over its G completions.
        return under_budget_reward(batch.lengths, batch.correct, batch.budgets.to(batch.lengths.device))
