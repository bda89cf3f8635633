"""Rollout sampling: masks, lengths, groups, truncation, and log-probs that match generate().

Run: pytest tests/test_rollout.py -q
"""

from __future__ import annotations

import pytest
import torch

from lapo_lightning.module import GRPOModule
from lapo_lightning.policy import PolicyConfig, load_policy
from lapo_lightning.rollout import GenerationConfig, HFGenerate, completion_mask_from_ids
from lapo_lightning.types import ProblemBatch

EOS, PAD = 9, 8


def test_completion_mask_stops_after_first_eos_and_skips_pad():
    ids = torch.tensor([
        [1, 2, EOS, PAD, PAD],   # ended by EOS: EOS counts
        [1, 2, 3, 4, 5],         # truncated
        [1, PAD, PAD, PAD, PAD],  # ended by a stop string (padding after it)
        [EOS, PAD, PAD, PAD, PAD],  # empty answer: just EOS
    ])
    mask = completion_mask_from_ids(ids, EOS, PAD)
    assert mask.sum(1).tolist() == [3, 5, 1, 1]
    assert mask[0].tolist() == [True, True, True, False, False]


def test_completion_mask_when_pad_is_eos():
    ids = torch.tensor([[1, EOS, EOS, EOS], [1, 2, 3, 4]])
    assert completion_mask_from_ids(ids, EOS, EOS).sum(1).tolist() == [2, 4]


@pytest.fixture(scope="module")
def policy():
    return load_policy(PolicyConfig(model="tiny:llama"))


def test_hf_generate_shapes_groups_and_truncation(policy):
    model, tokenizer = policy
    problems = ProblemBatch(["a", "b"], ["1+1", "a much longer problem text"], ["2", "3"])
    gen = GenerationConfig(max_new_tokens=6, temperature=1.0, max_rollouts_per_call=3)
    torch.manual_seed(0)
    batch = HFGenerate().sample(model, tokenizer, ["p: 1+1", "p: a much longer problem text"], problems, 3, gen)
    assert len(batch) == 6 and batch.group_size == 3
    assert batch.group_index.tolist() == [0, 0, 0, 1, 1, 1]
    assert batch.prompt_ids.shape[0] == 6 and batch.completion_ids.shape[0] == 6
    assert batch.completion_ids.shape[1] <= 6
    # left padding: the short prompt's rows start with pads, the long prompt's do not
    assert not batch.prompt_mask[0, 0] and batch.prompt_mask[3].all()
    lengths = batch.lengths
    assert ((lengths >= 1) & (lengths <= 6)).all()
    # truncated <=> reached the cap without EOS
    has_eos = (batch.completion_ids == tokenizer.eos_token_id).any(1)
    assert torch.equal(batch.truncated, (lengths == 6) & ~has_eos)
    assert [tokenizer.decode(r[m], skip_special_tokens=True) for r, m in
            zip(batch.completion_ids, batch.completion_mask)] == batch.texts


def test_training_logprobs_match_generate_scores(policy):
    """Log-probs recomputed by the training forward equal those seen while sampling
    (greedy), including for left-padded prompts: positions must not shift."""
    model, tokenizer = policy
    module = GRPOModule(policy=PolicyConfig(model="tiny:llama"), generation=GenerationConfig(max_new_tokens=5, temperature=0))
    module.policy, module.tokenizer = model, tokenizer
    prompts = ["x", "a longer prompt"]
    problems = ProblemBatch(["a", "b"], prompts, ["1", "2"])
    batch = HFGenerate().sample(model, tokenizer, prompts, problems, 1, module.generation)
    with torch.no_grad():
        out = model.generate(input_ids=batch.prompt_ids, attention_mask=batch.prompt_mask.long(), max_new_tokens=5,
                             do_sample=False, output_logits=True, return_dict_in_generate=True,
                             pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    logits = torch.stack(out.logits, dim=1)  # [N, T, V]
    expected = torch.log_softmax(logits.float(), -1).gather(-1, batch.completion_ids[:, :logits.shape[1], None])[..., 0]
    got = module.logprobs_no_grad(batch)
    mask = batch.completion_mask[:, :logits.shape[1]]
    torch.testing.assert_close(got[:, :logits.shape[1]][mask], expected[mask], rtol=1e-4, atol=1e-4)


def test_stop_ids_add_the_chat_templates_end_of_turn_and_generation_config(tmp_path):
    """The tiny tokenizer's EOS is <|endoftext|> but its template closes turns with <|im_end|>
    (a Qwen2.5-base-like pair); generation_config.json may list more (Llama 3's <|eot_id|>)."""
    import json

    from lapo_lightning.policy import load_tokenizer
    from lapo_lightning.stop_tokens import stop_token_ids
    from lapo_lightning.models.tiny import resolve_model

    tokenizer = load_tokenizer(PolicyConfig(model="tiny:llama"))
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert stop_token_ids(tokenizer) == (tokenizer.eos_token_id, im_end)

    folder = tmp_path / "model"
    load_tokenizer(PolicyConfig(model=resolve_model("tiny:llama"))).save_pretrained(folder)
    (folder / "generation_config.json").write_text(json.dumps({"eos_token_id": [tokenizer.eos_token_id, 5]}))
    assert stop_token_ids(load_tokenizer(PolicyConfig(model=str(folder)))) == (tokenizer.eos_token_id, 5, im_end)


@pytest.mark.parametrize("sampler", ["HFGenerate", "CompactDecode"])
def test_a_completion_ends_at_the_end_of_turn_token(sampler):
    """A model that closes its turn with <|im_end|> (not EOS) stops there: one token, not
    truncated, and nothing of a next turn in the text."""
    from lapo_lightning import fast_rollout, rollout

    model, tokenizer = load_policy(PolicyConfig(model="tiny:llama"))
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    with torch.no_grad():  # every position's top logit is <|im_end|> (see tiny.set_stop_rate)
        model.get_input_embeddings().weight[:, 0] += 1.0
        model.get_output_embeddings().weight[im_end, 0] = 50.0
    problems = ProblemBatch(["a"], ["1+1"], ["2"])
    gen = GenerationConfig(max_new_tokens=8, temperature=0.0)
    impl = getattr(rollout, sampler, None) or getattr(fast_rollout, sampler)
    batch = impl().sample(model, tokenizer, ["p: 1+1"], problems, 2, gen)
    assert batch.lengths.tolist() == [1, 1]
    assert batch.completion_ids[:, 0].tolist() == [im_end, im_end]
    assert not batch.truncated.any()
