"""The accelerator tier: what only a GPU can check, marked ``cuda`` and skipped without one.

benchmarks/gpu_check.sh runs ``pytest -m cuda`` first on a lent GPU: 4-bit NF4 + LoRA
numerics (bitsandbytes' CUDA kernels), decoding, and one GRPO training step through
Lightning on the device. ``LAPO_TEST_DEVICE=cpu`` runs the same tests on the CPU (the
script's dry mode does, so they are known to work before a GPU is lent); by default they
ask for CUDA and skip where there is none.

Run: pytest -m cuda tests/test_cuda.py -q              (on a GPU machine)
     LAPO_TEST_DEVICE=cpu pytest -m cuda tests/test_cuda.py -q
"""

from __future__ import annotations

import importlib.util
import json
import os

import pytest
import torch

DEVICE = os.environ.get("LAPO_TEST_DEVICE", "cuda")
pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(DEVICE == "cuda" and not torch.cuda.is_available(),
                       reason="no CUDA device (LAPO_TEST_DEVICE=cpu runs these on the CPU)"),
]
# bf16 compute on the GPU, as configs/stage1.yaml; fp32 on the CPU (bf16 matmuls there are slow)
COMPUTE = "bfloat16" if DEVICE == "cuda" else "float32"
MODEL = "tiny:qwen2-h128-l2"  # 4-bit needs in/out features that are multiples of the 64-weight blocks


def device() -> torch.device:
    return torch.device("cuda", 0) if DEVICE == "cuda" else torch.device("cpu")


def lora_pair():
    """The same LoRA policy twice: NF4 base (compute in COMPUTE) and an fp32 base holding the
    NF4 weights dequantized, so the two differ only by how the 4-bit path computes."""
    import bitsandbytes as bnb

    from lapo_lightning.policy import LoraSettings, PolicyConfig, load_policy

    lora = LoraSettings(r=8, alpha=16)
    quantized, tokenizer = load_policy(PolicyConfig(model=MODEL, lora=lora, load_in_4bit=True, dtype=COMPUTE,
                                                    bnb_compute_dtype=COMPUTE), device=device())
    reference, _ = load_policy(PolicyConfig(model=MODEL, lora=lora))
    reference.to(device())
    weights = dict(reference.named_parameters())
    linear4 = {name: m for name, m in quantized.named_modules() if isinstance(m, bnb.nn.Linear4bit)}
    assert linear4, "no 4-bit layer was loaded"
    torch.manual_seed(0)
    with torch.no_grad():
        for name, module in linear4.items():
            full = bnb.functional.dequantize_4bit(module.weight.data, module.weight.quant_state)
            weights[f"{name}.weight"].copy_(full.float())
        for name, p in quantized.named_parameters():
            if "lora_B" in name:  # LoRA B starts at 0: give the adapter something to do
                p.normal_(0, 0.05)
            if "lora_" in name:
                weights[name].copy_(p.float())
    return quantized, reference, tokenizer


