"""L1 / LCPO: length-controlled policy optimisation with a target length stated in the prompt.

Paper: Aggarwal & Welleck (2025), "L1: Controlling How Long A Reasoning Model Thinks With
Reinforcement Learning", arXiv:2503.04697.

Flow: before every training batch the :class:`L1Targets` callback draws one target length n
per problem (uniform integer in ``[min_tokens, max_tokens]``) and writes it into
``ProblemBatch.budgets``, exactly where LAPO's stage-2 ``BudgetTargets`` writes its budgets;
the prompt template then states it and the rollout batch carries it as ``batch.budgets``. After
verification the reward (:class:`L1Exact` or :class:`L1Max`, used *instead of* ``Accuracy``,
since both already contain correctness) scores each rollout against its problem's n:

- *Exact* (LCPO-Exact):  r = 1[correct] - alpha * |n - L|            (alpha = 0.0003)
- *Max*   (LCPO-Max):    r = 1[correct] * clip(alpha * (n - L) + delta, 0, 1)
                                                                    (alpha = 0.0003, delta = 0.5)

L is the completion length in generated tokens incl. EOS (``types.py``). The Exact penalty applies
to incorrect rollouts too (so a wrong answer of the right length scores 0, a wrong answer far
from n scores below 0), as in the paper's formula; Max pays nothing for a wrong answer.

Departures and choices the paper leaves open:

- Prompt wording: L1 appends "Think for exactly N tokens." (Exact) or "Think for maximum N
  tokens." (Max) to the question; here the project's budget
  sentence states n (``prompts.render_budget``: "I will answer the question with N tokens.",
  at the template's ``placement``), so one prompt format serves LAPO and L1 alike.
- No target (``batch.budgets`` NaN, e.g. the callback is not configured or an evaluation
  batch): option ``missing``: ``"accuracy"`` (default) scores such rollouts 1[correct] with no
  length term; ``"error"`` raises instead, for runs where every prompt must state a target.
- Target sampling: deterministic per (seed, problem id, global step) through a hash, so a resumed
  run draws the same targets without any callback state (the paper samples at random).
- Length unit: generated tokens of the completion (the paper counts the model's output tokens too).
"""

from __future__ import annotations

import hashlib

import lightning.pytorch as pl
import torch
from torch import Tensor

from lapo_lightning.rewards import Reward
from lapo_lightning.types import ProblemBatch, RolloutBatch

ALPHA = 0.0003
DELTA = 0.5
MISSING = ("accuracy", "error")


def l1_exact_reward(lengths: Tensor, correct: Tensor, targets: Tensor, alpha: float = ALPHA) -> Tensor:
    """[N] float: ``1[correct] - alpha * |n - L|``; rows with n NaN get ``1[correct]``.

    lengths [N] long, correct [N] bool, targets [N] float n (NaN = no target stated).
    Example: L = [1000, 2000, 1500], correct = [1, 1, 0], n = 1000, alpha 0.0003
    -> [1.0, 1 - 0.3 = 0.7, 0 - 0.15 = -0.15].
    """
    n = targets.to(torch.float32)
    acc = correct.bool().to(torch.float32)
    reward = acc - alpha * (n - lengths.to(torch.float32)).abs()
    return torch.where(torch.isnan(n), acc, reward)


def l1_max_reward(lengths: Tensor, correct: Tensor, targets: Tensor, alpha: float = ALPHA,
                  delta: float = DELTA) -> Tensor:
    """[N] float: ``1[correct] * clip(alpha * (n - L) + delta, 0, 1)``; rows with n NaN get ``1[correct]``.

    Example: n = 1000, alpha 0.0003, delta 0.5, all correct: L = 1000 -> 0.5, L = 0 -> 0.8,
    L = 2000 -> 0.2, L = 3000 -> clip(-0.1) = 0; any incorrect rollout -> 0.
    """
    n = targets.to(torch.float32)
    acc = correct.bool().to(torch.float32)
    reward = acc * (alpha * (n - lengths.to(torch.float32)) + delta).clamp(0.0, 1.0)
    return torch.where(torch.isnan(n), acc, reward)


