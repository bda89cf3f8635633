"""Evaluation metrics as torchmetrics ``Metric`` classes, so their states sync across processes.

Flow: ``EvalModule.test_step`` turns each batch's complete problems (every sample of a
problem, old records merged with new ones) into :class:`Outcomes` and updates one
:class:`BenchmarkMetrics` per (budget condition, benchmark); ``on_test_epoch_end`` computes
them (torchmetrics all-reduces the sum states first) into the numbers of ``results.json``.

Definitions (paper §4.1): Pass@1 = mean accuracy over all samples; #Tok = mean generated
tokens per sample (token ids incl. EOS, as in training; see ``types.py``). pass@k is the
unbiased estimator of Chen et al. (2021), averaged over problems. An unparseable answer
(verifier miss) counts as incorrect and is also counted on its own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch
from torch import Tensor
from torchmetrics import Metric


@dataclass
class Outcomes:
    """Per-sample results of whole problems (all N samples of each problem present)."""

    correct: Tensor  # [N] bool
    lengths: Tensor  # [N] long, generated tokens
    truncated: Tensor  # [N] bool, hit the generation cap
    parsed: Tensor  # [N] bool, the verifier extracted and parsed an answer
    group_index: Tensor  # [N] long, which problem of this update each sample answers
    levels: Tensor  # [N] long, difficulty level; 0 = none
    budgets: Tensor  # [N] float, budget stated in the prompt; NaN = none
    own_budgets: Tensor  # [N] float, budget the completion states itself (no prompt budget); NaN = none

    def to(self, device) -> Outcomes:
        return Outcomes(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k for one problem: ``1 - C(n-c, k) / C(n, k)`` (Chen et al. 2021).

    Computed as ``1 - prod_{i=n-c+1}^{n} (1 - k/i)`` to stay exact in floating point.
    Example: n=4 samples, c=2 correct, k=2 -> 1 - C(2,2)/C(4,2) = 1 - 1/6 = 0.8333.
    """
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0  # every k-subset contains a correct sample
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def pass_ks(samples: int) -> list[int]:
    """The k reported for N samples: powers of two up to N, and N itself (4 -> [1, 2, 4])."""
    ks = [2**i for i in range(samples.bit_length()) if 2**i <= samples]
    return ks + ([samples] if samples not in ks else [])


def _nan() -> Tensor:
    return torch.tensor(float("nan"), dtype=torch.float64)


class SampleMean(Metric):
    """Mean of one per-sample value over the samples :meth:`select` includes."""

    full_state_update = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("total", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0), dist_reduce_fx="sum")

    def select(self, outcomes: Outcomes) -> tuple[Tensor, Tensor]:
        """``(values [N] float, include [N] bool)``."""
        raise NotImplementedError

    def update(self, outcomes: Outcomes) -> None:
        values, include = self.select(outcomes)
        include = include.bool()  # a mask, never an index list
        self.total += values[include].double().sum()
        self.count += include.sum()

    def compute(self) -> Tensor:
        return self.total / self.count if self.count > 0 else _nan()


class Pass1(SampleMean):
    """Pass@1: the share of all samples that are correct (the paper's headline number)."""

    def select(self, o: Outcomes) -> tuple[Tensor, Tensor]:
        return o.correct.double(), torch.ones_like(o.correct, dtype=torch.bool)


class MeanTokens(SampleMean):
    """#Tok: mean generated tokens per sample, over all samples or the correct ones only."""

    def __init__(self, correct_only: bool = False, **kwargs) -> None:
        super().__init__(**kwargs)
        self.correct_only = correct_only

    def select(self, o: Outcomes) -> tuple[Tensor, Tensor]:
        return o.lengths.double(), o.correct if self.correct_only else torch.ones_like(o.correct, dtype=torch.bool)


class TruncationRate(SampleMean):
    """Share of samples that hit the generation cap without finishing."""

    def select(self, o: Outcomes) -> tuple[Tensor, Tensor]:
        return o.truncated.double(), torch.ones_like(o.truncated, dtype=torch.bool)


class UnparseableRate(SampleMean):
    """Share of samples with no answer the verifier could extract and parse (all incorrect)."""

    def select(self, o: Outcomes) -> tuple[Tensor, Tensor]:
        return (~o.parsed).double(), torch.ones_like(o.parsed, dtype=torch.bool)


class MeanBudget(SampleMean):
    """Mean budget n stated in the prompt, over samples that had one (NaN when none did)."""

    def select(self, o: Outcomes) -> tuple[Tensor, Tensor]:
        stated = ~torch.isnan(o.budgets)
        return torch.nan_to_num(o.budgets).double(), stated


class BudgetAbsError(SampleMean):
    """Budget adherence: mean ``|L - n|`` over samples whose prompt stated a budget n."""

    def select(self, o: Outcomes) -> tuple[Tensor, Tensor]:
        stated = ~torch.isnan(o.budgets)
        return (o.lengths.double() - torch.nan_to_num(o.budgets).double()).abs(), stated


class OwnBudgetRate(SampleMean):
    """Share of the samples whose prompt stated no budget that state one themselves (a LAPO
    stage-2 model writes "I will answer the question with n tokens." after ``<think>``)."""

    def select(self, o: Outcomes) -> tuple[Tensor, Tensor]:
        return (~torch.isnan(o.own_budgets)).double(), torch.isnan(o.budgets)


