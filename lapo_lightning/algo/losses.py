"""GRPO loss: PPO clipped surrogate + k3 KL, aggregated over tokens by one named rule.

Called from the GRPO LightningModule's ``training_step`` once per micro-batch (manual
optimisation; the caller sums the returned losses via backward). Implements the GRPO
objective LAPO optimises in both stages (no LAPO-specific equation lives here). Departures:
the token aggregation is selectable (DAPO token-mean, GRPO sequence-mean, Dr. GRPO constant)
and micro-batch aware, so gradient accumulation gives exactly the full-batch gradient.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal, Union

import torch
from torch import Tensor

from .minibatches import ratio_sums

Number = Union[int, float, Tensor]
Aggregation = Literal["token_mean", "sequence_mean", "constant"]


def clipped_surrogate(
    logprobs: Tensor, old_logprobs: Tensor, advantages: Tensor,
    clip_low: float = 0.2, clip_high: float = 0.2,
) -> tuple[Tensor, Tensor]:
    """PPO loss ``-min(r*A, clip(r, 1-clip_low, 1+clip_high)*A)`` with r = exp(logp - old).

    logprobs, old_logprobs [n, T]; advantages [n]. Returns (per_token_loss [n, T], clipped
    [n, T] bool: the clipped branch is active, i.e. the token gives no gradient).
    Example: r = 1.5, A = +1 -> loss -1.2, clipped; r = 1.5, A = -1 -> loss 1.5, not clipped.
    """
    ratio = torch.exp(logprobs - old_logprobs)
    adv = advantages.unsqueeze(-1).to(ratio.dtype)
    unclipped = ratio * adv
    clipped_obj = torch.clamp(ratio, 1.0 - clip_low, 1.0 + clip_high) * adv
    return -torch.minimum(unclipped, clipped_obj), clipped_obj < unclipped


def k3_kl(logprobs: Tensor, ref_logprobs: Tensor) -> Tensor:
    """[n, T] k3 estimator of KL(policy || ref): ``exp(d) - d - 1`` with d = ref - logp.

    Always >= 0 and 0 where the two agree. d is clamped to [-20, 20]: a padding position or a
    token the reference finds near-impossible can give |d| > 88, where exp overflows float32
    to inf and inf * 0 (mask) = NaN would poison the whole sum; e^20 is still a huge penalty.
    Example: logp = log 0.25, ref = log 0.5 -> d = log 2 -> 2 - log 2 - 1 = 0.3069.
    """
    d = (ref_logprobs - logprobs).clamp(-20.0, 20.0)
    return torch.exp(d) - d - 1.0


def _pos(x: Number) -> Number:
    # Totals may be all-reduced tensors; an empty batch must give 0, not NaN.
    return x.clamp(min=1) if isinstance(x, Tensor) else max(x, 1)


def _masked_sum_rows(per_token: Tensor, mask: Tensor) -> Tensor:
    # where, not multiply: masked positions may hold inf/NaN and inf * 0 = NaN.
    return torch.where(mask.bool(), per_token, torch.zeros_like(per_token)).sum(-1)


def token_mean(per_token: Tensor, mask: Tensor, *, total_tokens: Number,
               total_sequences: Number, max_tokens: Number) -> Tensor:
    """DAPO: this micro-batch's share of sum over all tokens / total_tokens (full batch).

    Example: per_token [[1, 2, 3, 0], [4, 0, 0, 0]], mask lengths [3, 1], total_tokens 4 -> 2.5.
    """
    return _masked_sum_rows(per_token, mask).sum() / _pos(total_tokens)


def sequence_mean(per_token: Tensor, mask: Tensor, *, total_tokens: Number,
                  total_sequences: Number, max_tokens: Number) -> Tensor:
    """Original GRPO: mean over each sequence's tokens, then over total_sequences.

    Same example as token_mean with total_sequences 2 -> (6/3 + 4/1) / 2 = 3.0.
    """
    lengths = mask.bool().sum(-1).clamp(min=1)  # a zero-length row contributes 0, not NaN
    return (_masked_sum_rows(per_token, mask) / lengths).sum() / _pos(total_sequences)


def constant_norm(per_token: Tensor, mask: Tensor, *, total_tokens: Number,
                  total_sequences: Number, max_tokens: Number) -> Tensor:
    """Dr. GRPO: sum over tokens / (total_sequences * max_tokens), max_tokens = generation cap.

    Same example with total_sequences 2, max_tokens 4 -> 10 / 8 = 1.25.
    """
    return _masked_sum_rows(per_token, mask).sum() / _pos(total_sequences * max_tokens)


AGGREGATIONS: dict[str, Callable[..., Tensor]] = {
    "token_mean": token_mean,
    "sequence_mean": sequence_mean,
    "constant": constant_norm,
}


def aggregate(name: str, per_token: Tensor, mask: Tensor, **totals: Number) -> Tensor:
    """Dispatch to ``AGGREGATIONS[name]``; totals = total_tokens, total_sequences, max_tokens."""
    try:
        fn = AGGREGATIONS[name]
    except KeyError:
        raise ValueError(
            f"unknown aggregation {name!r}; valid: {', '.join(sorted(AGGREGATIONS))}"
        ) from None
    return fn(per_token, mask, **totals)


@dataclass
class LossTerms:
    """``loss`` is differentiable; the rest are detached scalars, aggregated like ``loss``."""

    loss: Tensor
    policy_loss: Tensor
    kl: Tensor
    clip_frac: Tensor
    ratio_sums: Tensor
    """[4] this micro-batch's tokens, sums of the importance ratio and its square, and clipped
    tokens (``minibatches.ratio_sums``): they add over micro-batches and processes."""


def grpo_loss(
    logprobs: Tensor, old_logprobs: Tensor | None, ref_logprobs: Tensor | None,
    advantages: Tensor, mask: Tensor, *, clip_low: float = 0.2, clip_high: float = 0.2,
    kl_coef: float = 0.0, aggregation: str = "token_mean", total_tokens: Number,
    total_sequences: Number, max_tokens: Number,
) -> LossTerms:
    """GRPO loss of one micro-batch: aggregate(clipped surrogate + kl_coef * k3 KL).

    logprobs/old_logprobs/ref_logprobs [n, T], advantages [n], mask [n, T] bool; totals are
    the full rollout batch's. old_logprobs None = on-policy (old = logprobs.detach(), ratio 1,
    no extra forward pass); ref_logprobs None or kl_coef 0 -> no KL term. clip_frac is the
    clipped-token indicator aggregated like the loss (a fraction under token_mean).
    Example: logprobs = old = ref, advantages [2.], one token, token_mean -> loss -2.
    """
    old = logprobs.detach() if old_logprobs is None else old_logprobs
    policy, clipped = clipped_surrogate(logprobs, old, advantages, clip_low, clip_high)
    if ref_logprobs is None or kl_coef == 0:
        kl = torch.zeros_like(policy)
    else:
        kl = k3_kl(logprobs, ref_logprobs)
    totals = dict(total_tokens=total_tokens, total_sequences=total_sequences,
                  max_tokens=max_tokens)
    loss = aggregate(aggregation, policy + kl_coef * kl, mask, **totals)
    with torch.no_grad():
        return LossTerms(
            loss=loss,
            policy_loss=aggregate(aggregation, policy.detach(), mask, **totals),
            kl=aggregate(aggregation, kl.detach(), mask, **totals),
            clip_frac=aggregate(aggregation, clipped.to(policy.dtype), mask, **totals),
            ratio_sums=ratio_sums(torch.exp(logprobs.detach() - old), clipped, mask),
        )
