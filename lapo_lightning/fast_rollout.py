"""A decode loop that spends no compute on finished rows: the fast path behind ``Sampler``.

``model.generate`` keeps every row of the batch in every decode step until the longest
completion ends; with LAPO's widely varying lengths most of that work is on rows that
already emitted EOS. :class:`CompactDecode` runs the same KV-cached decoding by hand and,
whenever rows finish, drops them from the batch and from the cache
(``DynamicCache.batch_select_indices``), so step cost follows the rows still writing. The
prompt is prefilled once per group, not once per completion. It also returns the sampled
tokens' log-probs (``RolloutBatch.old_logprobs``), so inner epochs (``num_iterations > 1``)
need no extra forward pass. Greedy decoding gives the same tokens as
:class:`~lapo_lightning.rollout.HFGenerate` (tested).
"""

from __future__ import annotations

import torch
from torch import Tensor

from lapo_lightning.rollout import GenerationConfig, Sampler, assemble_rollouts, encode_prompts, in_chunks
from lapo_lightning.shared_prefix import cache_kwarg, one_row_each
from lapo_lightning.stop_tokens import stop_token_ids
from lapo_lightning.types import RolloutBatch


class CompactDecode(Sampler):
    """KV-cached decoding that removes finished rows from the batch as it goes."""

    @torch.no_grad()
    def sample(self, model, tokenizer, prompts, problems, group_size, gen: GenerationConfig) -> RolloutBatch:
        device = next(model.parameters()).device
        prompt_ids, prompt_mask, group_index = encode_prompts(tokenizer, prompts, group_size, device)
        pieces = in_chunks(model, prompt_ids, prompt_mask, gen, lambda ids, mask: decode(model, tokenizer, ids, mask, gen))
        # Each chunk stops at its longest row: columns past every chunk's last step are dropped.
        # (Not "columns holding only pad": with pad == EOS, as in SmolLM2, a last column of
        # EOS tokens would look unwritten and the rows would lose their EOS.)
        width = max(ids.shape[1] for ids, _ in pieces)
        completion_ids = torch.cat([pad_columns(ids, width, tokenizer.pad_token_id) for ids, _ in pieces])  # [N, width]
        logprobs = torch.cat([pad_columns(lp, width, 0.0) for _, lp in pieces])  # [N, width]
        rollouts = assemble_rollouts(tokenizer, problems, group_index, prompt_ids, prompt_mask, completion_ids, gen)
        rollouts.old_logprobs = logprobs * rollouts.completion_mask  # 0 where masked
        return rollouts


def pad_columns(x: Tensor, width: int, value) -> Tensor:
    """``x`` [n, w] right-padded with ``value`` to [n, width]."""
    return torch.nn.functional.pad(x, (0, width - x.shape[1]), value=value)


def decode(model, tokenizer, prompt_ids: Tensor, prompt_mask: Tensor, gen: GenerationConfig) -> tuple[Tensor, Tensor]:
    """Sample up to ``max_new_tokens`` per row; returns ids and log-probs, both [n, w]: w is
    the number of steps run (the longest row's length), pad (and log-prob 0) after a row ends."""
    from transformers import DynamicCache

    n, steps = len(prompt_ids), gen.max_new_tokens
    stops = torch.tensor(stop_token_ids(tokenizer), device=prompt_ids.device)  # once, not per step
    completion_ids = torch.full((n, steps), tokenizer.pad_token_id, dtype=torch.long, device=prompt_ids.device)
    logprobs = torch.zeros(n, steps, device=prompt_ids.device)
    active = torch.arange(n, device=prompt_ids.device)  # rows still writing, as indices into n
    mask = prompt_mask.long()
    positions = (mask.cumsum(dim=1) - 1).clamp(min=0)  # as generate() assigns them
    cache = DynamicCache()
    # The G rows of a group repeat one prompt: prefill each distinct prompt once, then give
    # every row its own copy of that prompt's cache (later steps write per row).
    _, row_of = torch.unique(torch.cat([prompt_ids, mask], dim=1), dim=0, return_inverse=True)
    first = one_row_each(row_of)
    key = cache_kwarg(model)  # "cache" or, before transformers 5.24, "past_key_values"
    logits = model(input_ids=prompt_ids[first], attention_mask=mask[first], position_ids=positions[first],
                   **{key: cache}, use_cache=True, logits_to_keep=1).logits[:, -1][row_of]
    cache.batch_select_indices(row_of)
    next_position = positions[:, -1] + 1  # [n_active]
    for t in range(steps):
        tokens, token_logprobs = pick_tokens(logits, gen)  # [n_active] each
        completion_ids[active, t] = tokens
        logprobs[active, t] = token_logprobs
        done = torch.isin(tokens, stops)
        if gen.stop_strings:
            done |= ends_with_stop(tokenizer, completion_ids[active, : t + 1], gen.stop_strings)
        if t == steps - 1 or done.all():
            return completion_ids[:, : t + 1], logprobs[:, : t + 1]
        if done.any():  # compact: finished rows leave the batch and the cache
            keep = (~done).nonzero().squeeze(1)
            cache.batch_select_indices(keep)
            active, mask, next_position, tokens = active[keep], mask[keep], next_position[keep], tokens[keep]
        mask = torch.cat([mask, mask.new_ones(len(active), 1)], dim=1)
        logits = model(input_ids=tokens[:, None], attention_mask=mask, position_ids=next_position[:, None],
                       **{key: cache}, use_cache=True).logits[:, -1]
        next_position = next_position + 1
    return completion_ids, logprobs


def pick_tokens(logits: Tensor, gen: GenerationConfig) -> tuple[Tensor, Tensor]:
    """Next token per row ([n]) and its log-prob under the temperature-scaled distribution.

    The log-prob is taken over the full vocabulary (before top-k/top-p truncation), which
    is what the training forward recomputes, so importance ratios start at exactly 1.
    """
    logits = logits.float()
    if gen.temperature == 0:
        tokens = logits.argmax(dim=-1)
        return tokens, torch.log_softmax(logits, dim=-1).gather(1, tokens[:, None])[:, 0]
    scaled = logits / gen.temperature
    filtered = scaled.clone()
    if gen.top_k > 0:
        kth = torch.topk(filtered, min(gen.top_k, filtered.shape[-1]), dim=-1).values[:, -1:]
        filtered[filtered < kth] = float("-inf")
    if gen.top_p < 1.0:
        sorted_logits, order = filtered.sort(dim=-1, descending=True)
        cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        drop = cumulative - sorted_logits.softmax(dim=-1) > gen.top_p  # keep the token that crosses top_p
        filtered.scatter_(1, order, sorted_logits.masked_fill(drop, float("-inf")))
    tokens = torch.multinomial(filtered.softmax(dim=-1), 1)[:, 0]
    return tokens, torch.log_softmax(scaled, dim=-1).gather(1, tokens[:, None])[:, 0]


def ends_with_stop(tokenizer, ids: Tensor, stop_strings: list[str]) -> Tensor:
    """[n] bool: the decoded tail of each row ends with one of the stop strings."""
    tail = max(len(s) for s in stop_strings) + 8  # tokens: enough to cover any stop string
    texts = tokenizer.batch_decode(ids[:, -tail:], skip_special_tokens=True)
    return torch.tensor([any(t.endswith(s) for s in stop_strings) for t in texts], device=ids.device)
