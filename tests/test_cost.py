"""The start-up memory estimate (lapo_lightning/safety/cost.py): exact counts against real models and
peft, its assumptions against a loaded model, its activation term against what autograd keeps,
and its wiring: the table at start-up and the refusal before any weights load.

Run: pytest tests/test_cost.py -q
"""

from __future__ import annotations

import dataclasses
import logging
import re

import pytest
import torch
from transformers import (AutoModelForCausalLM, GPT2Config, LlamaConfig, MistralConfig, Qwen2Config,
                          Qwen3Config)

from clitools import ROOT, config_in, fit
from lapo_lightning.models import shape as model_shape
from lapo_lightning.safety import cost, cost_advice, memory_check
from lapo_lightning.config import GRPOConfig
from lapo_lightning.policy import LoraSettings, PolicyConfig, load_policy
from lapo_lightning.prompts import PlainPrompt
from lapo_lightning.rollout import GenerationConfig

SMALL = dict(vocab_size=300, hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4)
REAL_SHAPES = {
    "llama-gqa-untied": LlamaConfig(**SMALL, num_key_value_heads=2, tie_word_embeddings=False),
    "llama-tied-biases": LlamaConfig(**SMALL, num_key_value_heads=4, tie_word_embeddings=True,
                                     attention_bias=True, mlp_bias=True),
    "qwen2-gqa-tied": Qwen2Config(**SMALL, num_key_value_heads=2, tie_word_embeddings=True),
    "qwen2-mha-untied": Qwen2Config(**SMALL, num_key_value_heads=4, tie_word_embeddings=False),
    "qwen3-head-dim": Qwen3Config(**SMALL, num_key_value_heads=2, head_dim=32, tie_word_embeddings=True),
    "mistral-head-dim": MistralConfig(**SMALL, num_key_value_heads=1, head_dim=24, tie_word_embeddings=False),
}
# The stage-1 model's shape (configs/stage1.yaml), as docs/performance.md uses it.
STAGE1_SHAPE = Qwen2Config(hidden_size=1536, num_hidden_layers=28, num_attention_heads=12, num_key_value_heads=2,
                           intermediate_size=8960, vocab_size=151936, tie_word_embeddings=True)


@pytest.mark.parametrize("name", list(REAL_SHAPES))
def test_parameter_count_equals_the_real_model(name):
    config = REAL_SHAPES[name]
    model = AutoModelForCausalLM.from_config(config)
    assert cost.parameter_count(model_shape.ModelShape.from_config(config)) == sum(p.numel() for p in model.parameters())


def test_hand_computed_examples():
    # tiny:llama's shape: h 64, 2 layers, 4 heads of 16, 2 KV heads, i 128, V 263, untied.
    tiny = model_shape.ModelShape("llama", hidden=64, layers=2, heads=4, kv_heads=2, head_dim=16, intermediate=128,
                           vocab=263, tied=False, qkv_bias=False, o_bias=False, mlp_bias=False, qk_norm=False)
    # per layer 4096 + 2048 + 2048 + 4096 + 3 * 8192 = 36,864, norms 128; 2 * 263 * 64 = 33,664; final norm 64
    assert cost.parameter_count(tiny) == 2 * (36_864 + 128) + 33_664 + 64
    # r 8 * (128 + 96 + 96 + 128 + 192 + 192 + 192) = 8,192 per layer
    assert cost.lora_parameter_count(tiny, 8, "all-linear") == 2 * 8_192
    # only q and v: 8 * (128 + 96) per layer
    assert cost.lora_parameter_count(tiny, 8, ["q_proj", "v_proj"]) == 2 * 8 * 224
    # 4h + 4 n_h d + n_h + 4i + 7r = 256 + 256 + 4 + 512 + 56
    assert cost.values_saved_per_token(tiny, 8, 7) == 1_084
    # micro-batches keep groups together: 4 rows of a group of 8 -> 1 prompt; 8 rows, G 4 -> 2
    assert [cost.prompts_per_micro_batch(m, g) for m, g in ((4, 8), (8, 4), (6, 4), (1, 8))] == [1, 2, 3, 1]
    stage1 = model_shape.ModelShape.from_config(STAGE1_SHAPE)
    # per layer: q 1536*1536 + 1536, k and v 1536*256 + 256 each, o 1536*1536, MLP 3 * 1536*8960,
    # norms 2 * 1536 = 46,797,824; x 28 + embedding 151,936 * 1536 + final norm 1536
    assert cost.parameter_count(stage1) == 28 * 46_797_824 + 233_373_696 + 1536 == 1_543_714_304
    # 2 * L 28 * n_kv 2 * d 128 * 4 bytes * 64 rows * 4,296 tokens
    assert cost.kv_cache_bytes(stage1, 64, 4296, 4) == 15_766_388_736


