"""The fast paths against the simple ones: compacting decode vs HF generate, and bucketed
micro-batches (with and without the shared-prefix forward, with and without gradient
checkpointing) vs the fully padded training forward.

Run: pytest tests/test_fast_paths.py -q
"""

from __future__ import annotations

import pytest
import torch

from lapo_lightning.algo import grpo_loss, token_logprobs
from lapo_lightning.config import GRPOConfig
from lapo_lightning.fast_rollout import CompactDecode
from lapo_lightning.module import GRPOModule
from lapo_lightning.policy import PolicyConfig, load_policy
from lapo_lightning.rollout import GenerationConfig, HFGenerate
from lapo_lightning.types import ProblemBatch

def problems() -> ProblemBatch:
    return ProblemBatch([f"p{i}" for i in range(len(PROMPTS))], PROMPTS, ["2"] * len(PROMPTS))


PROMPTS = ["What is 1+1?", "Add 12 and 30, then think.", "x", "A longer problem with more words in it."]


def early_stopping_policy(arch: str):
    """A tiny model whose greedy completions end at different steps.

    A random model rarely emits EOS; copy into the EOS row of the output head (scaled up)
    the row of a token that greedy decoding emits a few steps into the first completion:
    EOS then wins wherever that token would, which happens at different steps per prompt.
    """
    model, tokenizer = load_policy(PolicyConfig(model=f"tiny:{arch}"))
    first = HFGenerate().sample(model, tokenizer, PROMPTS, problems(), 1, GenerationConfig(max_new_tokens=8, temperature=0))
    trigger = int(first.completion_ids[0, 3])
    with torch.no_grad():
        head = model.get_output_embeddings().weight
        head[tokenizer.eos_token_id] = head[trigger] * 1.5
    return model, tokenizer


@pytest.fixture(scope="module", params=["llama", "qwen2"])
def policy(request):
    return early_stopping_policy(request.param)


def test_greedy_tokens_identical_to_hf_generate(policy):
    model, tokenizer = policy
    gen = GenerationConfig(max_new_tokens=40, temperature=0)
    simple = HFGenerate().sample(model, tokenizer, PROMPTS, problems(), 2, gen)
    fast = CompactDecode().sample(model, tokenizer, PROMPTS, problems(), 2, gen)
    assert simple.lengths.unique().numel() >= 2, "the test needs rows that stop at different steps"
    assert torch.equal(fast.completion_ids, simple.completion_ids)
    assert torch.equal(fast.completion_mask, simple.completion_mask)
    assert fast.texts == simple.texts and torch.equal(fast.truncated, simple.truncated)


def test_compact_decode_keeps_the_last_eos_when_pad_is_eos(policy):
    """SmolLM2-style tokenizers pad with their EOS: a last column holding only EOS tokens is
    written, not padding (the rows would lose their EOS and be one token short)."""
    import copy

    model, tokenizer = policy
    tokenizer = copy.deepcopy(tokenizer)
    tokenizer.pad_token = tokenizer.eos_token
    gen = GenerationConfig(max_new_tokens=40, temperature=0)
    ending = [p for p, cut in zip(PROMPTS, HFGenerate().sample(model, tokenizer, PROMPTS, problems(), 1, gen).truncated)
              if not cut]  # prompts whose greedy completion ends with EOS: the last column is all EOS
    assert len(ending) >= 2, "the test needs rows that end with EOS"
    batch = ProblemBatch([f"p{i}" for i in range(len(ending))], ending, ["2"] * len(ending))
    simple = HFGenerate().sample(model, tokenizer, ending, batch, 2, gen)
    fast = CompactDecode().sample(model, tokenizer, ending, batch, 2, gen)
    assert torch.equal(fast.completion_ids, simple.completion_ids)
    assert torch.equal(fast.lengths, simple.lengths)
    last = fast.completion_ids.gather(1, (fast.lengths - 1)[:, None])[:, 0]
    assert bool((last == tokenizer.eos_token_id).all())


def test_compact_decode_prefills_each_distinct_prompt_once(policy):
    model, tokenizer = policy
    batch_sizes = []
    hook = model.get_input_embeddings().register_forward_hook(lambda m, args, out: batch_sizes.append(len(out)))
    try:
        rollouts = CompactDecode().sample(model, tokenizer, PROMPTS, problems(), 3, GenerationConfig(max_new_tokens=4))
    finally:
        hook.remove()
    assert len(rollouts) == 3 * len(PROMPTS)
    assert batch_sizes[0] == len(PROMPTS)  # the prefill: one row per prompt, not one per completion


def sample_with_module(policy, gen: GenerationConfig, group_size: int, micro_batch_size: int, seed: int):
    """CompactDecode rollouts and a GRPOModule wired to the same (already loaded) policy."""
    model, tokenizer = policy
    torch.manual_seed(seed)
    rollouts = CompactDecode().sample(model, tokenizer, PROMPTS, problems(), group_size, gen)
    module = GRPOModule(generation=gen, grpo=GRPOConfig(group_size=group_size, micro_batch_size=micro_batch_size))
    module.policy, module.tokenizer = model, tokenizer
    return module, rollouts


