"""The shape of a dense decoder that its memory depends on, read from its config alone.

Where it sits in the flow: the memory estimate (``lapo_lightning/safety/cost.py``), ``lapo check`` and
``lapo fit``'s start-up check call :func:`read_shape_and_source` before any weights load; it
reads the model's ``config.json`` (hub, cache or folder), or offline the facts shipped in
:mod:`lapo_lightning.models.known`.
"""

from __future__ import annotations

from dataclasses import dataclass

SUPPORTED = ("llama", "qwen2", "qwen3", "mistral")


class UnsupportedModel(ValueError):
    """The config is not an architecture whose parameters this module can count."""


@dataclass(frozen=True)
class ModelShape:
    """The numbers of a dense decoder that memory depends on, read from its config."""

    model_type: str
    hidden: int  # h
    layers: int  # L
    heads: int  # n_h, query heads
    kv_heads: int  # n_kv (GQA: fewer than n_h)
    head_dim: int  # d
    intermediate: int  # i, MLP width
    vocab: int  # V
    tied: bool  # lm_head shares the input embedding
    qkv_bias: bool
    o_bias: bool
    mlp_bias: bool
    qk_norm: bool  # Qwen3: an RMSNorm of width d on q and on k in every layer

    @classmethod
    def from_config(cls, config) -> ModelShape:
        """From a transformers ``PretrainedConfig`` (``AutoConfig.from_pretrained`` reads only config.json).

        Biases follow each architecture's modelling code: Qwen2 has q/k/v biases and none
        elsewhere; Llama and Qwen3 use ``attention_bias`` for q/k/v/o (Llama also
        ``mlp_bias``); Mistral has none.
        """
        config = config.get_text_config() if hasattr(config, "get_text_config") else config
        kind = getattr(config, "model_type", None)
        if kind not in SUPPORTED:
            raise UnsupportedModel(f"model_type {kind!r} (estimated: {', '.join(SUPPORTED)})")
        if any(getattr(config, key, 0) or 0 for key in ("num_experts", "num_local_experts", "n_routed_experts")):
            raise UnsupportedModel(f"{kind} with mixture-of-experts layers")
        heads = config.num_attention_heads
        attention_bias = bool(getattr(config, "attention_bias", False))
        return cls(
            model_type=kind,
            hidden=config.hidden_size,
            layers=config.num_hidden_layers,
            heads=heads,
            kv_heads=getattr(config, "num_key_value_heads", None) or heads,
            head_dim=getattr(config, "head_dim", None) or config.hidden_size // heads,
            intermediate=config.intermediate_size,
            vocab=config.vocab_size,
            tied=bool(getattr(config, "tie_word_embeddings", False)),
            qkv_bias=kind == "qwen2" or (kind in ("llama", "qwen3") and attention_bias),
            o_bias=kind in ("llama", "qwen3") and attention_bias,
            mlp_bias=kind == "llama" and bool(getattr(config, "mlp_bias", False)),
            qk_norm=kind == "qwen3",
        )


SHIPPED_FACTS = "the architecture facts shipped with lapo (lapo_lightning/models/known.py)"


class UnknownOffline(ValueError):
    """Neither the model's config.json nor shipped facts about it can be read here."""


def read_shape(model: str, trust_remote_code: bool = False) -> ModelShape:
    """The shape of a hub id, local folder or ``tiny:`` model, from its config.json alone."""
    return read_shape_and_source(model, trust_remote_code)[0]


def read_shape_and_source(model: str, trust_remote_code: bool = False) -> tuple[ModelShape, str]:
    """(shape, where it came from): the model's config.json (hub, cache or folder), else, for a
    model listed in :mod:`lapo_lightning.models.known`, its shipped facts (offline, nothing cached).
    Raises :class:`UnknownOffline` naming what to do when neither can be read."""
    from transformers import AutoConfig

    from lapo_lightning.models.known import KNOWN_MODELS, offline_config
    from lapo_lightning.policy import resolve_model  # the name resolution load_policy uses

    try:
        config = AutoConfig.from_pretrained(resolve_model(model), trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as err:  # not cached while offline, no such repo, no network
        config = offline_config(model)
        if config is None:
            first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
            raise UnknownOffline(
                f"model.policy.model: cannot read the config.json of {model!r} ({first}), and lapo ships no "
                f"architecture facts for it (it has them for {', '.join(sorted(KNOWN_MODELS))}); download the model "
                f"once (`hf download {model} config.json`) or point model.policy.model at a local folder") from None
        return ModelShape.from_config(config), SHIPPED_FACTS
    return ModelShape.from_config(config), "its config.json"