def test_unsupported_architectures_are_named():
    with pytest.raises(model_shape.UnsupportedModel, match="gpt2"):
        model_shape.ModelShape.from_config(GPT2Config())


@pytest.mark.parametrize(("model", "lora"), [
    ("tiny:llama", LoraSettings()),  # r 16, all-linear
    ("tiny:qwen2", LoraSettings(r=4, target_modules=["q_proj", "v_proj"])),
    ("tiny:qwen2", LoraSettings(r=2, target_modules=r".*mlp\.(up|down)_proj")),
])
def test_lora_count_equals_peft(model, lora):
    policy, _ = load_policy(PolicyConfig(model=model, lora=lora))
    trainable = sum(p.numel() for p in policy.parameters() if p.requires_grad)
    assert cost.lora_parameter_count(model_shape.read_shape(model), lora.r, lora.target_modules) == trainable


def stored_bytes(model) -> int:
    """Bytes of a (peft-wrapped) model's frozen tensors, including bitsandbytes' quantization state."""
    total = 0
    for p in model.parameters():
        if p.requires_grad:
            continue
        total += p.numel() * p.element_size()
        state = getattr(p, "quant_state", None)
        if state is not None:
            parts = [state.absmax, state.code] + ([state.state2.absmax, state.state2.code, state.offset]
                                                  if state.nested else [])
            total += sum(t.numel() * t.element_size() for t in parts)
    return total


@pytest.mark.parametrize("four_bit", [True, False], ids=["nf4", "bf16"])
def test_weight_bytes_and_dtypes_match_a_loaded_model(four_bit):
    name = "tiny:qwen2-h256-l2"
    cfg = PolicyConfig(model=name, dtype="bfloat16", load_in_4bit=four_bit)
    model, _ = load_policy(cfg)
    shape = model_shape.read_shape(name)
    assert cost.weight_bytes(shape, cfg.dtype, four_bit, cfg.bnb_double_quant) == stored_bytes(model)
    # LORA_STATE_BYTES assumes fp32 adapters (peft upcasts them); activation_dtype_bytes that the
    # keys/values and logits keep the bf16 dtype in 4-bit as they do unquantized.
    assert {p.dtype for p in model.parameters() if p.requires_grad} == {torch.float32}
    out = model(input_ids=torch.tensor([[5, 6, 7]]), use_cache=True)
    expected = cost.activation_dtype_bytes(cfg.dtype, four_bit)
    assert out.past_key_values.layers[0].keys.element_size() == expected
    assert out.logits.element_size() == expected


def test_4bit_is_smaller_than_bf16_smaller_than_fp32():
    shape = model_shape.ModelShape.from_config(STAGE1_SHAPE)
    nf4 = cost.weight_bytes(shape, "bfloat16", True)
    assert nf4 < cost.weight_bytes(shape, "bfloat16", False) < cost.weight_bytes(shape, "float32", False)
    assert cost.weight_bytes(shape, "bfloat16", True, double_quant=False) > nf4  # fp32 absmax per block


def saved_for_backward(model, rows: int, seq: int) -> int:
    """Bytes of the distinct tensors (not parameters) autograd keeps from one training forward."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    kept: dict[int, int] = {}

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            kept[storage.data_ptr()] = storage.nbytes()
        return t

    ids = torch.randint(0, 200, (rows, seq))
    mask = torch.ones(rows, seq, dtype=torch.long)
    mask[0, :3] = 0  # left padding, as rollouts have: the attention mask is then a tensor
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(1) - 1).clamp(min=0),
              logits_to_keep=1, use_cache=False)
    return sum(kept.values())


@pytest.mark.parametrize("name", ["tiny:llama-h128-l2", "tiny:qwen2-h128-l4"])
def test_activation_formula_is_just_above_what_autograd_keeps(name):
    model, _ = load_policy(PolicyConfig(model=name, lora=LoraSettings(r=8)))
    model.train()
    shape, rows, seq = model_shape.read_shape(name), 2, 128
    measured = saved_for_backward(model, rows, seq)
    # The padded forward: no separate prompt, every row its own sequence.
    estimated = cost.training_activation_bytes(shape, rows, 0, seq, rows, 4, 8, 7, checkpointing=False)
    # Measured when written: 7% (Llama) and 3.5% (Qwen2) above.
    assert measured <= estimated <= 1.15 * measured
    checkpointed = cost.training_activation_bytes(shape, rows, 0, seq, rows, 4, 8, 7, checkpointing=True)
    assert checkpointed < estimated


def stage1_run(**changes) -> cost_advice.RunSettings:
    """configs/stage1.yaml's settings on the stage-1 shape (200-token prompts), with changes by field name."""
    policy = PolicyConfig(model="stage1-shape", lora=LoraSettings(r=64, alpha=128), gradient_checkpointing=True)
    policy.dtype, policy.load_in_4bit = "bfloat16", True  # set after init: bitsandbytes need not be installed
    grpo = GRPOConfig(group_size=8, micro_batch_size=4)
    generation = GenerationConfig(max_new_tokens=4096, max_rollouts_per_call=64)
    per_step = changes.pop("problems_per_step", 16)
    for obj in (policy, grpo, generation):
        fields = {f.name for f in dataclasses.fields(obj)}
        for key in [k for k in changes if k in fields]:
            setattr(obj, key, changes.pop(key))
    assert not changes, f"unknown settings {changes}"
    return cost_advice.RunSettings(model_shape.ModelShape.from_config(STAGE1_SHAPE), policy, grpo, generation, per_step, 200)


