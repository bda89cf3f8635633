"""Policy loading: tokenizer/padding, LoRA, references, and the 4-bit CPU gradient trap.

Run: pytest tests/test_policy.py -q
"""

from __future__ import annotations

import pytest
import torch

from lapo_lightning.policy import PolicyConfig, load_policy, load_tokenizer
from lapo_lightning.reference import AdapterDisabled, FrozenAdapter

bnb = pytest.importorskip("bitsandbytes")


def lora_grads(model, input_ids) -> dict[str, torch.Tensor]:
    model.train()
    model.zero_grad(set_to_none=True)
    out = model(input_ids=input_ids, labels=input_ids, use_cache=False)
    out.loss.backward()
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def perturb_lora(model, seed: int = 0) -> None:
    """LoRA B starts at zero, which hides most gradient paths; give the policy adapter values."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name and ".default." in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.05)


def grads_fresh_and_after_generate(arch: str):
    """LoRA gradients of a fresh 4-bit model, and of an identical one after an eval-mode generate()."""
    cfg = PolicyConfig(model=f"tiny:{arch}", load_in_4bit=True, bnb_compute_dtype="float32")
    input_ids = torch.randint(0, 250, (2, 12), generator=torch.Generator().manual_seed(1))
    fresh, _ = load_policy(cfg)
    perturb_lora(fresh)
    expected = lora_grads(fresh, input_ids)
    used, tokenizer = load_policy(cfg)
    perturb_lora(used)
    assert any(isinstance(m, bnb.nn.Linear4bit) for m in used.modules())
    used.eval()
    with torch.no_grad():
        used.generate(input_ids=input_ids, max_new_tokens=4, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    return expected, lora_grads(used, input_ids)


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_4bit_gradients_survive_generate(arch):
    """An eval-mode generate() must not corrupt later 4-bit LoRA gradients (bitsandbytes repacks
    4-bit weights for inference on CPUs with AVX512-BF16)."""
    expected, got = grads_fresh_and_after_generate(arch)
    assert expected.keys() == got.keys() and expected
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-4, atol=1e-6, msg=name)


def test_4bit_repack_fix_is_applied_on_load():
    """The fix must be on every Linear4bit, whatever this CPU supports."""
    model, _ = load_policy(PolicyConfig(model="tiny:qwen2", load_in_4bit=True, bnb_compute_dtype="float32"))
    layers = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert layers and all(layer.support_avx512bf16_for_cpu is False for layer in layers)


@pytest.mark.skipif(not bnb.nn.modules.has_avx512bf16(), reason="the repack trap needs a CPU with AVX512-BF16")
def test_without_the_fix_generate_corrupts_gradients(monkeypatch):
    """Control: proves the regression test above detects the trap on CPUs that have it."""
    import lapo_lightning.policy as policy

    monkeypatch.setattr(policy, "disable_cpu_inference_repack", lambda model: 0)
    try:
        expected, got = grads_fresh_and_after_generate("llama")
    except RuntimeError:  # Qwen2-style crash in backward is the other symptom
        return
    assert any(not torch.allclose(got[n], expected[n], rtol=1e-4, atol=1e-6) for n in expected)


def test_tokenizer_pads_left_with_fallback(tmp_path):
    tok = load_tokenizer(PolicyConfig(model="tiny:llama"))
    assert tok.padding_side == "left" and tok.pad_token_id is not None
    batch = tok(["a", "abc"], padding=True, return_tensors="pt", add_special_tokens=False)
    assert batch["attention_mask"][0].tolist() == [0, 0, 1]

    # A tokenizer without a pad token falls back to EOS.
    tok.pad_token = None
    tok.save_pretrained(tmp_path)
    from lapo_lightning.models.tiny import resolve_model
    import shutil

    for f in ("config.json", "model.safetensors"):
        shutil.copy(f"{resolve_model('tiny:llama')}/{f}", tmp_path / f)
    fallback = load_tokenizer(PolicyConfig(model=str(tmp_path)))
    assert fallback.pad_token_id == fallback.eos_token_id


def test_lora_targets_all_linear_and_only_lora_trains():
    model, _ = load_policy(PolicyConfig(model="tiny:qwen2"))
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    adapted = {n.split(".lora_")[0].rsplit(".", 1)[-1] for n in trainable}
    assert {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"} <= adapted
    assert not any("lm_head" in n for n in trainable)


def test_4bit_without_bitsandbytes_names_the_key(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "bitsandbytes" else real(name, *a))
    with pytest.raises(ValueError, match="model.policy.load_in_4bit"):
        PolicyConfig(load_in_4bit=True)


def test_missing_adapter_names_the_key(tmp_path):
    with pytest.raises(FileNotFoundError, match="model.policy.adapter"):
        PolicyConfig(adapter=str(tmp_path / "nope")).check_paths()


def ref_logits(model, reference, input_ids):
    with torch.no_grad(), reference.active(model):
        return model(input_ids=input_ids).logits


def test_references_use_the_right_weights(tmp_path):
    input_ids = torch.randint(0, 250, (1, 8), generator=torch.Generator().manual_seed(0))
    model, _ = load_policy(PolicyConfig(model="tiny:llama"))
    with torch.no_grad():
        base = model(input_ids=input_ids).logits.clone()  # LoRA B = 0: policy == base
    perturb_lora(model, seed=1)
    model.save_pretrained(tmp_path / "stage1")  # the "stage-1 adapter"
    with torch.no_grad():
        stage1 = model(input_ids=input_ids).logits.clone()
    assert not torch.allclose(stage1, base)

    # Adapter disabled = the base model.
    torch.testing.assert_close(ref_logits(model, AdapterDisabled(), input_ids), base)

    # Frozen adapter: the policy trains on (changed below); the reference stays at stage 1.
    frozen = FrozenAdapter(str(tmp_path / "stage1"))
    frozen.setup(model)
    perturb_lora(model, seed=2)  # the policy trains on; the reference adapter must not move
    torch.testing.assert_close(ref_logits(model, frozen, input_ids), stage1)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(".default." in n for n in trainable), "reference adapter must stay frozen"
    with torch.no_grad():
        assert not torch.allclose(model(input_ids=input_ids).logits, stage1)
