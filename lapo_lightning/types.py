"""Named data that flows between the steps of one GRPO/LAPO training step.

Flow: ``LapoDataModule`` yields a :class:`ProblemBatch` (B problems) -> callbacks may set
each problem's token budget -> the sampler turns it into a :class:`RolloutBatch` (N = B*G
completions) -> the verifier fills ``correct`` -> rewards score it -> ``training_step``
returns a :class:`StepSummary` that callbacks (length statistics, budget refinement,
monitors) consume.

Shape letters used in comments throughout the package:
    B  problems in a batch (on this process)
    G  completions sampled per problem (the GRPO *group*)
    N  rollouts = B * G
    P  prompt tokens (left-padded)
    T  completion tokens (right-padded)

*Length* always means the number of generated completion tokens of one rollout, counted
from token ids: it includes the EOS token that ended the completion (the model generated
it and is trained on it) and never includes padding or any prompt/prefill text.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor


@dataclass
class ProblemBatch:
    """B problems as plain strings; no tokenizer has touched them."""

    problem_ids: list[str]  # [B] stable ids (the id field, else a hash of the problem text)
    problems: list[str]  # [B] problem text without any instruction
    answers: list[str]  # [B] reference final answers
    # [B] token budget to state in the prompt (stage 2); None = no budget sentence.
    budgets: list[int | None] = field(default_factory=list)
    # [B] length the rewards aim at (stage 2); None = no target, so length rewards fall
    # back to the group's median correct length. Differs from ``budgets`` for problems
    # unsolved in stage 1: their prompt states a fallback budget but they have no target.
    targets: list[float | None] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.budgets:
            self.budgets = [None] * len(self.problem_ids)
        if not self.targets:
            self.targets = [None] * len(self.problem_ids)
        sizes = {len(self.problem_ids), len(self.problems), len(self.answers), len(self.budgets), len(self.targets)}
        if len(sizes) != 1:
            raise ValueError(f"ProblemBatch fields have different lengths: {sorted(sizes)}")

    def __len__(self) -> int:
        return len(self.problem_ids)


@dataclass
class RolloutBatch:
    """N = B*G sampled completions; rollout i answers problem ``group_index[i]``."""

    problems: ProblemBatch
    group_index: Tensor  # [N] long, index into ``problems`` (explicit, never row order)
    prompt_ids: Tensor  # [N, P] long, left-padded
    prompt_mask: Tensor  # [N, P] bool, True on real prompt tokens
    completion_ids: Tensor  # [N, T] long, right-padded
    completion_mask: Tensor  # [N, T] bool, True on generated tokens (up to and incl. EOS)
    texts: list[str]  # [N] decoded completions (special tokens removed)
    truncated: Tensor  # [N] bool, hit max_new_tokens (or a chunk limit) without stopping
    # [N, T] float, log-probs of the sampled tokens under the sampling policy, when the
    # sampler already knows them; None means "recompute if needed".
    old_logprobs: Tensor | None = None
    correct: Tensor | None = None  # [N] bool, filled by the verifier
    parsed: Tensor | None = None  # [N] bool, an answer could be extracted and parsed
    unclosed: Tensor | None = None  # [N] bool, the reasoning was opened and never closed (incorrect)

    @property
    def lengths(self) -> Tensor:
        """[N] long: generated tokens per rollout (see module docstring)."""
        return self.completion_mask.sum(dim=1)

    @property
    def group_size(self) -> int:
        return len(self.texts) // max(len(self.problems), 1)

    @property
    def budgets(self) -> Tensor:
        """[N] float on CPU: each rollout's stated budget, NaN where none was given."""
        return _per_rollout(self.problems.budgets, self.group_index)

    @property
    def targets(self) -> Tensor:
        """[N] float on CPU: each rollout's length target, NaN where there is none."""
        return _per_rollout(self.problems.targets, self.group_index)

    def __len__(self) -> int:
        return len(self.texts)


@dataclass
class StepSummary:
    """What ``training_step`` hands to callbacks: everything per rollout, on CPU."""

    step: int  # trainer.global_step *before* this batch's updates
    problem_ids: list[str]  # [B]
    group_index: Tensor  # [N] long, index into problem_ids
    lengths: Tensor  # [N] long
    correct: Tensor  # [N] bool
    truncated: Tensor  # [N] bool
    budgets: Tensor  # [N] float, NaN where no budget was stated
    targets: Tensor  # [N] float, NaN where the problem had no length target
    rewards: dict[str, Tensor]  # name -> [N] float (unweighted), plus "total" (weighted sum)
    texts: list[str] = field(default_factory=list)  # [N]


def _per_rollout(values: list[float | None], group_index: Tensor) -> Tensor:
    per_problem = torch.tensor([float("nan") if v is None else float(v) for v in values], dtype=torch.float32)
    return per_problem[group_index.cpu()]
