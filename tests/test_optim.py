"""OptimConfig: the AdamW settings and the warmup/cosine schedule both stages and SFT use."""

import pytest
import torch

from lapo_lightning.config import OptimConfig


def _lrs(cfg: OptimConfig, total: int) -> list[float]:
    opt, sched = cfg.build([torch.nn.Parameter(torch.zeros(1))], total)
    lrs = []
    for _ in range(total):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs


def test_warmup_ratio_is_a_rounded_up_share_of_all_steps():
    # 3% of 100 steps -> 3 warmup steps: lr/3, 2lr/3, lr, then cosine from lr down to lr * 0.1
    lrs = _lrs(OptimConfig(lr=1.0, warmup_ratio=0.03), 100)
    assert lrs[:4] == pytest.approx([1 / 3, 2 / 3, 1.0, 1.0])
    assert lrs[-1] == pytest.approx(0.1, abs=1e-3)
    assert OptimConfig(warmup_ratio=0.03).warmup_for(10) == 1  # ceil(0.3)
    assert OptimConfig(warmup_steps=7).warmup_for(10) == 7


def test_warmup_steps_replace_the_default_ratio():
    # The default ratio is the official 0.03; a fixed count set beside it wins, with no error.
    assert OptimConfig().warmup_for(100) == 3
    assert OptimConfig(warmup_steps=5).warmup_for(100) == 5
    assert OptimConfig(warmup_ratio=0).warmup_for(100) == 0


def test_betas_reach_adamw():
    opt, _ = OptimConfig(betas=(0.9, 0.95)).build([torch.nn.Parameter(torch.zeros(1))], 10)
    assert opt.param_groups[0]["betas"] == (0.9, 0.95)


def test_bad_settings_are_all_named_at_once():
    with pytest.raises(ValueError) as err:
        OptimConfig(lr=0, warmup_steps=-1, warmup_ratio=1.5, betas=(0.9, 1.5))
    message = str(err.value)
    for key in ("model.optim.lr", "model.optim.warmup_steps", "model.optim.warmup_ratio", "model.optim.betas"):
        assert key in message