def stage1_estimate(**changes) -> cost.CostEstimate:
    return stage1_run(**changes).estimate()


def test_estimate_grows_with_what_it_should():
    base = stage1_estimate()
    assert stage1_estimate(max_new_tokens=8192).peak_bytes > base.peak_bytes
    assert stage1_estimate(micro_batch_size=8).training_bytes > base.training_bytes
    assert stage1_estimate(gradient_checkpointing=False).activation_bytes > base.activation_bytes
    # The padded forward runs the prompt once per row, the shared-prefix one once per group.
    assert stage1_estimate(shared_prefix=False).activation_bytes > base.activation_bytes
    assert stage1_estimate(load_in_4bit=False).weight_bytes > base.weight_bytes
    # Generation: more rows per generate() call cost KV cache, up to all B*G rollouts.
    assert stage1_estimate(max_rollouts_per_call=128).kv_cache_bytes == 2 * base.kv_cache_bytes
    assert stage1_estimate(max_rollouts_per_call=None, group_size=16).kv_cache_bytes \
        > stage1_estimate(max_rollouts_per_call=None).kv_cache_bytes
    assert stage1_estimate(problems_per_step=4).rows_per_call == 32  # 4 * 8 rollouts, below the 64 cap
    table = cost_advice.estimate_table(base)
    assert "4-bit NF4" in table and "16 problems x G 8 = 128" in table and "200 prompt + 4096 new = 4296" in table


def test_refusal_names_the_keys_that_lower_the_estimate():
    run = stage1_run()
    peak = run.estimate().peak_bytes
    memory_check.check_fits(run, torch.device("cuda", 0), peak)  # exactly enough: no error
    with pytest.raises(ValueError, match=r"model.generation.max_rollouts_per_call 32 \(-") as err:
        memory_check.check_fits(run, torch.device("cuda", 0), peak - 1)
    assert "model.generation.max_new_tokens 4096 -> 2048" in str(err.value) and memory_check.SKIP_ENV in str(err.value)


def test_4bit_is_suggested_only_where_it_lowers_the_estimate():
    # bf16: 4-bit keeps the bf16 stream, so it only shrinks the weights.
    bf16 = stage1_run(load_in_4bit=False)
    assert stage1_run(load_in_4bit=True).estimate().peak_bytes < bf16.estimate().peak_bytes
    assert any("load_in_4bit" in change for change in cost_advice.what_lowers_it(bf16))
    # fp16: 4-bit loading upcasts the stream to fp32, so the KV cache doubles: for the stage-1
    # shape that outweighs the smaller weights, and it is not suggested.
    fp16 = stage1_run(load_in_4bit=False, dtype="float16")
    assert stage1_run(load_in_4bit=True, dtype="float16").estimate().peak_bytes > fp16.estimate().peak_bytes
    assert not any("load_in_4bit" in change for change in cost_advice.what_lowers_it(fp16))


def test_longest_prompt_is_measured_with_the_budget_sentence():
    from lapo_lightning.policy import load_tokenizer

    tokenizer = load_tokenizer(PolicyConfig(model="tiny:llama"))
    prompt = PlainPrompt()
    problems = ["1+1?", "What is 12 times 12, then plus 7?"]
    without = cost_advice.longest_prompt_tokens(tokenizer, prompt, problems, None)
    assert without == len(tokenizer(prompt.render(problems[1]), add_special_tokens=False)["input_ids"])
    assert cost_advice.longest_prompt_tokens(tokenizer, prompt, problems, 4096) > without
    assert cost_advice.longest_prompt_tokens(tokenizer, prompt, [], None) == cost.DEFAULT_PROMPT_TOKENS


