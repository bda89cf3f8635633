"""ThinkPrune: a hard length cap on rollouts, truncation scores 0, and a cap that shrinks in steps.

Paper: Hou et al. (2025), "ThinkPrune: Pruning Long Chain-of-Thought of LLMs via Reinforcement
Learning", arXiv:2504.01296.

Flow: before every training batch :class:`CapSchedule` sets the module's generation cap
(``GRPOModule.generation.max_new_tokens``) from ``trainer.global_step``; the sampler stops each
rollout at that cap and marks it ``truncated``; after verification :class:`CappedAccuracy` (used
*instead of* ``Accuracy``) scores ``1[correct and not truncated]``, so an answer that did not finish
inside the cap earns nothing, whatever text it contains.

Formula: r = 1[correct] * 1[L < cap] (here: ``correct & ~truncated``); cap_k = caps[min(step //
every_n_steps, len(caps) - 1)]. Defaults follow the paper's iterative pruning 4096 -> 3072 -> 2048
(``caps``); the number of steps per round (``every_n_steps``) has no default: the paper trains each
round to convergence, we switch after a fixed number of optimizer steps.

Departures and choices the paper leaves open:

- Rounds are one run with a step schedule, not separate runs each started from the last round's
  checkpoint; the optimizer state and reference model carry over between rounds.
- "Truncated" is the sampler's flag: the cap was reached without EOS or a stop string. A
  completion that ends with EOS exactly at the cap is not truncated and keeps its score.
- Option ``truncated_score`` (default 0, the paper's choice) for what a truncated rollout gets;
  a negative value turns the cap into a penalty.
"""

from __future__ import annotations

import math
from dataclasses import replace

import lightning.pytorch as pl
import torch
from torch import Tensor

from lapo_lightning.rewards import Reward
from lapo_lightning.types import RolloutBatch

DEFAULT_CAPS = (4096, 3072, 2048)


def capped_accuracy(correct: Tensor, truncated: Tensor, truncated_score: float = 0.0) -> Tensor:
    """[N] float: 1 for a correct rollout that was not truncated, ``truncated_score`` for a truncated
    one, 0 for an incorrect one that finished.

    Example: correct = [1, 1, 0, 0], truncated = [0, 1, 0, 1] -> [1.0, 0.0, 0.0, 0.0];
    with truncated_score = -1 -> [1.0, -1.0, 0.0, -1.0].
    """
    truncated = truncated.bool().to(correct.device)
    acc = correct.bool().to(torch.float32)
    return torch.where(truncated, torch.full_like(acc, float(truncated_score)), acc)


class CappedAccuracy(Reward):
    """ThinkPrune's reward: ``1[correct and not truncated]`` (truncated -> ``truncated_score``).

    Args:
        weight: multiplier in the total (1: this reward replaces Accuracy).
        truncated_score: score of a rollout that hit the generation cap (paper: 0).
    """

    def __init__(self, weight: float = 1.0, truncated_score: float = 0.0, name: str | None = None) -> None:
        super().__init__(weight, name)
        if not math.isfinite(truncated_score):
            raise ValueError(f"CappedAccuracy: truncated_score must be a finite number, got {truncated_score}")
        self.truncated_score = float(truncated_score)

    def __call__(self, batch: RolloutBatch) -> Tensor:
        return capped_accuracy(batch.correct, batch.truncated, self.truncated_score)


TruncatedIsWrong = CappedAccuracy  # the same reward under the name that says what it does


def scheduled_cap(caps: list[int], every_n_steps: int, step: int) -> int:
    """The cap in force at optimizer step ``step``: ``caps[min(step // every_n_steps, len(caps) - 1)]``.

    Example: caps [4096, 3072, 2048], every_n_steps 10 -> steps 0-9: 4096, 10-19: 3072, 20+: 2048.
    """
    return caps[min(step // every_n_steps, len(caps) - 1)]


class CapSchedule(pl.Callback):
    """Set the rollout generation cap from the global step: ``caps[k]`` for round k, the last one forever.

    Args:
        caps: generation caps in tokens, one per round (paper: 4096, 3072, 2048).
        every_n_steps: optimizer steps per round (``trainer.global_step`` counts them, so a resumed
            run is exactly where the schedule says).

    The module's ``generation`` is replaced (``dataclasses.replace``), never mutated, so a default
    ``GenerationConfig`` shared with other objects keeps its cap. Logs ``thinkprune/cap``.
    """

    KEY = "trainer.callbacks[CapSchedule]"

    def __init__(self, caps: list[int] = DEFAULT_CAPS, every_n_steps: int = 100) -> None:
        caps = list(caps)
        if not caps or any(int(c) != c or c < 1 for c in caps):
            raise ValueError(f"{self.KEY}.caps: need a non-empty list of token counts >= 1, got {caps}")
        if int(every_n_steps) != every_n_steps or every_n_steps < 1:
            raise ValueError(f"{self.KEY}.every_n_steps: must be an integer >= 1, got {every_n_steps}")
        self.caps, self.every_n_steps = [int(c) for c in caps], int(every_n_steps)

    def cap(self, step: int) -> int:
        return scheduled_cap(self.caps, self.every_n_steps, step)

    def apply(self, pl_module, step: int) -> int:
        """Give ``pl_module`` the cap of ``step``; returns it."""
        cap = self.cap(step)
        if pl_module.generation.max_new_tokens != cap:
            pl_module.generation = replace(pl_module.generation, max_new_tokens=cap)
        return cap

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        cap = self.apply(pl_module, trainer.global_step)
        if hasattr(pl_module, "log"):
            pl_module.log("thinkprune/cap", float(cap), batch_size=1)
