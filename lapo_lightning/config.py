"""Small, validated settings dataclasses for the GRPO module (YAML: ``model.grpo``, ``model.optim``),
and the training rules that span several of them.

Every check names the config key it is about, so a bad YAML fails at parse time with a
message that says what to change. The rules live here once: ``problems()`` lists every
problem of a dataclass (``__post_init__`` raises :class:`ConfigError` with all of them), and
:func:`training_problems` checks the combinations a training run needs; ``lapo fit``'s
start-up check (``lapo_lightning/safety/preflight.py``) reports them all in one pass, one line each.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

from lapo_lightning.algo import DEFAULT_CHUNK_TOKENS
from lapo_lightning.tiled_mlp import DEFAULT_MLP_CHUNK_TOKENS

Aggregation = Literal["token_mean", "sequence_mean", "constant"]
AUTO = "auto"
"""A size chosen at start-up: the largest that fits the device by the memory estimate."""

MIN_TRAIN_NEW_TOKENS = 8
"""Smallest ``model.generation.max_new_tokens`` a training run accepts: below it nearly every
rollout is cut off before an answer, is graded wrong, and the run learns nothing."""


class ConfigError(ValueError):
    """Invalid settings; ``problems`` holds one line per problem, each naming its config key."""

    def __init__(self, what: str, problems: list[str]) -> None:
        super().__init__(f"invalid {what}:\n  " + "\n  ".join(problems))
        self.problems = list(problems)


def raise_problems(what: str, problems: list[str]) -> None:
    """Raise :class:`ConfigError` listing every problem, if there is any."""
    if problems:
        raise ConfigError(what, problems)


@dataclass
class GRPOConfig:
    """GRPO knobs shared by both LAPO stages."""

    group_size: int = 8
    """G: completions sampled per problem (paper and official runs: 8)."""
    clip_low: float = 0.2
    """PPO clip below: ratio >= 1 - clip_low (official: 0.2)."""
    clip_high: float = 0.2
    """PPO clip above: ratio <= 1 + clip_high (official: 0.2; raise it for DAPO's clip-higher)."""
    kl_coef: float = 1e-4
    """beta of the k3 KL penalty (paper and official runs: 1e-4); 0 skips the reference forward entirely."""
    num_iterations: int = 1
    """mu: optimizer passes over each generation's rollouts (official: 1; 1 = each rollout trains once)."""
    steps_per_generation: int = 1
    """k: optimizer steps per generation. Each training batch holds k x ``data.problems_per_step``
    problems, sampled at once; each problem's G rollouts are dealt at random, G / k to each of
    k mini-batches, and each mini-batch takes one optimizer step, so from the second step on
    the policy has moved and the importance ratio and clip act. Must divide ``group_size``.
    1 (the default, so small runs stay small) = one update per generation (ratio exactly 1);
    the official LAPO scripts use 8 (128 problems x 8 rollouts per generation, 8 steps of 128
    rollouts), as the paper configs do."""
    micro_batch_size: int | Literal["auto"] = 8
    """Rollouts per forward/backward; gradients accumulate over the whole rollout batch. ``auto``:
    the largest divisor of the rollout batch that fits the device by the start-up memory estimate."""
    token_aggregation: Aggregation = "token_mean"
    """token_mean (DAPO), sequence_mean (original GRPO) or constant (Dr. GRPO)."""
    max_grad_norm: float | None = 1.0
    """Gradient-norm clip per optimizer step (official: 1.0); null disables it."""
    adv_eps: float = 1e-4
    """Added to the group std in the advantage denominator; the official code adds 1e-9, which turns
    groups whose rewards differ only by float rounding into unit-size advantages (docs/faithfulness.md)."""
    shared_prefix: bool = True
    """Training/reference forwards run each group's prompt once (same loss); false = plain padded forward."""
    logprob_chunk_tokens: int = DEFAULT_CHUNK_TOKENS
    """Positions whose logits exist at once in the log-prob passes (the full-vocabulary logits of a
    micro-batch never do); the default suits any vocabulary and card, lower it only to save memory."""
    mlp_chunk_tokens: int | None = DEFAULT_MLP_CHUNK_TOKENS
    """Positions a decoder MLP computes at once while gradients are on (``tiled_mlp.py``): its
    wide intermediates exist for one chunk at a time, for one extra MLP forward in backward;
    null computes each micro-batch's MLPs whole."""

    allow_negative_reward_weights: bool = False
    """Opt-in for rewards with ``weight < 0`` (a penalty); off, a negative weight is refused as a
    likely sign slip: it would reward what the reward was written to discourage."""

    def __post_init__(self) -> None:
        raise_problems("GRPO config", self.problems())

    @property
    def updates_per_batch(self) -> int:
        """Optimizer steps one training batch (one generation) makes: mu x k."""
        return self.num_iterations * self.steps_per_generation

    def problems(self) -> list[str]:
        """Every problem with these settings, one line each (empty = valid)."""
        problems = []
        if self.group_size < 2:
            problems.append(f"model.grpo.group_size: must be >= 2, GRPO compares completions of one problem "
                            f"(got {self.group_size})")
        if not 0 <= self.clip_low < 1:
            problems.append(f"model.grpo.clip_low: must be in [0, 1) (got {self.clip_low})")
        if self.clip_high < 0:
            problems.append(f"model.grpo.clip_high: must be >= 0 (got {self.clip_high})")
        if self.kl_coef < 0:
            problems.append(f"model.grpo.kl_coef: must be >= 0 (got {self.kl_coef})")
        if self.num_iterations < 1:
            problems.append(f"model.grpo.num_iterations: must be >= 1 (got {self.num_iterations})")
        if self.steps_per_generation < 1:
            problems.append(f"model.grpo.steps_per_generation: must be >= 1 (got {self.steps_per_generation})")
        elif self.group_size % self.steps_per_generation:
            problems.append(f"model.grpo.steps_per_generation: must divide model.grpo.group_size "
                            f"({self.group_size}): each optimizer step trains on group_size / steps_per_generation "
                            f"rollouts of every problem of the generation (got {self.steps_per_generation})")
        if self.micro_batch_size != AUTO and (not isinstance(self.micro_batch_size, int) or self.micro_batch_size < 1):
            problems.append(f"model.grpo.micro_batch_size: must be >= 1 (got {self.micro_batch_size})")
        if self.max_grad_norm is not None and self.max_grad_norm <= 0:
            problems.append(f"model.grpo.max_grad_norm: must be > 0, or null to disable clipping "
                            f"(got {self.max_grad_norm})")
        if self.logprob_chunk_tokens < 1:
            problems.append(f"model.grpo.logprob_chunk_tokens: must be >= 1 (got {self.logprob_chunk_tokens})")
        if self.mlp_chunk_tokens is not None and self.mlp_chunk_tokens < 1:
            problems.append(f"model.grpo.mlp_chunk_tokens: must be >= 1, or null (got {self.mlp_chunk_tokens})")
        if self.adv_eps < 0:
            problems.append(f"model.grpo.adv_eps: must be >= 0 (got {self.adv_eps})")
        return problems


@dataclass
class OptimConfig:
    """AdamW with linear warmup then cosine decay; the defaults are the official LAPO runs'
    (docs/faithfulness.md lists each value with its source)."""

    lr: float = 2e-5
    """Peak learning rate. The paper fine-tunes all weights at 1e-6; this trainer updates a LoRA
    adapter, whose low-rank update scaled by alpha / r needs a roughly 10-20x larger step to
    move the model as far, so the default is the paper configs' LoRA value."""
    weight_decay: float = 0.0
    """AdamW weight decay; the official runs use none (OpenRLHF's ``--l2 0``)."""
    betas: tuple[float, float] = (0.9, 0.95)
    """Adam betas; the official runs use (0.9, 0.95) (OpenRLHF's ``--adam_betas`` default)."""
    warmup_steps: int = 0
    """Optimizer steps of linear warmup from 0; when > 0 it replaces ``warmup_ratio``."""
    warmup_ratio: float = 0.03
    """Warmup as a share of all optimizer steps, rounded up; the official runs use 0.03
    (OpenRLHF's ``--lr_warmup_ratio`` default). 0 starts at the full learning rate."""
    min_lr_ratio: float = 0.1
    """Cosine decays to lr * min_lr_ratio at the last optimizer step (official: 0.1)."""

    def __post_init__(self) -> None:
        raise_problems("optimizer config", self.problems())

    def problems(self) -> list[str]:
        """Every problem with these settings, one line each (empty = valid)."""
        problems = []
        if not self.lr > 0:  # also catches NaN
            problems.append(f"model.optim.lr: must be > 0 (got {self.lr})")
        if self.weight_decay < 0:
            problems.append(f"model.optim.weight_decay: must be >= 0 (got {self.weight_decay})")
        if self.warmup_steps < 0:
            problems.append(f"model.optim.warmup_steps: must be >= 0 (got {self.warmup_steps})")
        if not 0 <= self.warmup_ratio < 1:
            problems.append(f"model.optim.warmup_ratio: must be in [0, 1) (got {self.warmup_ratio})")
        if not 0 <= self.min_lr_ratio <= 1:
            problems.append(f"model.optim.min_lr_ratio: must be in [0, 1] (got {self.min_lr_ratio})")
        if not all(0 <= b < 1 for b in self.betas):
            problems.append(f"model.optim.betas: both must be in [0, 1) (got {tuple(self.betas)})")
        return problems

    def warmup_for(self, total_steps: int) -> int:
        """Warmup optimizer steps for a run of ``total_steps``: e.g. ratio 0.03 of 100 -> 3;
        ``warmup_steps`` > 0 wins over the ratio."""
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


def kl_reference_problem(kl_coef: float, reference_needs_forward: bool) -> str | None:
    """A KL penalty needs reference weights to compare with; ``NoReference`` has none."""
    if kl_coef > 0 and not reference_needs_forward:
        return (f"model.reference: NoReference has no weights for the KL penalty model.grpo.kl_coef={kl_coef}; "
                "set model.grpo.kl_coef: 0 or pick a reference (AdapterDisabled, FrozenAdapter)")
    return None


def training_problems(
    *,
    group_size: int,
    micro_batch_size: int | str,
    kl_coef: float,
    temperature: float,
    max_new_tokens: int,
    reward_weights: list[tuple[str, float]],
    allow_negative_reward_weights: bool = False,
    reference_needs_forward: bool = True,
    problems_per_step: int | None = None,
) -> list[str]:
    """The rules a GRPO *training* run adds to each setting's own range: one line per problem.

    Apart from the dataclasses because they span several sections, and because sampling
    settings that are fine elsewhere are not for training (greedy decoding suits evaluation,
    where validation and ``lapo eval`` use it). ``reward_weights`` holds ``(config key, weight)``.
    Example: ``training_problems(group_size=4, micro_batch_size=8, kl_coef=0, temperature=0,
    max_new_tokens=64, reward_weights=[])`` -> one line about ``model.generation.temperature``.
    """
    problems = []
    if temperature == 0 and group_size > 1:
        problems.append(f"model.generation.temperature: 0 is greedy decoding, so the {group_size} rollouts of a "
                        "problem are identical, every advantage is 0 and nothing is learned; sample with a "
                        "temperature > 0 (the paper uses 1.0)")
    if 0 < max_new_tokens < MIN_TRAIN_NEW_TOKENS:
        problems.append(f"model.generation.max_new_tokens: {max_new_tokens} is below the training minimum of "
                        f"{MIN_TRAIN_NEW_TOKENS}: nearly every rollout is cut off before an answer and graded wrong")
    if not allow_negative_reward_weights:
        for key, weight in reward_weights:
            if weight < 0:
                problems.append(f"{key}.weight: {weight} is negative, which rewards what this reward was written to "
                                "discourage; if a penalty is meant, set model.grpo.allow_negative_reward_weights: true")
    if (problem := kl_reference_problem(kl_coef, reference_needs_forward)) is not None:
        problems.append(problem)
    if problems_per_step is not None and group_size >= 2 and isinstance(micro_batch_size, int) and micro_batch_size >= 1 \
            and (problems_per_step * group_size) % micro_batch_size:
        problems.append(f"model.grpo.micro_batch_size: {micro_batch_size} must divide the rollout batch "
                        f"data.problems_per_step * model.grpo.group_size = {problems_per_step} * {group_size}")
    return problems
