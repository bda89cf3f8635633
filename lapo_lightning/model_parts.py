"""The two halves of a causal LM that the training forwards call separately: the decoder
(embeddings, layers, final norm -> hidden states) and the output head (hidden -> logits).

``GRPOModule.completion_logprobs`` and :mod:`lapo_lightning.shared_prefix` run the decoder,
then :func:`lapo_lightning.algo.head_logprobs` takes the hidden states through the head a
chunk of positions at a time, so the full-vocabulary logits never exist. Reached through a
PEFT wrapper: its LoRA layers live inside these same modules, and switching adapters (the
reference pass) acts on them in place.
"""

from __future__ import annotations

import torch

# Config keys of architectures whose causal-LM forward does more to the logits than the head
# (Gemma's soft-capping, Cohere's scale): the chunked path would silently skip that step.
LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "logits_scaling")


def causal_lm(model: torch.nn.Module) -> torch.nn.Module:
    """The transformers ``*ForCausalLM`` inside ``model`` (itself, or a PEFT model's base)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def decoder_and_head(model: torch.nn.Module) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(decoder, head) of a causal LM: ``decoder(...).last_hidden_state`` fed to ``head`` gives
    the model's logits. Refuses a model whose forward transforms the logits further."""
    lm = causal_lm(model)
    config = lm.config.get_text_config() if hasattr(lm.config, "get_text_config") else lm.config
    extra = [key for key in LOGIT_TRANSFORMS if getattr(config, key, None) not in (None, 1.0)]
    if extra:
        raise ValueError(f"{type(lm).__name__} transforms its logits after the output head ({', '.join(extra)}), "
                         "which the chunked log-prob path does not reproduce; this architecture is not supported")
    decoder, head = lm.get_decoder(), lm.get_output_embeddings()
    if decoder is None or head is None:
        raise ValueError(f"{type(lm).__name__} does not expose its decoder and output head "
                         "(get_decoder / get_output_embeddings); it cannot be trained here")
    return decoder, head
