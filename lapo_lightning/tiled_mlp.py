"""Decoder MLPs over a chunk of positions at a time while gradients are on.

Where it sits: ``GRPOModule.configure_model`` calls :func:`tile_mlps` once on the loaded policy.
From then on, every MLP forward that records gradients (the training forward, and the layer
recomputation of gradient checkpointing) runs ``chunk_tokens`` positions at a time, each chunk
under its own non-reentrant checkpoint. Without it, a layer's MLP holds four ``[tokens,
intermediate]`` tensors at once (gate, up, activation, product: 8,960 wide for a 1.5B Qwen2),
and checkpointed backward recomputes them all with their gradients: after the chunked output
head, that was the training pass's peak. Tiled, one chunk's exist at a time. The cost is one
more MLP forward per layer in backward (the chunk's recomputation). Generation and the no-grad
reference passes are untouched.

The numbers are the MLP's own: an MLP acts on each position alone, so splitting positions
changes nothing but the matmul blocking (tested against the untiled forward to 1e-5).
"""

from __future__ import annotations

import torch
from torch.utils.checkpoint import checkpoint

from lapo_lightning.model_parts import decoder_and_head

DEFAULT_MLP_CHUNK_TOKENS = 2048


def tiled(forward, chunk_tokens: int):
    """``forward`` (an MLP's ``[..., hidden] -> [..., hidden]``), run over ``chunk_tokens``
    positions at a time under checkpoints when gradients are on and the input is longer."""

    def run(x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        if args or kwargs or not torch.is_grad_enabled() or x.shape[:-1].numel() <= chunk_tokens:
            return forward(x, *args, **kwargs)
        flat = x.reshape(-1, x.shape[-1])
        parts = [checkpoint(forward, part, use_reentrant=False) for part in flat.split(chunk_tokens)]
        return torch.cat(parts).reshape(*x.shape[:-1], -1)

    return run


def tile_mlps(model: torch.nn.Module, chunk_tokens: int | None = DEFAULT_MLP_CHUNK_TOKENS) -> int:
    """Tile the ``mlp`` of every decoder layer of ``model`` (a causal LM or its PEFT wrapper);
    returns how many were tiled (0 with ``chunk_tokens`` None, or for layers without an ``mlp``).
    Idempotent: an MLP already tiled is left as it is."""
    if chunk_tokens is None:
        return 0
    decoder, _ = decoder_and_head(model)
    count = 0
    for layer in getattr(decoder, "layers", []):
        mlp = getattr(layer, "mlp", None)
        if mlp is None or getattr(mlp, "lapo_tiled", False):
            continue
        mlp.forward = tiled(mlp.forward, chunk_tokens)
        mlp.lapo_tiled = True
        count += 1
    return count
