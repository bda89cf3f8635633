"""Reward plugins: each scores a whole ``RolloutBatch`` and returns one float per rollout.

Flow: after sampling and verification, ``GRPOModule`` calls every configured reward,
logs each one's mean as ``reward/<name>``, and sums ``weight * reward`` into the total
that the group advantages are computed from. A reward sees the whole batch, so
group-aware rewards read ``batch.group_index`` (never row order). Rewards do no I/O and
keep no state between calls; anything stateful (length tables, budgets) belongs in a
callback. Any importable subclass of :class:`Reward` works from YAML via ``class_path``.

Stage 1 uses ``[Accuracy, LengthBand]`` (paper Eqs. 1-3), stage 2 ``[Accuracy,
BudgetGaussian]`` (Eqs. 6-7); docs/equations.md lists every equation.
"""

from __future__ import annotations

import math
import re

import torch
from torch import Tensor

from lapo_lightning.algo import band_length_reward, fill_missing_targets, gaussian_length_reward
from lapo_lightning.types import RolloutBatch


class Reward:
    """Base class. Subclasses implement :meth:`__call__`.

    Args:
        weight: multiplier of this reward in the total.
        name: metric name (``reward/<name>``); defaults to the class name in snake case.
    """

    def __init__(self, weight: float = 1.0, name: str | None = None) -> None:
        if not math.isfinite(weight):
            raise ValueError(f"{type(self).__name__}: weight must be a finite number, got {weight}")
        self.weight = weight
        self.name = name or re.sub(r"(?<!^)(?=[A-Z])", "_", type(self).__name__).lower()

    def __call__(self, batch: RolloutBatch) -> Tensor:  # [N] float
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(weight={self.weight}, name={self.name!r})"


def score(rewards: list[Reward], batch: RolloutBatch) -> dict[str, Tensor]:
    """Unweighted reward per name, plus ``total`` = the weighted sum ([N] float each).

    Every reward's output is checked at every call (:func:`checked`), so a plugin that returns
    a list, the wrong number of values or a NaN/inf is stopped at its first such call, before
    its values can reach the advantages and the loss.
    """
    device = batch.completion_ids.device
    total = torch.zeros(len(batch), device=device)
    scores: dict[str, Tensor] = {}
    for reward in rewards:
        if reward.name in scores or reward.name == "total":
            raise ValueError(f"model.rewards: two rewards are named {reward.name!r}; give one a `name`")
        value = checked(reward, reward(batch), batch).to(device=device, dtype=torch.float32)
        scores[reward.name] = value
        total = total + reward.weight * value
    scores["total"] = total
    return scores


def checked(reward: Reward, value, batch: RolloutBatch) -> Tensor:
    """``value`` when it is what a reward must return: a real-valued tensor of shape [N] (one per
    rollout of ``batch``) with no NaN or inf; else a ``TypeError``/``ValueError`` naming the
    reward's class and name, what was wrong and the first offending rollout.

    The built-in rewards never produce NaN/inf (missing targets and length bands give 0), so a
    non-finite value comes from a user plugin: training on it would turn the loss, then every
    weight, into NaN. Example: a reward returning ``[1.0, 0.0]`` (a list) -> TypeError.
    """
    who = f"reward {type(reward).__name__} (name {reward.name!r})"
    n = len(batch)
    if not torch.is_tensor(value):
        raise TypeError(f"{who} returned a {type(value).__name__}, expected a torch.Tensor of {n} floats "
                        f"(one per rollout); wrap it: torch.tensor(values, dtype=torch.float32)")
    if not (value.is_floating_point() or value.dtype in _REAL_DTYPES):  # complex, quantized, ...
        raise TypeError(f"{who} returned a tensor of dtype {value.dtype}, expected real numbers (float, int or bool)")
    if tuple(value.shape) != (n,):
        raise ValueError(f"{who} returned shape {tuple(value.shape)}, expected ({n},): one value per rollout "
                         f"({len(batch.problems)} problems x group size {n // max(len(batch.problems), 1)})")
    bad = ~torch.isfinite(value.float())
    if bool(bad.any()):
        row = int(bad.nonzero()[0, 0])
        problem = batch.problems.problem_ids[int(batch.group_index[row])]
        raise ValueError(f"{who} returned {float(value[row])} for {int(bad.sum())} of {n} rollouts (first: rollout "
                         f"{row}, problem {problem!r}); rewards must be finite numbers: fix the plugin "
                         "(a NaN/inf reward would make the loss and then every trained weight NaN)")
    return value


