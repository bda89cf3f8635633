"""Tiny random-init models and a character tokenizer, built by code, for offline runs.

Nothing can be downloaded on CI or a fresh laptop, so the debug configs name a model as
``tiny:<arch>`` (for example ``tiny:llama``, ``tiny:qwen2-h64-l2``, ``tiny:llama-e1.0``, whose
EOS arrives at varied positions, or ``tiny:llama-h128-l4-n``, which reads every number below
100 and the budget sentence's words as single tokens: the demo's model). :func:`resolve_model`
builds it once into a cache folder with ``save_pretrained`` and returns that folder, so the
model and tokenizer then load through exactly the ``from_pretrained`` path a hub id takes.
"""

from __future__ import annotations

import re
from pathlib import Path

from lapo_lightning.models.cache import TINY_PREFIX, build_once, cache_root

# Multi-character tokens for the pieces every completion repeats: fewer decode steps.
SPECIAL_PIECES = ["<think>", "</think>", "\\boxed{", "<|endoftext|>", "<|pad|>", "<|im_start|>", "<|im_end|>"]
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# With ``-n``: numbers 10..99 (0..9 are characters already) and the budget sentence's fixed
# words as whole tokens, so arithmetic traces and stage-2 prompts are 2-3x shorter.
NUMBER_PIECES = [str(n) for n in range(10, 100)]
BUDGET_PIECES = [" I will answer the question with", " tokens."]
_SPEC = re.compile(r"^(llama|qwen2)(?:-h(\d+))?(?:-l(\d+))?(?:-e(-?[\d.]+))?(-n)?$")


def default_cache_dir() -> Path:
    return cache_root() / "tiny"


def build_char_tokenizer(numbers: bool = False):
    """A byte-level tokenizer with one token per byte (no merges) plus a few whole pieces
    (and, with ``numbers``, :data:`NUMBER_PIECES` and :data:`BUDGET_PIECES`).

    Byte-level BPE with an empty merge list is what Qwen2/Llama-3 style tokenizer classes
    expect, so whichever class ``AutoTokenizer`` picks for the architecture, text round-trips.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {symbol: i for i, symbol in enumerate(alphabet)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, padding_side="left", chat_template=CHAT_TEMPLATE)
    fast.add_special_tokens({"eos_token": "<|endoftext|>", "pad_token": "<|pad|>"})
    fast.add_tokens([p for p in SPECIAL_PIECES if p not in ("<|endoftext|>", "<|pad|>")])
    if numbers:
        fast.add_tokens(NUMBER_PIECES + BUDGET_PIECES)
    return fast


def build_tiny_model(arch: str = "llama", hidden: int = 64, layers: int = 2, vocab_size: int = 272, seed: int = 0,
                     tied: bool = False):
    """A random-init causal LM of the given architecture (Llama or Qwen2); ``tied`` shares the
    input embedding with the output head."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    config_cls, model_cls = {"llama": (LlamaConfig, LlamaForCausalLM), "qwen2": (Qwen2Config, Qwen2ForCausalLM)}[arch]
    config = config_cls(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=tied,
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=None,
    )
    torch.manual_seed(seed)
    return model_cls(config)


def set_stop_rate(model, tokenizer, eos_weight: float) -> None:
    """Give a random model a steady EOS rate, so completion lengths vary (or never end).

    Every input embedding gets +1 on feature 0, so the final hidden state carries a
    near-constant component there; the output-head rows of EOS and pad read only that
    feature. EOS then has a near-constant logit (``eos_weight`` > 0: stops at varied
    positions; < 0: never stops) and the pad token is never sampled.
    """
    import torch

    with torch.no_grad():
        model.get_input_embeddings().weight[:, 0] += 1.0
        head = model.get_output_embeddings().weight
        for token, weight in ((tokenizer.eos_token_id, eos_weight), (tokenizer.pad_token_id, -5.0)):
            head[token] = 0.0
            head[token, 0] = weight


def save_tiny(out_dir: str | Path, arch: str = "llama", hidden: int = 64, layers: int = 2, seed: int = 0,
              eos_weight: float | None = None, numbers: bool = False, vocab_size: int | None = None,
              tied: bool = False) -> Path:
    """Build the tokenizer and model and save both to ``out_dir`` (a from_pretrained folder).

    ``vocab_size`` (default: the tokenizer's size) may be larger, e.g. to give a benchmark a
    real model's embedding and output-head shapes; the extra rows are never produced by text.
    """
    out_dir = Path(out_dir)
    tokenizer = build_char_tokenizer(numbers)
    model = build_tiny_model(arch, hidden, layers, vocab_size=vocab_size or len(tokenizer), seed=seed, tied=tied)
    if eos_weight is not None:
        set_stop_rate(model, tokenizer, eos_weight)
    for key in ("eos_token_id", "pad_token_id"):
        setattr(model.config, key, getattr(tokenizer, key))
        setattr(model.generation_config, key, getattr(tokenizer, key))
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def resolve_model(name: str, cache_dir: str | Path | None = None) -> str:
    """Turn ``tiny:<arch>[-h<hidden>][-l<layers>][-e<eos weight>][-n]`` into a built folder; pass anything else through."""
    if not name.startswith(TINY_PREFIX):
        return name
    spec = name[len(TINY_PREFIX):]
    match = _SPEC.match(spec)
    if match is None:
        raise ValueError(f"model.policy.model: unknown tiny model {name!r}; expected e.g. 'tiny:llama', 'tiny:qwen2-h64-l2', 'tiny:llama-e0.4' or 'tiny:llama-h128-l4-n'")
    arch, hidden, layers = match.group(1), int(match.group(2) or 64), int(match.group(3) or 2)
    eos_weight = float(match.group(4)) if match.group(4) is not None else None
    folder = Path(cache_dir or default_cache_dir()) / spec
    return build_once(folder, lambda out: save_tiny(out, arch, hidden, layers, eos_weight=eos_weight,
                                                    numbers=match.group(5) is not None))
