"""Small, validated settings dataclasses for the GRPO module (YAML: ``model.grpo``, ``model.optim``).

Every check names the config key it is about, so a bad YAML fails at parse time with a
message that says what to change.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

Aggregation = Literal["token_mean", "sequence_mean", "constant"]


@dataclass
class GRPOConfig:
    """GRPO knobs shared by both LAPO stages."""

    group_size: int = 8
    """G: completions sampled per problem."""
    clip_low: float = 0.2
    """PPO clip below: ratio >= 1 - clip_low."""
    clip_high: float = 0.2
    """PPO clip above: ratio <= 1 + clip_high (raise it for DAPO's clip-higher)."""
    kl_coef: float = 1e-4
    """beta of the k3 KL penalty; 0 skips the reference forward entirely."""
    num_iterations: int = 1
    """mu: optimizer passes over each rollout batch (1 = on-policy, no old log-prob pass)."""
    micro_batch_size: int = 8
    """Rollouts per forward/backward; gradients accumulate over the whole rollout batch."""
    token_aggregation: Aggregation = "token_mean"
    """token_mean (DAPO), sequence_mean (original GRPO) or constant (Dr. GRPO)."""
    max_grad_norm: float | None = 1.0
    """Gradient-norm clip per optimizer step; null disables it."""
    adv_eps: float = 1e-4
    """Added to the group std in the advantage denominator."""
    shared_prefix: bool = True
    """Training/reference forwards run each group's prompt once (same loss); false = plain padded forward."""

    def __post_init__(self) -> None:
        problems = []
        if self.group_size < 2:
            problems.append(f"model.grpo.group_size must be >= 2 (GRPO compares completions), got {self.group_size}")
        if not (0 <= self.clip_low < 1 and self.clip_high >= 0):
            problems.append(f"model.grpo.clip_low/clip_high out of range: {self.clip_low}, {self.clip_high}")
        if self.kl_coef < 0:
            problems.append(f"model.grpo.kl_coef must be >= 0, got {self.kl_coef}")
        if self.num_iterations < 1:
            problems.append(f"model.grpo.num_iterations must be >= 1, got {self.num_iterations}")
        if self.micro_batch_size < 1:
            problems.append(f"model.grpo.micro_batch_size must be >= 1, got {self.micro_batch_size}")
        if problems:
            raise ValueError("invalid GRPO config:\n  " + "\n  ".join(problems))


@dataclass
class OptimConfig:
    """AdamW with linear warmup then cosine decay."""

    lr: float = 1e-5
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.99)
    """Adam betas; the official LAPO runs use (0.9, 0.95) (OpenRLHF's default)."""
    warmup_steps: int = 0
    """Optimizer steps of linear warmup from 0 (set this or warmup_ratio, not both)."""
    warmup_ratio: float = 0.0
    """Warmup as a share of all optimizer steps, rounded up; the official runs use 0.03."""
    min_lr_ratio: float = 0.1
    """Cosine decays to lr * min_lr_ratio at the last optimizer step."""

    def __post_init__(self) -> None:
        problems = []
        if self.lr <= 0:
            problems.append(f"model.optim.lr must be > 0, got {self.lr}")
        if self.warmup_steps < 0:
            problems.append(f"model.optim.warmup_steps must be >= 0, got {self.warmup_steps}")
        if not 0 <= self.warmup_ratio < 1:
            problems.append(f"model.optim.warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.warmup_steps and self.warmup_ratio:
            problems.append("set model.optim.warmup_steps or model.optim.warmup_ratio, not both "
                            f"(got {self.warmup_steps} and {self.warmup_ratio})")
        if not 0 <= self.min_lr_ratio <= 1:
            problems.append(f"model.optim.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        if not all(0 <= b < 1 for b in self.betas):
            problems.append(f"model.optim.betas must both be in [0, 1), got {self.betas}")
        if problems:
            raise ValueError("invalid optimizer config:\n  " + "\n  ".join(problems))

    def warmup_for(self, total_steps: int) -> int:
        """Warmup optimizer steps for a run of ``total_steps``: e.g. ratio 0.03 of 100 -> 3."""
        return self.warmup_steps or math.ceil(self.warmup_ratio * total_steps)

    def build(self, params, total_steps: int):
        """AdamW over ``params`` and its LambdaLR schedule for ``total_steps`` optimizer steps."""
        opt = torch.optim.AdamW(params, lr=self.lr, betas=tuple(self.betas), weight_decay=self.weight_decay)
        warmup, floor = self.warmup_for(total_steps), self.min_lr_ratio

        def lr_factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
            return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

        return opt, torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