_REAL_DTYPES = (torch.bool, torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


class Accuracy(Reward):
    """1 for a verified-correct final answer, else 0."""

    def __call__(self, batch: RolloutBatch) -> Tensor:
        return batch.correct.float()


class ThinkFormat(Reward):
    """1 when the completion closes the prefilled ``<think>`` exactly once and then answers.

    The prompt already opens ``<think>``, so a well-formed completion contains one
    ``</think>``, no further ``<think>``, and a ``\\boxed{`` answer after it.
    """

    def __call__(self, batch: RolloutBatch) -> Tensor:
        def ok(text: str) -> bool:
            head, sep, tail = text.partition("</think>")
            return bool(sep) and "<think>" not in text and "</think>" not in tail and "\\boxed{" in tail

        return torch.tensor([float(ok(t)) for t in batch.texts])


class RegexMatch(Reward):
    """1 when the completion matches a regular expression (``re.search``), else 0.

    A general format reward (e.g. ``pattern: "</think>\\s*\\\\boxed\\{"``). The debug config
    uses a loose pattern so that even a random-init model gets a learning signal.
    """

    def __init__(self, pattern: str, weight: float = 1.0, name: str | None = None) -> None:
        super().__init__(weight, name)
        try:
            self.regex = re.compile(pattern)
        except re.error as err:
            raise ValueError(f"RegexMatch: invalid pattern {pattern!r}: {err}") from None

    def __call__(self, batch: RolloutBatch) -> Tensor:
        return torch.tensor([float(self.regex.search(t) is not None) for t in batch.texts])


class LengthBand(Reward):
    """LAPO stage 1 (Discovery): reward correct answers inside the group's [P30, P70] band.

    Args:
        weight: alpha in the paper (0.7).
        low_pct, high_pct: band percentiles over the group's correct lengths.
        decay: tokens over which the reward falls linearly to 0 outside the band.
    """

    def __init__(self, weight: float = 0.7, low_pct: float = 30.0, high_pct: float = 70.0, decay: float = 100.0,
                 name: str | None = None) -> None:
        super().__init__(weight, name)
        if not 0 <= low_pct <= high_pct <= 100:
            raise ValueError(f"LengthBand: need 0 <= low_pct <= high_pct <= 100, got {low_pct}, {high_pct}")
        if decay <= 0:
            raise ValueError(f"LengthBand: decay must be > 0 tokens, got {decay}")
        self.low_pct, self.high_pct, self.decay = low_pct, high_pct, decay

    def __call__(self, batch: RolloutBatch) -> Tensor:
        return band_length_reward(
            batch.lengths, batch.correct, batch.group_index, self.low_pct, self.high_pct, self.decay,
            num_groups=len(batch.problems),
        )


class BudgetGaussian(Reward):
    """LAPO stage 2 (Internalization): reward correct answers whose length is near the budget.

    Aims at each problem's length *target* (``ProblemBatch.targets``, set by the stage-2
    budget callback). A problem without one (unsolved in stage 1) is centred on its group's
    median correct length, as the official code does.

    Args:
        weight: beta in the paper (0.8, as in the official code and appendix).
        sigma: width in tokens (120 for ~4k-token models; scale with the generation cap).
    """

    def __init__(self, weight: float = 0.8, sigma: float = 120.0, name: str | None = None) -> None:
        super().__init__(weight, name)
        if sigma <= 0:
            raise ValueError(f"BudgetGaussian: sigma must be > 0 tokens, got {sigma}")
        self.sigma = sigma

    def __call__(self, batch: RolloutBatch) -> Tensor:
        lengths, correct = batch.lengths, batch.correct
        targets = fill_missing_targets(
            batch.targets.to(lengths.device), lengths, correct, batch.group_index, num_groups=len(batch.problems)
        )
        return gaussian_length_reward(lengths, correct, targets, self.sigma)
