"""Log-probs of sampled completions under the policy: the training forward, one micro-batch at a time.

Where it sits in the flow: ``GRPOModule.update`` plans each optimizer step's micro-batches with
:func:`micro_batch_rows` and runs :func:`rollout_logprobs` on each with gradients on; the
no-grad passes (old log-probs, the reference) run the same two functions. Each micro-batch is
trimmed to its own longest prompt and completion, goes through the decoder (each group's
prompt once, with ``shared_prefix``), then through the output head a chunk of positions at a
time (``algo.head_logprobs``): the full-vocabulary logits of a micro-batch never exist.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lapo_lightning.algo import head_logprobs
from lapo_lightning.model_parts import decoder_and_head
from lapo_lightning.shared_prefix import (completion_token_weight, one_row_each, plan_micro_batches,
                                          shared_prefix_logprobs)
from lapo_lightning.types import RolloutBatch


def micro_batch_rows(rollouts: RolloutBatch, rows: Tensor | None, size: int, shared_prefix: bool, policy) -> list[Tensor]:
    """Index tensors of ``size`` rollouts of ``rows`` (default: all), bucketed by length.

    Rows are sorted by completion length before splitting, and each micro-batch is trimmed to
    its own longest row in :func:`rollout_logprobs`, so the training forward spends almost
    nothing on padding. With ``shared_prefix`` either the groups stay together (few distinct
    prompts per micro-batch) or rows are sorted by length across groups (little padding),
    whichever runs fewer tokens (:func:`~lapo_lightning.shared_prefix.plan_micro_batches`). The
    loss is unchanged: the aggregation divides by the optimizer step's totals, whatever the grouping.
    """
    if rows is None:
        rows = torch.arange(len(rollouts), device=rollouts.completion_mask.device)
    lengths, prompt_lengths = rollouts.completion_mask[rows].sum(1), rollouts.prompt_mask[rows].sum(1)  # [n]
    if shared_prefix:  # groups together, or sorted by length when that runs fewer tokens
        return [rows[i] for i in plan_micro_batches(lengths, prompt_lengths, rollouts.group_index[rows], size,
                                                    completion_token_weight(policy))]
    order = rows[torch.sort(prompt_lengths + lengths, stable=True).indices]
    return [order[i : i + size] for i in range(0, len(order), size)]


def rollout_logprobs(policy, rollouts: RolloutBatch, idx: Tensor, temperature: float, chunk_tokens: int,
                     shared_prefix: bool) -> Tensor:
    """[n, T] log-probs of the sampled completion tokens of rows ``idx`` (0 on padding)."""
    prompt_len = int(rollouts.prompt_mask[idx].sum(1).max())  # left padding beyond it is dropped
    width = max(int(rollouts.completion_mask[idx].sum(1).max()), 1)  # right padding beyond it too
    completion_ids, completion_mask = rollouts.completion_ids[idx, :width], rollouts.completion_mask[idx, :width]
    prompt_ids, prompt_mask = rollouts.prompt_ids[idx, -prompt_len:], rollouts.prompt_mask[idx, -prompt_len:]
    if shared_prefix:
        # Rows of one group carry the same prompt: run each distinct one once.
        _, prompt_of_row = torch.unique(rollouts.group_index[idx], return_inverse=True)
        first_row = one_row_each(prompt_of_row)
        logprobs = shared_prefix_logprobs(policy, prompt_ids[first_row], prompt_mask[first_row], prompt_of_row,
                                          completion_ids, completion_mask, temperature, chunk_tokens)
    else:
        input_ids = torch.cat([prompt_ids, completion_ids], dim=1)  # [n, p+t]
        attention_mask = torch.cat([prompt_mask, completion_mask], dim=1).long()
        # Positions as generate() assigned them: left padding must not shift the prompt.
        position_ids = (attention_mask.cumsum(dim=1) - 1).clamp(min=0)
        decoder, head = decoder_and_head(policy)
        hidden = decoder(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                         use_cache=False).last_hidden_state  # [n, p+t, H]
        # Position p-1 predicts completion token 0, ..., p+t-2 predicts token t-1.
        logprobs = head_logprobs(hidden[:, -(width + 1):-1], head, completion_ids, temperature, chunk_tokens)  # [n, t]
    return torch.nn.functional.pad(logprobs, (0, rollouts.completion_ids.shape[1] - width))  # [n, T]
