"""Per-token log-probs from final hidden states, through the output head a chunk of positions
at a time: no ``[rows, T, V]`` logits tensor ever exists, in any dtype, forward or backward.

Called by every training-time log-prob pass of the GRPO module (the policy pass with
gradients, the reference and old-policy passes, the shared-prefix forward) on the decoder's
final (normed) hidden states. Not a paper equation: plumbing that must be exact. It equals
``token_logprobs(head(hidden), targets, temperature)`` (tested to 1e-5 on the log-probs, the
loss and every gradient), but at a 151,936-token vocabulary the full logits of one 4-row
micro-batch of 4,096-token completions are 10 GB in fp32 (and their gradient as much again);
here the largest temporary is one chunk's ``[chunk, V]``.

Two backward strategies, picked by what the head is:
- **frozen ``nn.Linear``** (the usual case: LoRA on the decoder, the head frozen, tied or
  not): the forward pass also computes each position's gradient with respect to its hidden
  state, ``d logp / d h = (W[y] - softmax @ W) / temperature`` ([n, H], the size of the
  hidden states), and backward only scales it by the incoming gradient. The head's matmuls
  run twice per chunk (logits, then softmax @ W), exactly as many as a plain forward and
  backward through full logits: nothing is recomputed.
- **anything else** (a LoRA on the head, a trainable bias, a quantized head): each chunk runs
  under non-reentrant activation checkpointing, so its logits are recomputed in backward
  (one more head pass) and gradients reach the head's own parameters through autograd.

Log-softmax is accumulated in fp32 whatever the head's dtype (bf16 on a GPU): logits are
cast up chunk by chunk, as ``token_logprobs`` does.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

DEFAULT_CHUNK_TOKENS = 512
"""Positions per chunk: at V 151,936 one fp32 ``[512, V]`` copy is 311 MB, and a GPU matmul of
512 x hidden x V is already large enough to run at full speed."""


def head_logprobs(hidden: Tensor, head: torch.nn.Module, targets: Tensor, temperature: float = 1.0,
                  chunk_tokens: int = DEFAULT_CHUNK_TOKENS) -> Tensor:
    """[n, t] float32 ``log softmax(head(hidden) / temperature)[.., targets]``.

    hidden [n, t, H] aligned with targets [n, t] (position i's hidden state predicts
    targets[:, i]; padding ids must still be valid vocabulary ids, mask them afterwards);
    head maps H -> V (``nn.Linear`` or any module, e.g. a peft LoRA layer).
    Example: hidden [[[1., 0.]]], head weight [[0., 0.], [0., 0.]] (V 2), targets [[1]] -> [[log 0.5]].
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if chunk_tokens < 1:
        raise ValueError(f"chunk_tokens must be >= 1, got {chunk_tokens}")
    n, t = targets.shape
    flat, flat_targets = hidden.reshape(n * t, hidden.shape[-1]), targets.reshape(n * t)
    if n * t == 0:
        return hidden.new_zeros((n, t), dtype=torch.float32)
    trainable_head = any(p.requires_grad for p in head.parameters())
    if not torch.is_grad_enabled() or not (flat.requires_grad or trainable_head):
        with torch.no_grad():
            out = torch.cat([_chunk_logprobs_no_grad(head(h), y, temperature)[0]
                             for h, y in zip(flat.split(chunk_tokens), flat_targets.split(chunk_tokens))])
    elif type(head) is torch.nn.Linear and not trainable_head:
        out = _FrozenLinearLogprobs.apply(flat, head.weight, head.bias, flat_targets, temperature, chunk_tokens)
    else:
        out = torch.cat([checkpoint(_module_chunk_logprobs, head, h, y, temperature, use_reentrant=False)
                         for h, y in zip(flat.split(chunk_tokens), flat_targets.split(chunk_tokens))])
    return out.view(n, t)


def _chunk_logprobs(logits: Tensor, targets: Tensor, temperature: float) -> Tensor:
    """[c] fp32 log-probs of ``targets`` [c] under ``logits`` [c, V], through autograd (the trainable-head path)."""
    scaled = logits.float()
    if temperature != 1.0:
        scaled = scaled / temperature
    return scaled.gather(-1, targets[:, None]).squeeze(-1) - torch.logsumexp(scaled, dim=-1)


def _chunk_logprobs_no_grad(logits: Tensor, targets: Tensor, temperature: float) -> tuple[Tensor, Tensor]:
    """(log-probs [c], softmax [c, V]) of ``targets`` [c] under ``logits`` [c, V], both fp32.

    Outside autograd only: it works in place in one fp32 copy of the logits (none when they
    are fp32 already), so a chunk costs 4 bytes per logit here, where ``torch.logsumexp``
    would add two more fp32 temporaries. Same maths: log-sum-exp shifted by the row's maximum.
    """
    scaled = logits.float()
    if temperature != 1.0:
        scaled = scaled.div_(temperature)
    picked = scaled.gather(-1, targets[:, None]).squeeze(-1)
    top = scaled.amax(dim=-1, keepdim=True)  # [c, 1]
    probs = scaled.sub_(top).exp_()  # exp(x - max), in place
    total = probs.sum(dim=-1, keepdim=True)
    return picked - (top + total.log()).squeeze(-1), probs.div_(total)


def _module_chunk_logprobs(head: torch.nn.Module, hidden: Tensor, targets: Tensor, temperature: float) -> Tensor:
    return _chunk_logprobs(head(hidden), targets, temperature)


class _FrozenLinearLogprobs(torch.autograd.Function):
    """Log-probs through a frozen linear head, with ``d logp / d hidden`` computed in forward."""

    @staticmethod
    def forward(ctx, hidden: Tensor, weight: Tensor, bias: Tensor | None, targets: Tensor, temperature: float,
                chunk_tokens: int) -> Tensor:
        out = hidden.new_empty(targets.shape, dtype=torch.float32)  # [n]
        grad_hidden = torch.empty_like(hidden)  # [n, H]: d out[i] / d hidden[i]
        for start in range(0, len(targets), chunk_tokens):
            rows = slice(start, start + chunk_tokens)
            h, y = hidden[rows], targets[rows]
            logprobs, probs = _chunk_logprobs_no_grad(torch.nn.functional.linear(h, weight, bias), y, temperature)
            out[rows] = logprobs
            # d logp / d logits = onehot(y) - softmax, built in place over the softmax.
            probs.neg_().scatter_add_(-1, y[:, None], torch.ones_like(y[:, None], dtype=probs.dtype))
            grad_hidden[rows] = (probs.to(weight.dtype) @ weight).div_(temperature)  # [c, H]
            del probs  # before the next chunk's logits exist: one [c, V] buffer alive at a time, not two
        ctx.save_for_backward(grad_hidden)
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        (grad_hidden,) = ctx.saved_tensors
        return grad_hidden * grad_out[:, None].to(grad_hidden.dtype), None, None, None, None, None
