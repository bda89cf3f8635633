"""Chunked log-probs through the output head (lapo_lightning.algo.head_logprobs) against the
full-logits computation: values, the gradient to the hidden states and to a trainable head,
every chunk size, temperature, and no full [rows, T, V] tensor at any time.
Run: pytest tests/algo/test_head_logprobs.py -q
"""

import pytest
import torch
from torch.testing import assert_close
from torch.utils._python_dispatch import TorchDispatchMode

from lapo_lightning.algo import head_logprobs, token_logprobs

N, T, H, V = 3, 7, 16, 50


def inputs(seed=0, bias=False):
    torch.manual_seed(seed)
    hidden = torch.randn(N, T, H, requires_grad=True)
    head = torch.nn.Linear(H, V, bias=bias)
    head.requires_grad_(False)
    return hidden, head, torch.randint(0, V, (N, T))


class LoraHead(torch.nn.Module):
    """A frozen linear plus a trainable low-rank branch, as peft puts on an adapted head."""

    def __init__(self, base: torch.nn.Linear, r: int = 4) -> None:
        super().__init__()
        self.base, self.a, self.b = base, torch.nn.Linear(H, r, bias=False), torch.nn.Linear(r, V, bias=False)
        torch.nn.init.normal_(self.b.weight, std=0.1)

    def forward(self, x):
        return self.base(x) + self.b(self.a(x))


def grads(fn, tensors):
    for t in tensors:
        t.grad = None
    out = fn()
    weights = torch.linspace(-1, 2, out.numel()).view_as(out)  # an upstream gradient that is not all ones
    (out * weights).sum().backward()
    return out.detach(), [t.grad.clone() for t in tensors]


@pytest.mark.parametrize("chunk", [1, 4, 21, 1000])
@pytest.mark.parametrize("temperature", [1.0, 0.6])
@pytest.mark.parametrize("bias", [False, True])
def test_frozen_linear_head_equals_full_logits(chunk, temperature, bias):
    hidden, head, targets = inputs(bias=bias)
    want, (want_grad,) = grads(lambda: token_logprobs(head(hidden), targets, temperature), [hidden])
    got, (got_grad,) = grads(lambda: head_logprobs(hidden, head, targets, temperature, chunk), [hidden])
    assert got.dtype == torch.float32 and got.shape == (N, T)
    assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert_close(got_grad, want_grad, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("chunk", [1, 5, 1000])
def test_trainable_head_gets_the_same_gradients(chunk):
    hidden, base, targets = inputs(seed=1)
    head = LoraHead(base)
    tensors = [hidden, head.a.weight, head.b.weight]
    want, want_grads = grads(lambda: token_logprobs(head(hidden), targets, 0.7), tensors)
    got, got_grads = grads(lambda: head_logprobs(hidden, head, targets, 0.7, chunk), tensors)
    assert_close(got, want, rtol=1e-5, atol=1e-5)
    for g, w in zip(got_grads, want_grads):
        assert_close(g, w, rtol=1e-5, atol=1e-5)


def test_no_grad_values_and_bfloat16_head():
    hidden, head, targets = inputs(seed=2)
    with torch.no_grad():
        assert_close(head_logprobs(hidden, head, targets, chunk_tokens=3), token_logprobs(head(hidden), targets))
        head16, hidden16 = head.to(torch.bfloat16), hidden.detach().bfloat16()
        got = head_logprobs(hidden16, head16, targets, chunk_tokens=3)
        assert got.dtype == torch.float32  # the log-softmax accumulates in fp32
        assert_close(got, token_logprobs(head16(hidden16), targets))


def test_empty_and_bad_settings():
    hidden, head, _ = inputs()
    assert head_logprobs(hidden[:, :0], head, torch.zeros(N, 0, dtype=torch.long)).shape == (N, 0)
    with pytest.raises(ValueError, match="chunk_tokens"):
        head_logprobs(hidden, head, torch.zeros(N, T, dtype=torch.long), chunk_tokens=0)
    with pytest.raises(ValueError, match="temperature"):
        head_logprobs(hidden, head, torch.zeros(N, T, dtype=torch.long), temperature=0)


class LargestVocabTensor(TorchDispatchMode):
    """Records the most rows (elements / V) of any tensor an op produces whose last dimension is V
    (views of the head's own weights, e.g. its transpose, aside)."""

    def __init__(self, vocab: int, head: torch.nn.Module) -> None:
        super().__init__()
        self.vocab, self.rows = vocab, 0
        self.weights = {p.untyped_storage().data_ptr() for p in head.parameters()}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(t, torch.Tensor) and t.dim() and t.shape[-1] == self.vocab \
                    and t.untyped_storage().data_ptr() not in self.weights:
                self.rows = max(self.rows, t.numel() // self.vocab)
        return out


@pytest.mark.parametrize("trainable", [False, True])
def test_no_tensor_holds_more_than_one_chunk_of_logits(trainable):
    hidden, head, targets = inputs(seed=3)
    head = LoraHead(head) if trainable else head
    with LargestVocabTensor(V, head) as seen:
        out = head_logprobs(hidden, head, targets, chunk_tokens=4)
        out.sum().backward()
    assert 0 < seen.rows <= 4, seen.rows
    with LargestVocabTensor(V, head) as full:  # the check itself sees the full-logits path's tensors
        token_logprobs(head(hidden), targets).sum().backward()
    assert full.rows >= N * T