@pytest.mark.skipif(importlib.util.find_spec("bitsandbytes") is None, reason="bitsandbytes not installed")
def test_4bit_lora_forward_and_backward_match_the_dequantized_fp32_model():
    quantized, reference, tokenizer = lora_pair()
    ids = tokenizer(["What is 12 + 30? Think first.", "x * 7 = 21, x?"], return_tensors="pt", padding=True,
                    add_special_tokens=False)
    batch = {k: v.to(device()) for k, v in ids.items()}
    # Left padding: a pad position attends to nothing, so what a kernel writes there is not a
    # result (on an H200 the largest bf16-vs-fp32 difference, 0.87, was at a pad position).
    # Only attended positions count.
    attended = batch["attention_mask"].bool()
    grads = {}
    for name, model in (("nf4", quantized), ("fp32", reference)):
        model.train()
        logits = model(**batch).logits.float()[attended]
        logits.log_softmax(-1).mean().backward()
        grads[name] = ({n: p.grad.float().clone() for n, p in model.named_parameters() if p.grad is not None},
                       logits.detach())
    (nf4_grads, nf4_logits), (fp32_grads, fp32_logits) = grads["nf4"], grads["fp32"]
    assert torch.isfinite(nf4_logits).all()
    tolerance = dict(rtol=0.05, atol=0.05) if COMPUTE == "bfloat16" else dict(rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(nf4_logits, fp32_logits, **tolerance)
    lora = [n for n in fp32_grads if "lora_" in n]
    assert lora and set(lora) <= set(nf4_grads)
    for name in lora:
        assert torch.isfinite(nf4_grads[name]).all(), name
        scale = fp32_grads[name].abs().max().clamp(min=1e-6)  # compare relative to the gradient's size
        torch.testing.assert_close(nf4_grads[name] / scale, fp32_grads[name] / scale, **tolerance)


def test_generation_on_the_device_matches_hf_generate():
    from lapo_lightning.fast_rollout import CompactDecode
    from lapo_lightning.policy import PolicyConfig, load_policy
    from lapo_lightning.rollout import GenerationConfig, HFGenerate
    from lapo_lightning.types import ProblemBatch

    model, tokenizer = load_policy(PolicyConfig(model="tiny:llama"))
    model.to(device())
    prompts = ["What is 1+1?", "A longer problem with more words in it.", "x"]
    batch = ProblemBatch(["a", "b", "c"], prompts, ["2"] * 3)
    gen = GenerationConfig(max_new_tokens=24, temperature=0)
    # Greedy rows that stop at different steps: EOS gets the output row of a token greedy
    # decoding writes a few steps in (as tests/test_fast_paths.py's early_stopping_policy).
    trigger = int(HFGenerate().sample(model, tokenizer, prompts, batch, 1, gen).completion_ids[0, 3])
    with torch.no_grad():
        head = model.get_output_embeddings().weight
        head[tokenizer.eos_token_id] = head[trigger] * 1.5
    simple = HFGenerate().sample(model, tokenizer, prompts, batch, 2, gen)
    fast = CompactDecode().sample(model, tokenizer, prompts, batch, 2, gen)
    assert fast.completion_ids.device.type == device().type
    assert torch.equal(fast.completion_ids, simple.completion_ids)
    assert fast.lengths.min() < fast.lengths.max(), "rows should stop at different steps"
    sampled = CompactDecode().sample(model, tokenizer, prompts, batch, 4, GenerationConfig(max_new_tokens=24))
    assert torch.isfinite(sampled.old_logprobs).all() and bool((sampled.old_logprobs <= 0).all())


def test_one_grpo_step_trains_the_adapter_on_the_device(tmp_path):
    import lightning.pytorch as pl

    from lapo_lightning import GenerationConfig, GRPOConfig, GRPOModule, LapoDataModule, OptimConfig
    from lapo_lightning.policy import PolicyConfig
    from lapo_lightning.rewards import Accuracy, Reward
    from lapo_lightning.verify import ContainsAnswer

    class Shorter(Reward):  # a random model is never correct: lengths give the groups a reward spread
        def __call__(self, batch):
            return -batch.lengths.float()

    data = tmp_path / "problems.jsonl"
    data.write_text("".join(json.dumps({"id": f"p{i}", "problem": f"What is {i} + {i}?", "answer": str(2 * i)}) + "\n"
                            for i in range(2)))
    module = GRPOModule(
        policy=PolicyConfig(model="tiny:llama-e0.4", gradient_checkpointing=True),
        rewards=[Accuracy(), Shorter(weight=0.1)],
        grpo=GRPOConfig(group_size=4, kl_coef=0.04, micro_batch_size=4),
        generation=GenerationConfig(max_new_tokens=16),
        optim=OptimConfig(lr=1e-2),
        verifier=ContainsAnswer(),
    )
    trainer = pl.Trainer(accelerator="gpu" if DEVICE == "cuda" else "cpu", devices=1, max_steps=1, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    before, trained_on = None, set()

    class Snapshot(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, *args):
            nonlocal before
            before = {n: p.detach().clone() for n, p in pl_module.named_parameters() if p.requires_grad}

        def on_train_batch_end(self, trainer, pl_module, *args):  # Lightning's teardown moves the module to the CPU
            trained_on.update(p.device.type for p in pl_module.parameters() if p.requires_grad)

    trainer.callbacks.append(Snapshot())
    trainer.fit(module, LapoDataModule(str(data), problems_per_step=2, seed=0))
    assert trainer.global_step == 1
    after = {n: p.detach() for n, p in module.named_parameters() if p.requires_grad}
    assert trained_on == {device().type}
    assert all(torch.isfinite(p).all() for p in after.values())
    moved = [n for n in after if not torch.equal(after[n], before[n].to(after[n].device))]
    assert any("lora_B" in n for n in moved), moved  # (lora_A's first gradient is 0: B starts at 0)