def test_sampled_logprobs_equal_the_training_forward(policy):
    module, rollouts = sample_with_module(policy, GenerationConfig(max_new_tokens=30, temperature=0.7), 3, 4, seed=0)
    recomputed = module.logprobs_no_grad(rollouts)
    mask = rollouts.completion_mask
    torch.testing.assert_close(rollouts.old_logprobs[mask], recomputed[mask], rtol=1e-4, atol=1e-4)


def padded_logprobs(module, rollouts):
    """The simple computation: every row at full width, no trimming, no bucketing."""
    input_ids = torch.cat([rollouts.prompt_ids, rollouts.completion_ids], dim=1)
    mask = torch.cat([rollouts.prompt_mask, rollouts.completion_mask], dim=1).long()
    positions = (mask.cumsum(1) - 1).clamp(min=0)
    logits = module.policy(input_ids=input_ids, attention_mask=mask, position_ids=positions).logits
    width = rollouts.completion_ids.shape[1]
    return token_logprobs(logits[:, -width - 1 : -1], rollouts.completion_ids)


@pytest.mark.parametrize("aggregation", ["token_mean", "sequence_mean", "constant"])
@pytest.mark.parametrize("shared_prefix", [True, False], ids=["shared_prefix", "padded_prompts"])
def test_bucketed_micro_batches_give_the_padded_loss_and_gradients(policy, aggregation, shared_prefix):
    assert_micro_batches_match_padded(policy, aggregation, shared_prefix)


@pytest.mark.parametrize("order", ["grouped", "by_length"])
def test_either_micro_batch_order_gives_the_padded_loss_and_gradients(policy, order, monkeypatch):
    """Both orders the planner chooses from: by length, a micro-batch holds several prompts."""
    import lapo_lightning.rollout_logprobs as module_file
    from lapo_lightning import shared_prefix

    def forced(lengths, prompt_lengths, group_index, size, completion_weight=1.0):
        rows = {"grouped": shared_prefix.grouped_order, "by_length": shared_prefix.length_order}[order]
        rows = rows(lengths, group_index)
        return [rows[i: i + size] for i in range(0, len(rows), size)]

    monkeypatch.setattr(module_file, "plan_micro_batches", forced)
    assert_micro_batches_match_padded(policy, "token_mean", True, several_prompts=order == "by_length")


def test_micro_batch_plan_sorts_by_length_only_when_that_runs_fewer_tokens():
    from lapo_lightning.shared_prefix import micro_batch_cost, plan_micro_batches

    lengths, group = torch.tensor([1, 9, 2, 8]), torch.tensor([0, 0, 1, 1])
    long_prompts, short_prompts = torch.full((4,), 10), torch.full((4,), 1)
    # The docstring's example: grouped [2, 3], [0, 1] runs 54 tokens, by length [0, 2], [3, 1] 62.
    assert micro_batch_cost(torch.tensor([2, 3, 0, 1]), lengths, long_prompts, group, 2) == 54
    assert micro_batch_cost(torch.tensor([0, 2, 3, 1]), lengths, long_prompts, group, 2) == 62
    assert [b.tolist() for b in plan_micro_batches(lengths, long_prompts, group, 2)] == [[2, 3], [0, 1]]
    # Short prompts (the real-run shape): padding costs more than a second prompt pass.
    assert [b.tolist() for b in plan_micro_batches(lengths, short_prompts, group, 2)] == [[0, 2], [3, 1]]
    # A completion token costing 2 prompt tokens (a big output head) tips the long-prompt case too.
    assert [b.tolist() for b in plan_micro_batches(lengths, long_prompts, group, 2, 2.0)] == [[0, 2], [3, 1]]


def test_completion_token_weight_counts_the_output_head():
    from types import SimpleNamespace

    from transformers import LlamaConfig

    from lapo_lightning.shared_prefix import completion_token_weight

    config = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=1000)
    per_layer = 2 * 64 * 64 + 2 * 64 * 32 + 3 * 64 * 128  # q, o; k, v (2 of 4 heads); the MLP
    assert completion_token_weight(SimpleNamespace(config=config)) == pytest.approx(1 + 1000 * 64 / (2 * per_layer))


