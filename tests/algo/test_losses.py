"""GRPO loss pieces (lapo_lightning.algo.losses): clipped surrogate and k3 KL by hand, the
three token aggregations by hand and under micro-batch splits, the REINFORCE-gradient
invariant at ratio 1, and grpo_loss bookkeeping.
Run: cd /work/main && HF_HUB_OFFLINE=1 .venv/bin/python -m pytest tests/algo -q
"""

import math

import pytest
import torch
from torch.testing import assert_close

from lapo_lightning.algo import (
    AGGREGATIONS,
    aggregate,
    clipped_surrogate,
    grpo_loss,
    k3_kl,
    token_logprobs,
)


def test_clipped_surrogate_by_hand():
    ratios = torch.tensor([1.5, 1.5, 0.5, 0.5, 1.0, 1.0])
    adv = torch.tensor([1.0, -1.0, 1.0, -1.0, 2.0, -3.0])
    logp = torch.log(ratios).unsqueeze(-1)
    loss, clipped = clipped_surrogate(logp, torch.zeros_like(logp), adv)
    # r=1.5,A=+1 -> min(1.5, 1.2) = 1.2; A=-1 -> min(-1.5, -1.2) = -1.5; r=.5,A=+1 -> .5;
    # A=-1 -> min(-.5, -.8) = -.8; ratio 1 -> A.
    assert_close(loss.squeeze(-1), torch.tensor([-1.2, 1.5, -0.5, 0.8, -2.0, 3.0]))
    assert clipped.squeeze(-1).tolist() == [True, False, False, True, False, False]


def test_clipped_surrogate_asymmetric():
    logp = torch.log(torch.tensor([[1.25]]))
    loss, clipped = clipped_surrogate(logp, torch.zeros(1, 1), torch.tensor([1.0]), 0.2, 0.28)
    assert_close(loss, torch.tensor([[-1.25]]))
    assert not clipped.item()


def test_k3_kl():
    logp = torch.log(torch.tensor([[0.25, 0.5]]))
    ref = torch.log(torch.tensor([[0.5, 0.5]]))
    assert_close(k3_kl(logp, ref), torch.tensor([[1.0 - math.log(2.0), 0.0]]))
    torch.manual_seed(0)
    a, b = torch.randn(4, 6), torch.randn(4, 6)
    assert (k3_kl(a, b) > 0).all()
    assert torch.equal(k3_kl(a, a), torch.zeros(4, 6))
    # a huge gap stays finite thanks to the clamp
    assert torch.isfinite(k3_kl(torch.tensor([[-200.0]]), torch.tensor([[0.0]]))).all()


PER_TOKEN = torch.tensor([[1.0, 2.0, 3.0, 0.0], [4.0, 0.0, 0.0, 0.0]])
MASK = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0]]).bool()
TOTALS = dict(total_tokens=4, total_sequences=2, max_tokens=4)


@pytest.mark.parametrize("name,expected", [("token_mean", 2.5), ("sequence_mean", 3.0), ("constant", 1.25)])
def test_aggregations_by_hand(name, expected):
    assert_close(aggregate(name, PER_TOKEN, MASK, **TOTALS), torch.tensor(expected))


def test_unknown_aggregation_lists_valid_names():
    with pytest.raises(ValueError, match="constant.*sequence_mean.*token_mean"):
        aggregate("mean", PER_TOKEN, MASK, **TOTALS)


@pytest.mark.parametrize("name", sorted(AGGREGATIONS))
def test_zero_length_rows_and_garbage_padding_give_no_nan(name):
    per_token = torch.tensor([[float("nan"), float("inf")], [1.0, 2.0]])
    mask = torch.tensor([[0, 0], [1, 0]]).bool()
    out = aggregate(name, per_token, mask, total_tokens=1, total_sequences=2, max_tokens=2)
    assert torch.isfinite(out)
    empty = aggregate(name, torch.zeros(0, 3), torch.zeros(0, 3, dtype=torch.bool),
                      total_tokens=0, total_sequences=0, max_tokens=3)
    assert empty.item() == 0.0


@pytest.mark.parametrize("name", sorted(AGGREGATIONS))
def test_micro_batch_split_sums_to_full_batch(name):
    torch.manual_seed(0)
    per_token = torch.randn(7, 5)
    mask = torch.arange(5) < torch.tensor([5, 3, 0, 1, 4, 2, 5]).unsqueeze(-1)
    totals = dict(total_tokens=int(mask.sum()), total_sequences=7, max_tokens=5)
    full = aggregate(name, per_token, mask, **totals)
    parts = sum(aggregate(name, per_token[s], mask[s], **totals) for s in (slice(0, 2), slice(2, 3), slice(3, 7)))
    assert_close(parts, full)


@pytest.mark.parametrize("name", sorted(AGGREGATIONS))
def test_ratio_one_gradient_is_reinforce(name):
    # On-policy, no clipping active: d loss / d logits == d aggregate(-A * logp) / d logits.
    torch.manual_seed(0)
    logits = torch.randn(4, 3, 6, requires_grad=True)
    targets = torch.randint(0, 6, (4, 3))
    mask = torch.arange(3) < torch.tensor([3, 1, 2, 3]).unsqueeze(-1)
    adv = torch.tensor([1.0, -0.5, 2.0, -1.5])
    totals = dict(total_tokens=int(mask.sum()), total_sequences=4, max_tokens=3)
    terms = grpo_loss(token_logprobs(logits, targets), None, None, adv, mask,
                      clip_low=0.2, clip_high=0.2, kl_coef=0.0, aggregation=name, **totals)
    terms.loss.backward()
    g_grpo = logits.grad.clone()
    logits.grad = None
    reinforce = -adv.unsqueeze(-1) * token_logprobs(logits, targets)
    aggregate(name, reinforce, mask, **totals).backward()
    assert_close(g_grpo, logits.grad)
    assert terms.clip_frac.item() == 0.0


def test_grpo_loss_terms():
    logp = torch.log(torch.tensor([[1.5, 1.0], [1.0, 1.0]])).requires_grad_()
    old = torch.zeros(2, 2)
    ref = torch.log(torch.tensor([[3.0, 2.0], [1.0, 1.0]]))  # d = log 2 on two tokens
    adv = torch.tensor([1.0, -1.0])
    mask = torch.tensor([[1, 1], [1, 0]]).bool()
    totals = dict(total_tokens=3, total_sequences=2, max_tokens=2)
    terms = grpo_loss(logp, old, ref, adv, mask, clip_low=0.2, clip_high=0.2, kl_coef=0.5,
                      aggregation="token_mean", **totals)
    # policy per token: -1.2 (clipped), -1, +1 -> sum -1.2 over 3 tokens
    assert_close(terms.policy_loss, torch.tensor(-1.2 / 3))
    assert_close(terms.kl, torch.tensor(2 * (1 - math.log(2.0)) / 3))
    assert_close(terms.clip_frac, torch.tensor(1 / 3))
    assert_close(terms.loss, terms.policy_loss + 0.5 * terms.kl)
    assert terms.loss.requires_grad and not terms.kl.requires_grad
    # kl_coef 0 or no reference -> the kl term is 0
    for ref_lp, coef in ((ref, 0.0), (None, 0.5)):
        t = grpo_loss(logp, old, ref_lp, adv, mask, kl_coef=coef, aggregation="token_mean", **totals)
        assert t.kl.item() == 0.0
        assert_close(t.loss, terms.policy_loss)
