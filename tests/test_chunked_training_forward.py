"""The training forwards with chunked head log-probs against today's full-logits computation
(``model(...).logits`` then ``token_logprobs``): log-probs, the GRPO loss and every LoRA
gradient to 1e-5, on tiny Llama and Qwen2 models with tied and untied heads, temperature 0.7,
left-padded prompts of different lengths, ragged completions, and a LoRA on the head.

Run: pytest tests/test_chunked_training_forward.py -q
"""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

from lapo_lightning.algo import grpo_loss, token_logprobs
from lapo_lightning.config import GRPOConfig
from lapo_lightning.module import GRPOModule
from lapo_lightning.policy import LoraSettings, PolicyConfig, load_policy
from lapo_lightning.rollout import GenerationConfig
from lapo_lightning.models.tiny import save_tiny
from lapo_lightning.types import RolloutBatch

TEMPERATURE = 0.7
CASES = {  # name -> (arch, tied head, LoRA target modules)
    "llama-untied": ("llama", False, "all-linear"),
    "qwen2-tied": ("qwen2", True, "all-linear"),
    "llama-tied": ("llama", True, ["q_proj", "v_proj", "down_proj"]),
    "qwen2-lora-on-head": ("qwen2", False, ["q_proj", "o_proj", "lm_head"]),
}


@pytest.fixture(scope="module", params=list(CASES))
def policy(request, tmp_path_factory):
    arch, tied, targets = CASES[request.param]
    folder = save_tiny(tmp_path_factory.mktemp(request.param), arch, tied=tied, seed=3)
    model, tokenizer = load_policy(PolicyConfig(model=str(folder), lora=LoraSettings(r=4, target_modules=targets)))
    with torch.no_grad():  # LoRA B starts at 0: make every adapter carry gradient to its A
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    head = model.get_base_model().get_output_embeddings()
    assert (head.weight is model.get_base_model().get_input_embeddings().weight) == tied
    assert any("lm_head" in n for n, p in model.named_parameters() if p.requires_grad) == ("lm_head" in targets)
    return model, tokenizer


def rollouts(tokenizer, vocab: int) -> RolloutBatch:
    """2 problems x G 3: left-padded prompts of 5 and 9 tokens, completions of 1..11 tokens."""
    torch.manual_seed(0)
    prompt_lengths, lengths, width = [5, 9], [11, 4, 1, 7, 9, 2], 12
    prompt_ids = torch.full((6, 9), tokenizer.pad_token_id)
    prompt_mask = torch.zeros(6, 9, dtype=torch.bool)
    completion_ids = torch.full((6, width), tokenizer.pad_token_id)
    completion_mask = torch.zeros(6, width, dtype=torch.bool)
    prompts = [torch.randint(0, vocab, (n,)) for n in prompt_lengths]
    for row, length in enumerate(lengths):
        p = prompts[row // 3]
        prompt_ids[row, -len(p):], prompt_mask[row, -len(p):] = p, True
        completion_ids[row, :length], completion_mask[row, :length] = torch.randint(0, vocab, (length,)), True
    return RolloutBatch(problems=None, prompt_ids=prompt_ids, prompt_mask=prompt_mask, completion_ids=completion_ids,
                        completion_mask=completion_mask, group_index=torch.arange(6) // 3,
                        truncated=torch.zeros(6, dtype=torch.bool), texts=[""] * 6)


def full_logits_logprobs(model, batch: RolloutBatch) -> torch.Tensor:
    """Today's path: the model's full [N, P+T, V] logits, then token_logprobs."""
    input_ids = torch.cat([batch.prompt_ids, batch.completion_ids], dim=1)
    mask = torch.cat([batch.prompt_mask, batch.completion_mask], dim=1).long()
    logits = model(input_ids=input_ids, attention_mask=mask, position_ids=(mask.cumsum(1) - 1).clamp(min=0)).logits
    width = batch.completion_ids.shape[1]
    return token_logprobs(logits[:, -width - 1:-1], batch.completion_ids, TEMPERATURE)


def loss_and_grads(model, logprob_fn, batch):
    params = [p for p in model.parameters() if p.requires_grad]
    model.zero_grad()
    mask = batch.completion_mask
    logprobs = logprob_fn()
    loss = grpo_loss(logprobs, None, None, torch.linspace(-1, 1, len(mask)), mask, clip_low=0.2, clip_high=0.2,
                     kl_coef=0.0, aggregation="token_mean", total_tokens=int(mask.sum()), total_sequences=len(mask),
                     max_tokens=mask.shape[1]).loss
    loss.backward()
    return logprobs.detach() * mask, loss.detach(), [p.grad.clone() for p in params]


@pytest.mark.parametrize("shared_prefix", [True, False], ids=["shared_prefix", "padded"])
def test_chunked_forward_equals_full_logits(policy, shared_prefix):
    model, tokenizer = policy
    batch = rollouts(tokenizer, len(tokenizer))
    module = GRPOModule(generation=GenerationConfig(temperature=TEMPERATURE),
                        grpo=GRPOConfig(group_size=3, micro_batch_size=6, shared_prefix=shared_prefix,
                                        logprob_chunk_tokens=5))
    module.policy, module.tokenizer = model, tokenizer
    want = loss_and_grads(model, lambda: full_logits_logprobs(model, batch), batch)
    got = loss_and_grads(model, lambda: module.completion_logprobs(batch, torch.arange(6)), batch)
    assert_close(got[0], want[0], rtol=1e-5, atol=1e-5)
    assert_close(got[1], want[1], rtol=1e-5, atol=1e-5)
    assert len(got[2]) == len(want[2]) > 0
    for g, w in zip(got[2], want[2]):
        assert_close(g, w, rtol=1e-5, atol=1e-5)
    with torch.no_grad():  # the reference / old-policy passes
        assert_close(module.logprobs_no_grad(batch) * batch.completion_mask, want[0], rtol=1e-5, atol=1e-5)
