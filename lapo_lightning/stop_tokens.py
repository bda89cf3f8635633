"""Which token ids end a completion: EOS, the chat template's end of turn, the model's own list.

Used by every sampler (``rollout.HFGenerate``, ``fast_rollout.FastSampler``) and by the
completion masks they build. A chat model ends its turn with the template's end-of-turn
token, which is not always the tokenizer's EOS: Qwen2.5 base tokenizers say EOS is
``<|endoftext|>`` while their template closes turns with ``<|im_end|>``, and Llama 3 lists
``<|eot_id|>`` only in ``generation_config.json``. Stopping at EOS alone lets such a model
write past its answer into a new turn until the cap, so every rollout looks truncated.
"""

from __future__ import annotations

import functools
import json
import logging
import os

import torch
from torch import Tensor

log = logging.getLogger(__name__)

_MARK = "LAPO_END_OF_TURN_PROBE"


@functools.lru_cache(maxsize=8)
def stop_token_ids(tokenizer) -> tuple[int, ...]:
    """EOS first, then every other id that ends a turn (sorted, no duplicates)."""
    ids = {tokenizer.eos_token_id} | set(template_end_of_turn(tokenizer)) | set(generation_config_eos(tokenizer))
    ids.discard(None)
    return (tokenizer.eos_token_id, *sorted(ids - {tokenizer.eos_token_id}))


def template_end_of_turn(tokenizer) -> list[int]:
    """The special token the chat template writes right after an assistant message, if any."""
    if not getattr(tokenizer, "chat_template", None):
        return []
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": _MARK}]
    try:
        text = tokenizer.apply_chat_template(messages, tokenize=False)
    except Exception as err:  # a template that refuses this shape has nothing to tell us
        log.debug("chat template could not render a probe conversation: %s", err)
        return []
    after = text.split(_MARK, 1)[1] if _MARK in text else ""
    ids = tokenizer(after, add_special_tokens=False)["input_ids"]
    special = set(tokenizer.all_special_ids) | {int(i) for i in getattr(tokenizer, "added_tokens_decoder", {})}
    return ids[:1] if ids and ids[0] in special else []


def generation_config_eos(tokenizer) -> list[int]:
    """``eos_token_id`` of the model's ``generation_config.json`` (an int or a list), read from
    the tokenizer's folder or, for a hub id, from the local hub cache (never downloaded)."""
    name = getattr(tokenizer, "name_or_path", "") or ""
    path = os.path.join(name, "generation_config.json")
    if not os.path.isfile(path):
        path = cached_hub_file(name, "generation_config.json")
    if path is None:
        return []
    with open(path, encoding="utf-8") as f:
        eos = json.load(f).get("eos_token_id")
    return [eos] if isinstance(eos, int) else [int(i) for i in eos or []]


def cached_hub_file(repo_id: str, filename: str) -> str | None:
    """A file of a hub repo if it is already in the local cache, else None."""
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(repo_id, filename)
    except Exception:  # not a repo id (e.g. a folder that does not exist)
        return None
    return found if isinstance(found, str) else None


def is_stop(ids: Tensor, stops: tuple[int, ...]) -> Tensor:
    """Elementwise: ``ids`` is one of the stop ids."""
    return torch.isin(ids, torch.tensor(stops, device=ids.device))
