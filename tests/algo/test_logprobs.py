"""Per-token log-probs (lapo_lightning.algo.logprobs): equality with the log_softmax-gather
reference, temperature, dtypes, the prompt/completion off-by-one and masked_mean.
Run: cd /work/main && HF_HUB_OFFLINE=1 .venv/bin/python -m pytest tests/algo -q
"""

import math

import pytest
import torch
from torch.testing import assert_close

from lapo_lightning.algo import completion_logprobs, masked_mean, token_logprobs


def _reference(logits, targets, temperature=1.0):
    lp = torch.log_softmax(logits.float() / temperature, dim=-1)
    return lp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)


def test_by_hand():
    logits = torch.tensor([[[0.0, 0.0], [math.log(3.0), 0.0]]])  # p = [.5, .5], [.75, .25]
    targets = torch.tensor([[1, 0]])
    assert_close(token_logprobs(logits, targets), torch.tensor([[math.log(0.5), math.log(0.75)]]))


@pytest.mark.parametrize("temperature", [1.0, 0.6])
def test_matches_log_softmax_gather(temperature):
    torch.manual_seed(0)
    logits = torch.randn(3, 5, 11) * 4
    targets = torch.randint(0, 11, (3, 5))
    out = token_logprobs(logits, targets, temperature)
    assert out.dtype == torch.float32 and out.shape == (3, 5)
    assert_close(out, _reference(logits, targets, temperature))


def test_bfloat16_input_upcast():
    torch.manual_seed(0)
    logits = (torch.randn(2, 4, 50) * 5).bfloat16()
    targets = torch.randint(0, 50, (2, 4))
    out = token_logprobs(logits, targets)
    assert out.dtype == torch.float32
    assert_close(out, _reference(logits, targets))


def test_gradient_matches_reference():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 7, requires_grad=True)
    targets = torch.randint(0, 7, (2, 3))
    token_logprobs(logits, targets).sum().backward()
    g1 = logits.grad.clone()
    logits.grad = None
    _reference(logits, targets).sum().backward()
    assert_close(g1, logits.grad)


def test_completion_logprobs_off_by_one():
    torch.manual_seed(0)
    n, p, t, v = 2, 3, 4, 9
    logits_full = torch.randn(n, p + t, v)
    completion = torch.randint(0, v, (n, t))
    out = completion_logprobs(logits_full, completion, prompt_len=p)
    assert_close(out, _reference(logits_full[:, p - 1 : -1], completion))
    # position p-1 (last prompt token) scores completion token 0
    assert_close(out[:, 0], torch.log_softmax(logits_full[:, p - 1], -1)[torch.arange(n), completion[:, 0]])
    with pytest.raises(ValueError):
        completion_logprobs(logits_full, completion, prompt_len=0)


def test_masked_mean():
    x = torch.tensor([[1.0, 3.0, 9.0], [float("inf"), 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 0], [0, 0, 0]]).bool()
    assert_close(masked_mean(x[:1], mask[:1]), torch.tensor(2.0))
    assert_close(masked_mean(x, mask, dim=1), torch.tensor([2.0, 0.0]))  # empty row -> 0
