"""Architecture facts of the models the shipped configs name, for estimates made offline.

``lapo check`` and ``lapo fit``'s start-up estimate read a model's shape from its
``config.json`` (``AutoConfig``), which needs the hub or a local copy. When neither is
there (a fresh machine, ``HF_HUB_OFFLINE=1``, nothing cached), :func:`offline_config`
builds the same transformers config from the facts below, so the estimate still runs and
says where its numbers came from. Only the fields the estimate reads are kept; each entry
was copied from the model's ``config.json`` on the Hugging Face hub. The weights are never
needed for an estimate.
"""

from __future__ import annotations

# DeepSeek-R1-Distill-Qwen-1.5B's config.json; DeepScaleR-1.5B-Preview is a fine-tune of it
# with the same architecture (its config.json differs only in bookkeeping fields).
_R1_DISTILL_QWEN_1_5B = dict(
    model_type="qwen2", hidden_size=1536, num_hidden_layers=28, num_attention_heads=12, num_key_value_heads=2,
    intermediate_size=8960, vocab_size=151936, tie_word_embeddings=False, max_position_embeddings=131072,
)
KNOWN_MODELS: dict[str, dict] = {
    "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B": _R1_DISTILL_QWEN_1_5B,
    "agentica-org/DeepScaleR-1.5B-Preview": _R1_DISTILL_QWEN_1_5B,
    "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B": dict(
        model_type="qwen2", hidden_size=3584, num_hidden_layers=28, num_attention_heads=28, num_key_value_heads=4,
        intermediate_size=18944, vocab_size=152064, tie_word_embeddings=False, max_position_embeddings=131072,
    ),
}


def offline_config(name: str):
    """A transformers config built from :data:`KNOWN_MODELS` (None for a model not listed)."""
    facts = KNOWN_MODELS.get(name)
    if facts is None:
        return None
    from transformers import AutoConfig

    fields = dict(facts)
    return AutoConfig.for_model(fields.pop("model_type"), **fields)
