"""A training forward that runs each group's prompt once: the fast path of ``GRPOModule.completion_logprobs``.

All G completions of a problem share one prompt, and prompts (system text, instruction,
problem, budget sentence) are often several times longer than LAPO's shortened completions.
The plain forward over prompt+completion recomputes every prompt G times, in the policy pass
and again in the reference pass. :func:`shared_prefix_logprobs` instead runs the distinct
prompts of a micro-batch once, with gradients, keeps their keys and values per layer, and
hands them (one copy per completion row) to a second forward over the completion tokens
alone. Backpropagation flows through those copies into the prompt pass, so log-probs, loss
and gradients equal the padded full forward's (tested against it).

Gradient checkpointing: transformers drops any cache inside a checkpointed layer, because a
cache that appends would be appended to twice when backward replays the layer. The caches
here are replay-safe (the prompt pass overwrites, the completion pass never writes), and
:func:`cache_through_checkpointing` tells the layers so for the duration of the call.
Reentrant checkpointing would silently cut the gradient at the prompt's keys, so it is refused.
"""

from __future__ import annotations

import inspect
from contextlib import contextmanager

import torch
from torch import Tensor
from transformers.cache_utils import Cache, DynamicLayer
from transformers.modeling_layers import GradientCheckpointingLayer

from lapo_lightning.algo import DEFAULT_CHUNK_TOKENS, head_logprobs
from lapo_lightning.model_parts import decoder_and_head


class PrefixLayer(DynamicLayer):
    """One layer's keys/values. Without a prefix it records (overwriting, so a replay is
    harmless); with one it returns ``prefix + new`` and stores nothing."""

    def __init__(self, keys: Tensor | None = None, values: Tensor | None = None) -> None:
        super().__init__()
        self.frozen, self.read = keys is not None, False
        if self.frozen:
            self.keys, self.values, self.is_initialized, self.device = keys, values, True, keys.device

    def update(self, key_states: Tensor, value_states: Tensor, *args, **kwargs) -> tuple[Tensor, Tensor]:
        if self.frozen:
            self.read = True
            return torch.cat([self.keys, key_states], dim=-2), torch.cat([self.values, value_states], dim=-2)
        self.keys, self.values, self.is_initialized, self.device = key_states, value_states, True, key_states.device
        return key_states, value_states


@contextmanager
def cache_through_checkpointing(model: torch.nn.Module):
    """Let checkpointed decoder layers keep the (replay-safe) prefix caches while inside."""
    layers = [m for m in model.modules() if isinstance(m, GradientCheckpointingLayer) and m.gradient_checkpointing]
    for layer in layers:
        keywords = getattr(getattr(layer, "_gradient_checkpointing_func", None), "keywords", {})
        if keywords.get("use_reentrant", True):
            raise ValueError(
                f"{type(layer).__name__} uses reentrant gradient checkpointing, which would cut the gradient "
                "through the shared prompt: enable it with gradient_checkpointing_kwargs={'use_reentrant': False} "
                "(lapo's load_policy does), or set model.grpo.shared_prefix: false")
        layer._can_checkpoint_with_cache = True  # instance attribute shadows the class's False
    try:
        yield
    finally:
        for layer in layers:
            del layer._can_checkpoint_with_cache


def num_cache_layers(model: torch.nn.Module) -> int:
    """Decoder layers to give a cache for; refuses models whose layers are not all full attention."""
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    kinds = set(getattr(config, "layer_types", None) or ["full_attention"])
    if kinds != {"full_attention"}:
        raise ValueError(f"the shared-prefix forward handles full-attention layers only, this model also has "
                         f"{sorted(kinds - {'full_attention'})}: set model.grpo.shared_prefix: false")
    return config.num_hidden_layers


def shared_prefix_logprobs(model, prompt_ids: Tensor, prompt_mask: Tensor, prompt_of_row: Tensor,
                           completion_ids: Tensor, completion_mask: Tensor, temperature: float = 1.0,
                           chunk_tokens: int = DEFAULT_CHUNK_TOKENS) -> Tensor:
    """[n, t] float32 log-probs of ``completion_ids`` (entries on padding are not meaningful).

    prompt_ids, prompt_mask [u, P]: the distinct prompts, left-padded; prompt_of_row [n] long:
    which prompt each completion row continues; completion_ids, completion_mask [n, t]
    (right-padded). Equals ``completion_logprobs`` of the forward over
    ``cat(prompt_ids[prompt_of_row], completion_ids)``, with the same position ids. Both
    passes run the decoder only; the hidden states go through the output head in chunks of
    ``chunk_tokens`` positions (:func:`~lapo_lightning.algo.head_logprobs`).
    """
    t = completion_ids.shape[1]
    decoder, head = decoder_and_head(model)
    prompt_mask = prompt_mask.long()
    positions = (prompt_mask.cumsum(dim=1) - 1).clamp(min=0)  # as generate() assigns them
    record = Cache(layers=[PrefixLayer() for _ in range(num_cache_layers(model))])
    key = cache_kwarg(model)
    with cache_through_checkpointing(model):
        last = decoder(input_ids=prompt_ids, attention_mask=prompt_mask, position_ids=positions, **{key: record},
                       use_cache=True).last_hidden_state[:, -1]  # [u, H]: predicts completion token 0
        require_cache_used(model, all(layer.is_initialized for layer in record.layers))
        hidden = last.index_select(0, prompt_of_row)[:, None]  # [n, 1, H]
        if t > 1:  # tokens 0..t-2 predict tokens 1..t-1
            read = Cache(layers=[PrefixLayer(layer.keys.index_select(0, prompt_of_row),
                                             layer.values.index_select(0, prompt_of_row))
                                 for layer in record.layers])
            mask = torch.cat([prompt_mask.index_select(0, prompt_of_row), completion_mask[:, :-1].long()], dim=1)
            start = positions[:, -1].index_select(0, prompt_of_row) + 1  # [n] first completion position
            steps = torch.arange(t - 1, device=completion_ids.device)
            rest = decoder(input_ids=completion_ids[:, :-1], attention_mask=mask, position_ids=start[:, None] + steps,
                           **{key: read}, use_cache=True).last_hidden_state  # [n, t-1, H]
            require_cache_used(model, all(layer.read for layer in read.layers))
            hidden = torch.cat([hidden, rest], dim=1)  # [n, t, H]
        return head_logprobs(hidden, head, completion_ids, temperature, chunk_tokens)  # [n, t]