class _L1Reward(Reward):
    def __init__(self, weight: float, alpha: float, missing: str, name: str | None) -> None:
        super().__init__(weight, name)
        who = type(self).__name__
        if not alpha >= 0:
            raise ValueError(f"{who}: alpha must be >= 0 (reward per token), got {alpha}")
        if missing not in MISSING:
            raise ValueError(f"{who}: missing must be one of {MISSING}, got {missing!r}")
        self.alpha, self.missing = alpha, missing

    def targets(self, batch: RolloutBatch) -> Tensor:
        """[N] float on the lengths' device: the stated budget n per rollout (NaN = none)."""
        budgets = batch.budgets
        if self.missing == "error" and bool(torch.isnan(budgets).any()):
            row = int(torch.isnan(budgets).nonzero()[0, 0])
            pid = batch.problems.problem_ids[int(batch.group_index[row])]
            raise ValueError(f"{type(self).__name__}: problem {pid!r} states no target length (batch.budgets is "
                             "None); add the L1Targets callback (lapo_lightning.methods.l1.L1Targets) to "
                             "trainer.callbacks, or set missing: accuracy")
        return budgets.to(batch.lengths.device)


class L1Exact(_L1Reward):
    """LCPO-Exact: ``1[correct] - alpha * |n - L|`` with n the problem's stated budget.

    Args:
        weight: multiplier in the total (1: this reward replaces Accuracy).
        alpha: penalty per token of distance from the target (paper: 0.0003).
        missing: rollouts without a stated target: "accuracy" (score 1[correct]) or "error".
    """

    def __init__(self, weight: float = 1.0, alpha: float = ALPHA, missing: str = "accuracy",
                 name: str | None = None) -> None:
        super().__init__(weight, alpha, missing, name)

    def __call__(self, batch: RolloutBatch) -> Tensor:
        return l1_exact_reward(batch.lengths, batch.correct, self.targets(batch), self.alpha)


class L1Max(_L1Reward):
    """LCPO-Max: ``1[correct] * clip(alpha * (n - L) + delta, 0, 1)``: n is a soft maximum.

    Args:
        weight: multiplier in the total (1: this reward replaces Accuracy).
        alpha: slope per token (paper: 0.0003).
        delta: reward of a correct answer exactly at the target (paper: 0.5).
        missing: rollouts without a stated target: "accuracy" (score 1[correct]) or "error".
    """

    def __init__(self, weight: float = 1.0, alpha: float = ALPHA, delta: float = DELTA, missing: str = "accuracy",
                 name: str | None = None) -> None:
        super().__init__(weight, alpha, missing, name)
        self.delta = delta

    def __call__(self, batch: RolloutBatch) -> Tensor:
        return l1_max_reward(batch.lengths, batch.correct, self.targets(batch), self.alpha, self.delta)


def draw_target(seed: int, problem_id: str, step: int, min_tokens: int, max_tokens: int) -> int:
    """A target uniform over ``[min_tokens, max_tokens]`` (inclusive), fixed by (seed, problem id, step).

    A 64-bit BLAKE2 hash, not the global RNG: the same arguments give the same target in any
    process, after any resume, whatever else drew random numbers before.
    """
    digest = hashlib.blake2b(f"{seed}\x00{problem_id}\x00{step}".encode(), digest_size=8).digest()
    return min_tokens + int.from_bytes(digest, "big") % (max_tokens - min_tokens + 1)


class L1Targets(pl.Callback):
    """Before every training batch, state one L1 target length per problem as its budget.

    Args:
        min_tokens, max_tokens: the inclusive range targets are drawn from (uniform integers).
            The paper draws from [100, 4000] for a 4k-token model; keep max_tokens at or below
            ``model.generation.max_new_tokens``.
        seed: with the problem id and ``trainer.global_step``, fixes every draw (resume-exact).

    Only ``ProblemBatch.budgets`` is set (the prompt states it, L1 rewards read it); ``targets``
    is left as the data module made it (None), since no LAPO length reward is meant to run with L1.
    """

    def __init__(self, min_tokens: int, max_tokens: int, seed: int = 0) -> None:
        key = "trainer.callbacks[L1Targets]"
        if not 1 <= min_tokens <= max_tokens:
            raise ValueError(f"{key}: need 1 <= min_tokens <= max_tokens, got min_tokens={min_tokens}, "
                             f"max_tokens={max_tokens}")
        self.min_tokens, self.max_tokens, self.seed = int(min_tokens), int(max_tokens), int(seed)

    def on_train_batch_start(self, trainer, pl_module, batch: ProblemBatch, batch_idx: int) -> None:
        self.apply(batch, trainer.global_step)

    def apply(self, batch: ProblemBatch, step: int) -> None:
        """Write this step's targets into ``batch.budgets`` in place (training_step gets this object)."""
        batch.budgets[:] = [draw_target(self.seed, pid, step, self.min_tokens, self.max_tokens)
                            for pid in batch.problem_ids]
