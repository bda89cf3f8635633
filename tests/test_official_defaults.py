"""The built-in defaults are the paper's and the official LAPO code's, so that a config written from
scratch trains as the paper did; the few that differ are listed in docs/faithfulness.md.

Sources: "paper" is arXiv 2507.15758; "official" is the ZJU-REAL/LAPO repository (an OpenRLHF
fork): its training scripts config/deepscaler-1.5B-grpo-stage{1,2}.sh, their reward functions
examples/scripts/reward_func_stage{1,2}.py, and the OpenRLHF defaults the scripts do not override
(openrlhf/cli/train_ppo_ray.py, openrlhf/trainer/ray/ppo_actor.py, openrlhf/models/loss.py).

Run: pytest tests/test_official_defaults.py -q
"""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from lapo_lightning.config import GRPOConfig, OptimConfig
from lapo_lightning.prompts import BUDGET_SENTENCE, R1_SYSTEM, PlainPrompt
from lapo_lightning.rewards import BudgetGaussian, LengthBand
from lapo_lightning.rollout import GenerationConfig

ROOT = Path(__file__).resolve().parents[1]


def default(cls, name: str):
    """A constructor argument's default (dataclass field or keyword)."""
    return inspect.signature(cls).parameters[name].default


# (setting, built-in default, official value, where the official value comes from)
OFFICIAL = [
    ("model.optim.betas", tuple(default(OptimConfig, "betas")), (0.9, 0.95),
     "official: train_ppo_ray.py --adam_betas default, not overridden by the scripts"),
    ("model.optim.warmup_ratio", default(OptimConfig, "warmup_ratio"), 0.03,
     "official: train_ppo_ray.py --lr_warmup_ratio default"),
    ("model.optim.min_lr_ratio", default(OptimConfig, "min_lr_ratio"), 0.1,
     "official: ppo_actor.py, cosine_with_min_lr schedule with min_lr = 0.1 x lr"),
    ("model.optim.weight_decay", default(OptimConfig, "weight_decay"), 0.0,
     "official: train_ppo_ray.py --l2 default"),
    ("model.grpo.group_size", default(GRPOConfig, "group_size"), 8,
     "paper: 8 rollouts per problem; official scripts --n_samples_per_prompt 8"),
    ("model.grpo.kl_coef", default(GRPOConfig, "kl_coef"), 1e-4,
     "official scripts --init_kl_coef 1e-4 with --use_kl_loss --kl_estimator k3"),
    ("model.grpo.clip_low", default(GRPOConfig, "clip_low"), 0.2, "official: train_ppo_ray.py --eps_clip default"),
    ("model.grpo.clip_high", default(GRPOConfig, "clip_high"), 0.2, "official: train_ppo_ray.py --eps_clip default"),
    ("model.grpo.max_grad_norm", default(GRPOConfig, "max_grad_norm"), 1.0,
     "official: train_ppo_ray.py --max_norm default"),
    ("model.grpo.num_iterations", default(GRPOConfig, "num_iterations"), 1,
     "official scripts --max_epochs 1: one pass over each generation"),
    ("model.grpo.token_aggregation", default(GRPOConfig, "token_aggregation"), "token_mean",
     "official: loss.py PolicyLoss(token_level_loss=True)"),
    ("model.generation.temperature", default(GenerationConfig, "temperature"), 1.0,
     "official: train_ppo_ray.py --temperature default"),
    ("model.generation.top_p", default(GenerationConfig, "top_p"), 1.0, "official: train_ppo_ray.py --top_p default"),
    ("LengthBand.weight (alpha)", default(LengthBand, "weight"), 0.7,
     "paper stage 1; official reward_func_stage1.py: 1.0 * acc + 0.7 * len_reward"),
    ("LengthBand.low_pct", default(LengthBand, "low_pct"), 30.0,
     "paper stage 1 (P30); official reward_func_stage1.py: np.percentile(lengths, 30)"),
    ("LengthBand.high_pct", default(LengthBand, "high_pct"), 70.0,
     "paper stage 1 (P70); official reward_func_stage1.py: np.percentile(lengths, 70)"),
    ("LengthBand.decay", default(LengthBand, "decay"), 100.0,
     "paper stage 1; official reward_func_stage1.py: 1.0 - margin / 100.0"),
    ("BudgetGaussian.weight (beta)", default(BudgetGaussian, "weight"), 0.8,
     "official reward_func_stage2.py: 1.0 * acc + 0.8 * len_reward (the paper's Table 5 says 0.7)"),
    ("BudgetGaussian.sigma", default(BudgetGaussian, "sigma"), 120.0, "official reward_func_stage2.py: sigma = 120"),
    ("PlainPrompt.placement", default(PlainPrompt, "placement"), "think",
     "official prompts_dataset.py: the budget sentence right after 'Assistant: <think>'"),
    ("PlainPrompt budget sentence", BUDGET_SENTENCE, " I will answer the question with {n} tokens.",
     "official prompts_dataset.py, stage-2 lines"),
    ("PlainPrompt.system (start)", default(PlainPrompt, "system")[:60], R1_SYSTEM[:60],
     "official prompts_dataset.py system_prompt"),
]

# Defaults that differ on purpose: (setting, built-in default, official value, why). Each is
# explained in docs/faithfulness.md, which must name the setting.
DEPARTURES = [
    ("model.optim.lr", default(OptimConfig, "lr"), 1e-6,
     "the paper fine-tunes every weight; this trainer updates a LoRA adapter, which needs a larger step"),
    ("model.grpo.adv_eps", default(GRPOConfig, "adv_eps"), 1e-9,
     "1e-9 turns groups whose rewards differ only by float rounding into unit-size advantages"),
    ("model.grpo.steps_per_generation", default(GRPOConfig, "steps_per_generation"), 8,
     "k steps' worth of problems are sampled at once: 8 makes the smallest run generate 64 problems a batch"),
    ("model.generation.max_new_tokens", default(GenerationConfig, "max_new_tokens"), 4096,
     "the cap sets the cost of every run; the paper configs set 4096, small runs much less"),
]


@pytest.mark.parametrize("setting, ours, official, source", OFFICIAL, ids=[row[0] for row in OFFICIAL])
def test_default_is_the_official_value(setting, ours, official, source):
    assert ours == official, f"{setting}: default {ours!r}, official {official!r} ({source})"


@pytest.mark.parametrize("setting, ours, official, why", DEPARTURES, ids=[row[0] for row in DEPARTURES])
def test_each_departing_default_is_documented(setting, ours, official, why):
    assert ours != official, f"{setting} now equals the official {official!r}: move it to OFFICIAL"
    text = (ROOT / "docs" / "faithfulness.md").read_text(encoding="utf-8")
    assert f"`{setting}`" in text, f"docs/faithfulness.md must explain the default of {setting} ({why})"