def test_cache_keyword_follows_the_model_signature():
    """transformers 5.17 takes ``past_key_values`` and ignores an unknown ``cache=``: the fast
    paths must pass the name the model's forward declares (through a PEFT wrapper too)."""
    from lapo_lightning.shared_prefix import cache_kwarg

    import inspect

    model, tokenizer = load_policy(PolicyConfig(model="tiny:llama"))
    declared = inspect.signature(model.get_base_model().forward).parameters
    assert cache_kwarg(model) == ("cache" if "cache" in declared else "past_key_values")  # through PEFT
    inner_key = cache_kwarg(model)

    class OldSignature(torch.nn.Module):  # a 5.17-style forward around the same model
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None,
                    use_cache=None, logits_to_keep=0):
            return self.inner(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                              **{inner_key: past_key_values}, use_cache=use_cache, logits_to_keep=logits_to_keep)

    old = OldSignature(model)
    assert cache_kwarg(old) == "past_key_values"
    gen = GenerationConfig(max_new_tokens=12, temperature=0)
    want = CompactDecode().sample(model, tokenizer, PROMPTS, problems(), 1, gen)
    got = CompactDecode().sample(old, tokenizer, PROMPTS, problems(), 1, gen)
    assert torch.equal(got.completion_ids, want.completion_ids)


def test_shared_prefix_under_gradient_checkpointing_gives_the_padded_gradients():
    """Checkpointed layers replay in backward: the prefix caches must survive that unchanged."""
    model, tokenizer = load_policy(PolicyConfig(model="tiny:llama", gradient_checkpointing=True))
    model.train()
    assert any(getattr(m, "gradient_checkpointing", False) for m in model.modules())
    assert_micro_batches_match_padded((model, tokenizer), "token_mean", shared_prefix=True)


def test_shared_prefix_refuses_reentrant_checkpointing():
    model, tokenizer = load_policy(PolicyConfig(model="tiny:llama"))
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.24
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": True})
    else:  # 5.17
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": True})
    model.train()
    module, rollouts = sample_with_module((model, tokenizer), GenerationConfig(max_new_tokens=5), 2, 4, seed=0)
    with pytest.raises(ValueError, match="reentrant"):
        module.completion_logprobs(rollouts, module.micro_batches(rollouts)[0])


def test_shared_prefix_fails_loudly_when_the_cache_is_dropped(monkeypatch):
    """Without the checkpointing opt-in, transformers drops the prefix cache: never silently."""
    from contextlib import nullcontext

    import lapo_lightning.shared_prefix as shared_prefix

    model, tokenizer = load_policy(PolicyConfig(model="tiny:llama", gradient_checkpointing=True))
    model.train()
    module, rollouts = sample_with_module((model, tokenizer), GenerationConfig(max_new_tokens=5), 2, 4, seed=0)
    monkeypatch.setattr(shared_prefix, "cache_through_checkpointing", lambda model: nullcontext())
    with pytest.raises(RuntimeError, match="ignored the prompt"):
        module.completion_logprobs(rollouts, module.micro_batches(rollouts)[0])


def assert_micro_batches_match_padded(policy, aggregation: str, shared_prefix: bool,
                                      several_prompts: bool = False) -> None:
    gen = GenerationConfig(max_new_tokens=30, temperature=1.0)
    module, rollouts = sample_with_module(policy, gen, 2, 3, seed=1)
    module.grpo.shared_prefix = shared_prefix
    model = module.policy
    advantages = torch.linspace(-1, 1, len(rollouts))
    mask = rollouts.completion_mask
    totals = dict(total_tokens=int(mask.sum()), total_sequences=len(rollouts), max_tokens=gen.max_new_tokens)
    params = [p for p in model.parameters() if p.requires_grad]
    with torch.no_grad():  # make LoRA B non-zero so every path carries gradient
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)

    def loss_of(logprobs, idx):
        return grpo_loss(logprobs, None, None, advantages[idx], mask[idx], clip_low=0.2, clip_high=0.2,
                         kl_coef=0.0, aggregation=aggregation, **totals).loss

    model.zero_grad()
    full = loss_of(padded_logprobs(module, rollouts), torch.arange(len(rollouts)))
    full.backward()
    expected = [p.grad.clone() for p in params]

    model.zero_grad()
    total = 0.0
    buckets = module.micro_batches(rollouts)
    assert len(buckets) > 1
    assert any(rollouts.group_index[idx].unique().numel() < len(idx) for idx in buckets), "no prompt is shared"
    if several_prompts:
        assert any(rollouts.group_index[idx].unique().numel() > 1 for idx in buckets), "one prompt per micro-batch"
    for idx in buckets:
        loss = loss_of(module.completion_logprobs(rollouts, idx), idx)
        loss.backward()
        total += float(loss.detach())
    torch.testing.assert_close(torch.tensor(total), full.detach(), rtol=1e-4, atol=1e-6)
    for got, want in zip((p.grad for p in params), expected):
        torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-6)


def test_shared_prefix_refuses_sliding_window_layers():
    """Sliding-window layers mask the prompt differently: the plain forward must be chosen."""
    from types import SimpleNamespace

    from transformers import Qwen2Config

    from lapo_lightning.shared_prefix import num_cache_layers

    config = Qwen2Config(num_hidden_layers=3, use_sliding_window=True, max_window_layers=1)
    with pytest.raises(ValueError, match="shared_prefix: false"):
        num_cache_layers(SimpleNamespace(config=config))
    assert num_cache_layers(SimpleNamespace(config=Qwen2Config(num_hidden_layers=3))) == 3
