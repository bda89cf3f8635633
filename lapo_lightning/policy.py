"""The policy: one causal LM (optionally 4-bit NF4) with a trainable LoRA adapter.

Flow: ``GRPOModule.configure_model`` calls :func:`load_policy`, which is the only place
that imports bitsandbytes or peft. It resolves the model name (hub id, local folder, or a
``tiny:`` debug model built by :mod:`lapo_lightning.models.tiny`), loads the tokenizer with left
padding, optionally quantizes, applies the CPU repack fix, and wraps the model in LoRA.
The reference model is not loaded here: see :mod:`lapo_lightning.reference`.
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

from lapo_lightning.models.source import resolve as resolve_model

DType = Literal["float32", "bfloat16", "float16"]
ADAPTER_NAME = "default"  # peft's name for the first adapter; the reference uses another
ADAPTER_CONFIG = "adapter_config.json"  # what makes a folder a saved PEFT adapter


def is_adapter_dir(path: str | Path) -> bool:
    """True when ``path`` is a saved PEFT adapter folder."""
    return (Path(path) / ADAPTER_CONFIG).is_file()


def recorded_base(adapter: str | Path) -> str | None:
    """The base model an adapter was trained on, from its config (None if absent or unreadable)."""
    try:
        return json.loads((Path(adapter) / ADAPTER_CONFIG).read_text(encoding="utf-8")).get("base_model_name_or_path")
    except (OSError, json.JSONDecodeError):
        return None


@dataclass
class LoraSettings:
    """LoRA hyper-parameters (peft ``LoraConfig``)."""

    r: int = 16
    alpha: int = 32
    dropout: float = 0.0
    target_modules: list[str] | str = "all-linear"
    """Module names to adapt, or "all-linear" for every linear layer but the output head."""


@dataclass
class PolicyConfig:
    """Which model to train and how to hold it in memory."""

    model: str = "tiny:llama"
    """Hub id, local folder, or ``tiny:<arch>[-h<hidden>][-l<layers>]`` (built offline)."""
    tokenizer: str | None = None
    """Tokenizer hub id or folder; defaults to ``model``."""
    dtype: DType = "float32"
    """Dtype of the (non-quantized) weights."""
    load_in_4bit: bool = False
    """Quantize the base to 4-bit NF4 with bitsandbytes (QLoRA)."""
    bnb_compute_dtype: DType = "bfloat16"
    """Dtype the 4-bit layers compute in."""
    bnb_double_quant: bool = True
    """Also quantize the quantization constants (saves ~0.4 bits/parameter)."""
    lora: LoraSettings = field(default_factory=LoraSettings)
    adapter: str | None = None
    """A saved PEFT adapter folder to start from (e.g. the stage-1 result), kept trainable."""
    gradient_checkpointing: bool = False
    """Recompute activations in backward: less memory, ~30% slower training forward."""
    trust_remote_code: bool = False
    """Run Python code shipped with a hub model (its own modelling files). Off by default, so loading
    a model never executes code from the hub; turn on only for a model you trust that needs it."""

    def __post_init__(self) -> None:
        problems = []
        if self.load_in_4bit and importlib.util.find_spec("bitsandbytes") is None:
            problems.append("model.policy.load_in_4bit=true needs bitsandbytes: pip install bitsandbytes")
        if self.lora.r < 1:
            problems.append(f"model.policy.lora.r must be >= 1, got {self.lora.r}")
        if problems:
            raise ValueError("invalid policy config:\n  " + "\n  ".join(problems))

    def check_paths(self) -> None:
        """Fail at start-up (before any weights load) on paths that do not exist yet.

        Kept out of ``__post_init__`` so configs naming future outputs (stage 2 names the
        stage-1 adapter) still parse.
        """
        if self.adapter is not None and not is_adapter_dir(self.adapter):
            raise FileNotFoundError(
                f"model.policy.adapter: no PEFT adapter at {self.adapter!r} (expected adapter_config.json there)"
            )


def load_tokenizer(cfg: PolicyConfig):
    """Tokenizer with left padding (generation appends on the right) and a pad token."""
    from transformers import AutoTokenizer

    name = resolve_model(cfg.tokenizer or cfg.model)
    # padding_side must go to from_pretrained to persist (transformers 5).
    tokenizer = AutoTokenizer.from_pretrained(name, padding_side="left", trust_remote_code=cfg.trust_remote_code)
    if tokenizer.pad_token_id is None:
        # Fallback: pad with EOS. Completion masks are cut at the first EOS, so padding never
        # counts towards a length; the only cost is that a row ended by a stop string
        # instead of EOS cannot be told apart from one ended by EOS.
        if tokenizer.eos_token is None:
            raise ValueError(f"model.policy.tokenizer: {name!r} has neither a pad nor an EOS token")
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_base_model(cfg: PolicyConfig, device: torch.device | str | None = None):
    """The base causal LM, 4-bit quantized if asked, with the CPU repack fix applied."""
    from transformers import AutoModelForCausalLM

    kwargs: dict = {"dtype": getattr(torch, cfg.dtype), "trust_remote_code": cfg.trust_remote_code}
    if cfg.load_in_4bit:
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_compute_dtype=getattr(torch, cfg.bnb_compute_dtype),
            bnb_4bit_use_double_quant=cfg.bnb_double_quant,
        )
        # Quantize straight onto the training device instead of on CPU and moving later.
        kwargs["device_map"] = {"": str(device or "cpu")}
    model = AutoModelForCausalLM.from_pretrained(resolve_model(cfg.model), **kwargs)
    if cfg.load_in_4bit:
        disable_cpu_inference_repack(model)
    return model


def disable_cpu_inference_repack(model: torch.nn.Module) -> int:
    """Stop bitsandbytes repacking 4-bit weights into an inference-only CPU layout.

    On CPUs with AVX512-BF16, the first eval-mode no-grad forward (every ``generate()``)
    permanently repacks each ``Linear4bit``; afterwards gradients are silently wrong
    (Llama) or backward crashes (Qwen2). tests/test_policy.py shows both.
    Returns the number of layers patched.
    """
    import bitsandbytes as bnb

    layers = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    for layer in layers:
        layer.support_avx512bf16_for_cpu = False
    return len(layers)


def load_policy(cfg: PolicyConfig, device: torch.device | str | None = None):
    """Return ``(peft_model, tokenizer)``: the base with a trainable LoRA adapter."""
    from peft import LoraConfig, PeftModel, get_peft_model, prepare_model_for_kbit_training

    tokenizer = load_tokenizer(cfg)
    model = load_base_model(cfg, device)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    if cfg.load_in_4bit and cfg.dtype == "float16":
        # fp16 overflows in the norms and the residual stream: peft's preparation upcasts every
        # non-quantized weight to fp32 (doubling the KV cache and activations). bf16 and fp32
        # need no upcast, so they keep their dtype, as QLoRA does with bf16.
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=cfg.gradient_checkpointing,
                                                gradient_checkpointing_kwargs={"use_reentrant": False})
    elif cfg.gradient_checkpointing:
        # Non-reentrant: the shared-prefix forward needs it (lapo_lightning/shared_prefix.py).
        if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.24
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:  # older releases (5.17, a GPU image's) have only the name 5.24 deprecates
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    if cfg.adapter is not None:
        model = PeftModel.from_pretrained(model, cfg.adapter, adapter_name=ADAPTER_NAME, is_trainable=True)
    else:
        lora = LoraConfig(
            r=cfg.lora.r,
            lora_alpha=cfg.lora.alpha,
            lora_dropout=cfg.lora.dropout,
            target_modules=cfg.lora.target_modules,
            task_type="CAUSAL_LM",
        )
        model = get_peft_model(model, lora, adapter_name=ADAPTER_NAME)
    return model, tokenizer


def save_trained(model, tokenizer, out_dir: str | Path) -> Path:
    """Save what training changed, with the tokenizer: a PEFT model's trainable adapter only
    (never a frozen reference adapter), or the whole model when every weight was trained."""
    from peft import PeftModel

    if isinstance(model, PeftModel):
        model.save_pretrained(out_dir, selected_adapters=[ADAPTER_NAME])
    else:
        model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return Path(out_dir)


def export_merged(cfg: PolicyConfig, adapter_dir: str | Path, out_dir: str | Path) -> Path:
    """Merge a saved adapter into a fresh full-precision copy of the base and save it.

    A 4-bit base cannot absorb LoRA weights exactly, so the merge always reloads the base
    unquantized in ``cfg.dtype``.
    """
    from peft import PeftModel

    full = PolicyConfig(model=cfg.model, tokenizer=cfg.tokenizer, dtype=cfg.dtype, trust_remote_code=cfg.trust_remote_code)
    merged = PeftModel.from_pretrained(load_base_model(full), str(adapter_dir)).merge_and_unload()
    merged.save_pretrained(out_dir)
    load_tokenizer(full).save_pretrained(out_dir)
    return Path(out_dir)