def plan_micro_batches(lengths: Tensor, prompt_lengths: Tensor, group_index: Tensor, size: int,
                       completion_weight: float = 1.0) -> list[Tensor]:
    """Index tensors of ``size`` rows for the shared-prefix training forward: the cheaper of
    two orders by :func:`micro_batch_cost`.

    - **grouped**: each group's rows together (groups ordered by their longest row), so a
      micro-batch holds one or few prompts, each run once; but every row is padded to its
      group's longest completion. Best when prompts are long and completions short.
    - **by length**: rows sorted by completion length across groups (rows of a group stay
      adjacent among equal lengths), so each micro-batch is trimmed to nearly its own rows;
      but a micro-batch may hold up to ``size`` prompts. Best in real LAPO runs: ~150-token
      prompts and completions spread up to a 4,096 cap, where padding to the group's longest
      row wastes about half of the completion pass.

    lengths, prompt_lengths, group_index [N]. ``completion_weight``: cost of a completion
    token relative to a prompt token (:func:`completion_token_weight`: the completion pass
    also runs the output head). The loss does not depend on the order (its normalisers are
    whole-step totals), only the cost does.
    """
    orders = (grouped_order(lengths, group_index), length_order(lengths, group_index))
    order = min(orders, key=lambda o: micro_batch_cost(o, lengths, prompt_lengths, group_index, size, completion_weight))
    return [order[i: i + size] for i in range(0, len(order), size)]


def grouped_order(lengths: Tensor, group_index: Tensor) -> Tensor:
    """[N] row order: groups ordered by their longest row, each group's rows together, by length."""
    longest = torch.zeros(int(group_index.max()) + 1, dtype=lengths.dtype, device=lengths.device)
    longest = longest.scatter_reduce(0, group_index, lengths, reduce="amax")[group_index]  # [N]
    order = torch.sort(lengths, stable=True).indices  # stable sorts: by length, then group, then longest
    order = order[torch.sort(group_index[order], stable=True).indices]
    return order[torch.sort(longest[order], stable=True).indices]


def length_order(lengths: Tensor, group_index: Tensor) -> Tensor:
    """[N] row order: by completion length across groups (a group's rows adjacent among equals)."""
    order = torch.sort(group_index, stable=True).indices
    return order[torch.sort(lengths[order], stable=True).indices]


def micro_batch_cost(order: Tensor, lengths: Tensor, prompt_lengths: Tensor, group_index: Tensor, size: int,
                     completion_weight: float = 1.0) -> float:
    """Tokens the shared-prefix forward runs for micro-batches ``order[i: i + size]``: per
    micro-batch, its distinct prompts x its longest prompt, plus ``completion_weight`` x its
    rows x its longest completion (the trimmed width, padding included).

    Example: two groups of two rows, prompts of 10, completions [1, 9 | 2, 8], size 2:
    grouped [0, 1], [2, 3] -> 10 + 2 x 9 + 10 + 2 x 8 = 54; by length [0, 2], [3, 1] -> 20 + 4 + 20 + 18 = 62.
    """
    total = 0.0
    for i in range(0, len(order), size):
        idx = order[i: i + size]
        prompts = int(group_index[idx].unique().numel())
        total += prompts * int(prompt_lengths[idx].max()) + completion_weight * len(idx) * int(lengths[idx].max())
    return total


def completion_token_weight(model) -> float:
    """How much a completion token costs relative to a prompt token in the shared-prefix
    forward: (decoder + output head) / decoder, from the config's shapes (weights per token).
    The prompt pass keeps one position's logits; the completion pass keeps them all.
    """
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    h, layers = config.hidden_size, config.num_hidden_layers
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or h // heads
    kv = getattr(config, "num_key_value_heads", None) or heads
    per_layer = 2 * h * heads * head_dim + 2 * h * kv * head_dim + 3 * h * config.intermediate_size
    return 1.0 + config.vocab_size * h / max(layers * per_layer, 1)


def cache_kwarg(model) -> str:
    """The keyword a model's forward takes its KV cache by: ``cache`` (transformers >= 5.24;
    ``past_key_values`` still accepted there, deprecated) or ``past_key_values`` (older, e.g.
    5.17, which would silently drop an unknown ``cache=``). Looks through a PEFT wrapper."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


def one_row_each(row_of: Tensor) -> Tensor:
    """[u] a row index for each distinct prompt, given ``row_of`` [n] (``torch.unique``'s inverse).

    Rows mapped to one prompt are identical there, so any of them will do.
    """
    first = torch.empty(int(row_of.max()) + 1, dtype=torch.long, device=row_of.device)
    return first.scatter_(0, row_of, torch.arange(len(row_of), device=row_of.device))


def require_cache_used(model, used: bool) -> None:
    """Fail loudly where a model skipped the caches: its completions would never see their prompt."""
    if not used:
        raise RuntimeError(f"{type(model).__name__} ignored the prompt's cached keys/values: "
                           "set model.grpo.shared_prefix: false for this model")