class OwnBudgetAbsError(SampleMean):
    """Adherence to a self-stated budget: mean ``|L - n|`` over samples that stated their own n
    (L counts the whole completion, the budget sentence included)."""

    def select(self, o: Outcomes) -> tuple[Tensor, Tensor]:
        stated = ~torch.isnan(o.own_budgets)
        return (o.lengths.double() - torch.nan_to_num(o.own_budgets).double()).abs(), stated


class PassAtK(Metric):
    """Unbiased pass@k averaged over problems; every update must hold whole problems."""

    full_state_update = False

    def __init__(self, k: int, **kwargs) -> None:
        super().__init__(**kwargs)
        if k < 1:
            raise ValueError(f"pass@k needs k >= 1, got {k}")
        self.k = k
        self.add_state("total", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("problems", torch.tensor(0), dist_reduce_fx="sum")

    def update(self, outcomes: Outcomes) -> None:
        groups = outcomes.group_index.long().cpu()
        if groups.numel() == 0:
            return
        n = torch.bincount(groups)  # [B] samples per problem
        c = torch.bincount(groups, weights=outcomes.correct.double().cpu())  # [B] correct per problem
        present = n > 0
        if (n[present] < self.k).any():
            raise ValueError(f"pass@{self.k} needs >= {self.k} samples per problem, got {int(n[present].min())}")
        estimate = sum(pass_at_k(int(ni), int(ci), self.k) for ni, ci in zip(n[present], c[present]))
        self.total += torch.tensor(estimate, dtype=torch.float64, device=self.total.device)
        self.problems += int(present.sum())

    def compute(self) -> Tensor:
        return self.total / self.problems if self.problems > 0 else _nan()


class ProblemCount(Metric):
    """How many problems and samples were scored (for the report and for sanity checks)."""

    full_state_update = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("problems", torch.tensor(0), dist_reduce_fx="sum")
        self.add_state("samples", torch.tensor(0), dist_reduce_fx="sum")

    def update(self, outcomes: Outcomes) -> None:
        self.problems += int(torch.unique(outcomes.group_index).numel())
        self.samples += int(outcomes.group_index.numel())

    def compute(self) -> dict[str, Tensor]:
        return {"problems": self.problems, "samples": self.samples}


class LevelBreakdown(Metric):
    """Pass@1, mean tokens and sample count per difficulty level 1..``num_levels``.

    Samples whose level is missing or outside that range are counted under level 0.
    """

    full_state_update = False

    def __init__(self, num_levels: int = 5, **kwargs) -> None:
        super().__init__(**kwargs)
        self.num_levels = num_levels
        size = num_levels + 1
        self.add_state("samples", torch.zeros(size, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("correct", torch.zeros(size, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("tokens", torch.zeros(size, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, outcomes: Outcomes) -> None:
        levels = outcomes.levels.long()
        levels = torch.where((levels >= 1) & (levels <= self.num_levels), levels, torch.zeros_like(levels))  # [N]
        self.samples += torch.bincount(levels, minlength=self.num_levels + 1).to(self.samples.device)
        self.correct.index_add_(0, levels.to(self.correct.device), outcomes.correct.double().to(self.correct.device))
        self.tokens.index_add_(0, levels.to(self.tokens.device), outcomes.lengths.double().to(self.tokens.device))

    def compute(self) -> dict[str, Tensor]:
        count = self.samples.double().clamp(min=1)
        return {"samples": self.samples, "pass@1": self.correct / count, "tokens_mean": self.tokens / count}


class BenchmarkMetrics(torch.nn.Module):
    """All metrics of one (model, budget condition, benchmark) cell of the report."""

    def __init__(self, samples: int, num_levels: int = 5) -> None:
        super().__init__()
        scalars: dict[str, Metric] = {"pass@1": Pass1()}
        scalars.update({f"pass@{k}": PassAtK(k) for k in pass_ks(samples) if k > 1})
        scalars.update({
            "tokens_mean": MeanTokens(), "tokens_correct_mean": MeanTokens(correct_only=True),
            "truncation_rate": TruncationRate(), "unparseable_rate": UnparseableRate(),
            "budget_mean": MeanBudget(), "budget_abs_error": BudgetAbsError(),
            "own_budget_rate": OwnBudgetRate(), "own_budget_abs_error": OwnBudgetAbsError(),
        })
        self.scalars = torch.nn.ModuleDict(scalars)
        self.counts = ProblemCount()
        self.levels = LevelBreakdown(num_levels)

    def update(self, outcomes: Outcomes) -> None:
        for metric in (*self.scalars.values(), self.counts, self.levels):
            metric.update(outcomes)

    def compute(self) -> dict:
        """Plain numbers (NaN -> None, so results.json stays valid JSON) and ``by_level``."""
        out: dict = {key: int(value) for key, value in self.counts.compute().items()}
        for name, metric in self.scalars.items():
            out[name] = _number(metric.compute())
        levels = self.levels.compute()
        out["by_level"] = {
            str(level): {"samples": int(levels["samples"][level]), "pass@1": float(levels["pass@1"][level]),
                         "tokens_mean": float(levels["tokens_mean"][level])}
            for level in range(self.levels.num_levels + 1) if levels["samples"][level] > 0
        }
        return out

    def reset(self) -> None:
        for metric in (*self.scalars.values(), self.counts, self.levels):
            metric.reset()


def _number(value: Tensor) -> float | None:
    value = float(value)
    return None if math.isnan(value) else value
