"""Rollout generation: B problems -> N = B*G sampled completions as a ``RolloutBatch``.

Flow: ``GRPOModule.training_step`` renders each problem with the prompt template, then
calls ``sampler.sample(...)``. Everything about how tokens are produced lives behind the
:class:`Sampler` interface, so a faster engine (vLLM, continuous batching) slots in as
another subclass without branches elsewhere. :class:`HFGenerate` is the simple reference
path: one batched ``model.generate`` with the KV cache over all N sequences (chunked when
``max_rollouts_per_call`` is set).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor

from lapo_lightning.stop_tokens import is_stop, stop_token_ids
from lapo_lightning.types import ProblemBatch, RolloutBatch


@dataclass
class GenerationConfig:
    """Sampling settings for rollouts."""

    max_new_tokens: int = 64
    """Generation cap; a completion that reaches it is *truncated*."""
    temperature: float = 1.0
    """0 means greedy decoding."""
    top_p: float = 1.0
    top_k: int = 0
    """0 disables top-k filtering."""
    stop_strings: list[str] = field(default_factory=list)
    """Extra strings that end a completion (EOS always does)."""
    max_rollouts_per_call: int | Literal["auto"] | None = None
    """Split the N sequences into generate() calls of at most this many (memory); ``auto``: the most
    that fit the device by the start-up memory estimate; null: all N in one call."""

    def __post_init__(self) -> None:
        problems = []
        if self.max_new_tokens <= 0:
            problems.append(f"model.generation.max_new_tokens: must be > 0 (got {self.max_new_tokens})")
        if self.temperature < 0:
            problems.append(f"model.generation.temperature: must be >= 0 (got {self.temperature})")
        if not 0 < self.top_p <= 1:
            problems.append(f"model.generation.top_p: must be in (0, 1] (got {self.top_p})")
        if self.max_rollouts_per_call not in (None, "auto") and self.max_rollouts_per_call < 1:
            problems.append(f"model.generation.max_rollouts_per_call: must be >= 1 (got {self.max_rollouts_per_call})")
        if problems:
            raise ValueError("invalid generation config:\n  " + "\n  ".join(problems))


class Sampler:
    """Turns rendered prompts into a ``RolloutBatch`` of ``group_size`` completions each."""

    def sample(
        self, model, tokenizer, prompts: list[str], problems: ProblemBatch, group_size: int, gen: GenerationConfig
    ) -> RolloutBatch:
        raise NotImplementedError


class HFGenerate(Sampler):
    """Batched Hugging Face ``generate`` with the KV cache (the simple reference path)."""

    @torch.no_grad()
    def sample(self, model, tokenizer, prompts, problems, group_size, gen) -> RolloutBatch:
        device = next(model.parameters()).device
        prompt_ids, prompt_mask, group_index = encode_prompts(tokenizer, prompts, group_size, device)

        pieces = in_chunks(model, prompt_ids, prompt_mask, gen,
                           lambda ids, mask: self._generate(model, tokenizer, ids, mask, gen))
        width = max(p.shape[1] for p in pieces)
        completion_ids = torch.cat(
            [torch.nn.functional.pad(p, (0, width - p.shape[1]), value=tokenizer.pad_token_id) for p in pieces]
        )  # [N, T]
        return assemble_rollouts(tokenizer, problems, group_index, prompt_ids, prompt_mask, completion_ids, gen)

    @staticmethod
    def _generate(model, tokenizer, prompt_ids: Tensor, prompt_mask: Tensor, gen: GenerationConfig) -> Tensor:
        sampling = gen.temperature > 0
        kwargs = dict(temperature=gen.temperature, top_p=gen.top_p, top_k=gen.top_k) if sampling else {}
        if gen.stop_strings:
            kwargs.update(stop_strings=gen.stop_strings, tokenizer=tokenizer)
        out = model.generate(
            input_ids=prompt_ids,
            attention_mask=prompt_mask,
            max_new_tokens=gen.max_new_tokens,
            do_sample=sampling,
            eos_token_id=list(stop_token_ids(tokenizer)),
            pad_token_id=tokenizer.pad_token_id,
            use_cache=True,
            **kwargs,
        )
        return out[:, prompt_ids.shape[1] :]  # [n, T_chunk]


def in_chunks(model, prompt_ids: Tensor, prompt_mask: Tensor, gen: GenerationConfig, decode_chunk) -> list:
    """``decode_chunk(ids, mask)`` over chunks of at most ``gen.max_rollouts_per_call`` rows,
    with the model in eval mode (no dropout while sampling) and its mode restored after."""
    chunk = gen.max_rollouts_per_call or len(prompt_ids)
    was_training = model.training
    model.eval()
    try:
        return [decode_chunk(prompt_ids[i : i + chunk], prompt_mask[i : i + chunk])
                for i in range(0, len(prompt_ids), chunk)]
    finally:
        model.train(was_training)


def encode_prompts(tokenizer, prompts: list[str], group_size: int, device) -> tuple[Tensor, Tensor, Tensor]:
    """Left-padded prompt ids and mask, each prompt repeated G times, and the group index."""
    enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    prompt_ids = enc["input_ids"].repeat_interleave(group_size, dim=0).to(device)  # [N, P]
    prompt_mask = enc["attention_mask"].repeat_interleave(group_size, dim=0).to(device)  # [N, P]
    group_index = torch.arange(len(prompts), device=device).repeat_interleave(group_size)  # [N]
    return prompt_ids, prompt_mask, group_index


def assemble_rollouts(tokenizer, problems: ProblemBatch, group_index: Tensor, prompt_ids: Tensor,
                      prompt_mask: Tensor, completion_ids: Tensor, gen: GenerationConfig,
                      old_logprobs: Tensor | None = None) -> RolloutBatch:
    """Masks, decoded texts and truncation flags for sampled completion ids ([N, T])."""
    stops = stop_token_ids(tokenizer)
    completion_mask = completion_mask_from_ids(completion_ids, stops, tokenizer.pad_token_id)
    texts = [
        tokenizer.decode(ids[mask], skip_special_tokens=True)
        for ids, mask in zip(completion_ids.cpu(), completion_mask.cpu())
    ]
    ended_by_stop = torch.tensor([any(t.rstrip().endswith(s) for s in gen.stop_strings) for t in texts],
                                 dtype=torch.bool)
    has_eos = is_stop(completion_ids, stops).any(dim=1).cpu()
    truncated = (completion_mask.sum(1).cpu() >= gen.max_new_tokens) & ~has_eos & ~ended_by_stop
    return RolloutBatch(
        problems=problems,
        group_index=group_index,
        prompt_ids=prompt_ids,
        prompt_mask=prompt_mask.bool(),
        completion_ids=completion_ids,
        completion_mask=completion_mask,
        texts=texts,
        truncated=truncated,
        old_logprobs=old_logprobs,
    )


def completion_mask_from_ids(completion_ids: Tensor, eos_ids: int | tuple[int, ...], pad_id: int) -> Tensor:
    """[N, T] bool: True up to and including the first stop token (EOS or end of turn, see
    ``stop_tokens``); padding after it is False.

    ``generate`` fills finished rows with the pad token, so a row also ends at its first
    pad token when pad and EOS differ (that is how a stop-string row ends).
    """
    is_eos = is_stop(completion_ids, (eos_ids,) if isinstance(eos_ids, int) else eos_ids)
    ends = is_eos | (completion_ids == pad_id)
    # A position is inside the completion if no terminator came strictly before it...
    before = torch.cumsum(ends.long(), dim=1) - ends.long()
    inside = before == 0
    # ...and it is not itself a pad token (an EOS terminator is kept: it was generated).
    return inside & (~ends | is_eos)
