"""The metrics one training batch logs, computed from what the step produced.

Where it sits in the flow: ``GRPOModule.training_step`` samples, verifies, scores and updates,
then ``log_step`` hands its ``StepSummary``, rollouts, loss terms and timings to
:func:`step_metrics` and logs the result (``reward/*``, ``accuracy``, ``verify/*``, ``length/*``,
``adv/*``, ``perf/*``, ``lr`` and the loss terms). Pure: tensors in, floats out.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lapo_lightning.algo import group_std, zero_spread_groups
from lapo_lightning.types import RolloutBatch, StepSummary


def logged_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``values`` where ``mask``, for a logged metric: NaN when the mask is empty (no
    such rows this step), where ``algo.masked_mean``, which feeds losses, gives 0."""
    return values[mask].mean() if mask.any() else torch.tensor(float("nan"))


def step_metrics(summary: StepSummary, rollouts: RolloutBatch, losses: dict[str, float], *, gen_seconds: float,
                 step_seconds: float, passes: int, lr: float) -> dict[str, float]:
    """Every per-batch metric; ``passes`` is how often each rollout went through the training
    forward (``model.grpo.num_iterations``), for the training throughput."""
    lengths, correct = summary.lengths.float(), summary.correct
    groups = len(summary.problem_ids)
    train_tokens = float(rollouts.prompt_mask.sum() + rollouts.completion_mask.sum()) * passes
    metrics = {f"reward/{name}": value.mean() for name, value in summary.rewards.items()}
    metrics.update(losses)
    metrics.update({
        "accuracy": correct.float().mean(),
        "verify/miss_rate": (~rollouts.parsed).float().mean().cpu(),
        # Completions still inside <think> at their end (all graded incorrect): near the
        # truncation rate when the cap cuts reasoning short; near 1 when the model (or its
        # tokenizer's decoding) never writes </think>, then see MathVerifier(think_tags=False).
        "verify/unclosed_think_rate": rollouts.unclosed.float().mean().cpu(),
        "length/mean": lengths.mean(),
        "length/mean_correct": logged_mean(lengths, correct),
        "length/mean_incorrect": logged_mean(lengths, ~correct),
        # How far apart a problem's G completions are: the spread LAPO's length rewards act on.
        "length/group_std": group_std(lengths, summary.group_index, groups).mean(),
        "length/truncation_rate": summary.truncated.float().mean(),
        "adv/frac_zero_std": zero_spread_groups(summary.rewards["total"], summary.group_index, groups).float().mean(),
        "perf/gen_tokens_per_s": float(lengths.sum()) / max(gen_seconds, 1e-9),
        "perf/train_tokens_per_s": train_tokens / max(step_seconds - gen_seconds, 1e-9),
        "perf/step_time_s": step_seconds,
        "lr": lr,
    })
    return {key: float(value) for key, value in metrics.items()}