# ------------------------------------------------------------------ wiring through `lapo fit`
@pytest.fixture
def no_weights(monkeypatch):
    """Loading weights fails loudly: whatever is raised before it was raised before loading."""
    def refuse(*args, **kwargs):
        raise AssertionError("load_policy was called")

    monkeypatch.setattr("lapo_lightning.module.load_policy", refuse)
    monkeypatch.chdir(ROOT)


def test_a_capped_cuda_process_counts_only_its_share(monkeypatch):
    """A card shared with set_per_process_memory_fraction: the estimate and `auto` see the cap."""
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: type("P", (), {"total_memory": 80 * 10**9}))
    monkeypatch.setattr(torch.cuda, "get_per_process_memory_fraction", lambda device: 0.15, raising=False)
    assert memory_check.device_total_memory(torch.device("cuda", 0)) == 12 * 10**9


def test_a_config_that_cannot_fit_is_refused_before_loading_weights(tmp_path, no_weights, monkeypatch):
    monkeypatch.setattr(memory_check, "device_total_memory", lambda device: 1_000_000)  # a 1 MB device
    with pytest.raises(ValueError, match="model.grpo.micro_batch_size") as err:
        fit(config_in(tmp_path, "debug/grpo.yaml"), "--trainer.max_steps", "1")
    assert "model.generation.max_new_tokens 24 -> 12" in str(err.value)


def test_the_opt_out_starts_anyway(tmp_path, no_weights, monkeypatch):
    monkeypatch.setattr(memory_check, "device_total_memory", lambda device: 1_000_000)
    monkeypatch.setenv(memory_check.SKIP_ENV, "1")
    with pytest.raises(AssertionError, match="load_policy was called"):
        fit(config_in(tmp_path, "debug/grpo.yaml"), "--trainer.max_steps", "1")


def test_auto_sizes_are_numbers_before_weights_load(tmp_path, no_weights, monkeypatch, caplog):
    """`auto` is resolved at start-up from the estimate: the largest divisor of the 16 rollouts
    whose peak fits 90% of the device, printed; with too little memory, one line naming the key."""
    caplog.set_level(logging.INFO, logger="lightning.pytorch")
    auto = ("--model.grpo.micro_batch_size", "auto", "--model.generation.max_rollouts_per_call", "auto",
            "--trainer.max_steps", "1")
    config = config_in(tmp_path, "debug/grpo.yaml")
    with pytest.raises(AssertionError, match="load_policy was called"):
        fit(config, *auto)
    chosen = re.search(r"model.grpo.micro_batch_size auto -> (\d+)", caplog.text)
    assert chosen and int(chosen[1]) == 16, caplog.text[-2000:]  # a tiny model on this machine's RAM: all of it
    assert re.search(r"max_rollouts_per_call auto -> 16 ", caplog.text)
    monkeypatch.setattr(memory_check, "device_total_memory", lambda device: 1_000_000)  # a 1 MB device
    with pytest.raises(ValueError, match="auto found no size that fits"):
        fit(config, *auto)


@pytest.mark.slow
def test_the_debug_run_prints_its_cost(tmp_path, caplog, monkeypatch):
    # Read from the log records: Lightning's console handler keeps whichever stream it was
    # created with, so what reaches capsys/capfd depends on the tests run before.
    monkeypatch.chdir(ROOT)
    caplog.set_level(logging.INFO, logger="lightning.pytorch")
    fit(config_in(tmp_path, "debug/grpo.yaml"), "--trainer.max_steps", "1", "--trainer.limit_val_batches", "0")
    text = caplog.text
    assert "Memory estimate before loading weights" in text
    assert "4 problems x G 4 = 16" in text and "+ 24 new =" in text and "device         cpu:" in text


def test_a_lora_rank_sized_for_a_bigger_model_is_pointed_out():
    """r 64 on all linears is ~1.2% of the 1.5B shape (no advice) but 14% of SmolLM2-135M's shape."""
    big = stage1_estimate()
    assert big.lora_share < cost.LARGE_LORA_SHARE and memory_check.lora_advice(big, 64) is None
    assert f"{big.lora_share:.1%} of the model" in cost_advice.estimate_table(big)
    small_shape = model_shape.ModelShape.from_config(LlamaConfig(  # SmolLM2-135M's shape
        hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
        vocab_size=49152, tie_word_embeddings=True))
    run = dataclasses.replace(stage1_run(), shape=small_shape)
    advice = memory_check.lora_advice(run.estimate(), 64)
    assert advice.startswith("model.policy.lora.r 64 trains") and "r 8-16" in advice
