"""Per-token log-probabilities of sampled tokens, the input of every GRPO loss term.

Called from the GRPO LightningModule's ``training_step`` on the policy's (and reference's)
logits for prompt+completion. Not a paper equation: plumbing that must be exact. Departure
from a plain ``log_softmax(...).gather(...)``: logsumexp minus the gathered logit, one row at
a time, so no float32 copy of the whole [N, T, V] log-softmax is ever materialised (the
trick TRL's ``selective_log_softmax`` uses). The saving is full under no_grad (old/reference
passes); with grad, autograd still keeps each row's float32 copy for backward.
"""

from __future__ import annotations

import torch
from torch import Tensor


def token_logprobs(logits: Tensor, targets: Tensor, temperature: float = 1.0) -> Tensor:
    """[N, T] float32: ``log softmax(logits / temperature)[n, t, targets[n, t]]``.

    logits [N, T, V] (any float dtype), targets [N, T] long (padding ids must still be valid
    vocabulary ids; mask them afterwards). The logits must already be aligned with the
    targets: a causal LM's logits at position t predict token t+1, so for completion tokens
    pass ``logits[:, P-1:-1]`` (or use :func:`completion_logprobs`). ``temperature`` should
    match the sampler's, so that the ratio to the sampling policy's log-probs is 1 on-policy.
    Example: logits [[[0., 0.]]] (V=2), targets [[1]] -> [[log 0.5]] = [[-0.6931]].
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    rows = []
    # One row at a time: peak extra memory is one [T, V] float32 slice, not [N, T, V].
    for row_logits, row_targets in zip(logits, targets):
        row = row_logits.float()
        if temperature != 1.0:
            row = row / temperature
        picked = row.gather(-1, row_targets.unsqueeze(-1)).squeeze(-1)
        rows.append(picked - torch.logsumexp(row, dim=-1))
    if not rows:
        return logits.new_zeros(targets.shape, dtype=torch.float32)
    return torch.stack(rows)


def completion_logprobs(
    logits_full: Tensor, completion_ids: Tensor, prompt_len: int, temperature: float = 1.0
) -> Tensor:
    """[N, T] float32 log-probs of the completion tokens from a prompt+completion forward.

    logits_full [N, P+T, V] from ``model(cat(prompt_ids [N, P], completion_ids [N, T]))``;
    prompt_len = P >= 1. Position P-1 (the last prompt token) predicts completion token 0,
    and the last position predicts past the end, so the slice is ``[P-1 : P-1+T]``.
    Example: P=2, T=1: logits_full[:, 1] scores completion_ids[:, 0].
    """
    t = completion_ids.shape[1]
    if prompt_len < 1 or logits_full.shape[1] < prompt_len - 1 + t:
        raise ValueError(
            f"need prompt_len >= 1 and {prompt_len - 1 + t} logit positions, "
            f"got prompt_len={prompt_len} and logits of shape {tuple(logits_full.shape)}"
        )
    aligned = logits_full[:, prompt_len - 1 : prompt_len - 1 + t]
    return token_logprobs(aligned, completion_ids, temperature)


def masked_mean(x: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Mean of ``x`` over the True entries of ``mask`` (0, not NaN, where there are none).

    x and mask broadcastable, e.g. [N, T]. Example: x [[1., 3., 9.]], mask [[1, 1, 0]] -> 2.
    """
    mask = mask.to(torch.bool)
    total = torch.where(mask, x, torch.zeros_like(x))
    if dim is None:
        return total.sum() / mask.sum().clamp(min=1)
    return total.sum(dim) / mask.sum(dim).clamp(min=1)
