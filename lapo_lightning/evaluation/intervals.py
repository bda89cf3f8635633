"""95% intervals for the reports' Pass@1 and #Tok: a bootstrap over problems.

Flow: ``report.write_report`` (rank 0, after each model) gives :func:`interval_fields` the
sample records of the report folder; each result row gains ``pass@1_ci`` and
``tokens_mean_ci`` and, for every model but the baseline (the first model listed), its paired
difference to the baseline (``vs_baseline``). ``lapo compare``'s report and Pareto plots read
them from ``results.json``.

Method: the problems are resampled with replacement, a problem's samples kept together (they
share the problem's difficulty, so they are not independent draws); each resample's statistic
is the mean over all its samples, as Pass@1 and #Tok are. The interval is the 2.5th and 97.5th
percentile of 2,000 resamples, drawn from a fixed seed, so a report is reproducible. A
difference is paired: the same resampled problems for both models, which removes the
problems' own spread from it (two models that agree on most problems get a narrow interval).
"""

from __future__ import annotations

from collections import defaultdict

import torch
from torch import Tensor

RESAMPLES = 2000
LEVEL = 0.95
SEED = 0


def per_problem(values: dict[str, list[float]]) -> Tensor:
    """``{problem id: its samples' values}`` as [P, 2]: each problem's sum and sample count,
    problems in sorted id order (so two models' tables align on the same ids)."""
    ids = sorted(values)
    return torch.tensor([[float(sum(values[i])), float(len(values[i]))] for i in ids], dtype=torch.float64)


def resample_indices(problems: int, resamples: int = RESAMPLES, seed: int = SEED) -> Tensor:
    """[resamples, problems] problem indices drawn with replacement from a fixed seed."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(problems, (resamples, problems), generator=generator)


def _means(sums: Tensor, index: Tensor) -> Tensor:
    picked = sums[index]  # [R, P, 2]
    return picked[..., 0].sum(1) / picked[..., 1].sum(1)


def _bounds(stats: Tensor, level: float = LEVEL) -> list[float]:
    tail = (1 - level) / 2
    return [float(torch.quantile(stats, tail)), float(torch.quantile(stats, 1 - tail))]


def interval(sums: Tensor, resamples: int = RESAMPLES, seed: int = SEED) -> list[float] | None:
    """[low, high] of the mean over all samples (``per_problem`` sums); None without problems.

    Example: two problems, one always right and one always wrong (4 samples each): the
    resamples hold 0, 1 or 2 copies of the right one, so the interval is [0, 1]."""
    if len(sums) == 0:
        return None
    return _bounds(_means(sums, resample_indices(len(sums), resamples, seed)))


def paired_difference(model: Tensor, baseline: Tensor, resamples: int = RESAMPLES,
                      seed: int = SEED) -> list[float] | None:
    """[difference, low, high] of ``mean(model) - mean(baseline)`` over the same problems
    (rows aligned); None without problems."""
    if len(model) == 0:
        return None
    if model.shape != baseline.shape:
        raise ValueError(f"paired difference needs the same problems: {len(model)} and {len(baseline)}")
    index = resample_indices(len(model), resamples, seed)
    point = float(model[:, 0].sum() / model[:, 1].sum() - baseline[:, 0].sum() / baseline[:, 1].sum())
    return [point, *_bounds(_means(model, index) - _means(baseline, index))]


def excludes_zero(difference: list[float] | None) -> bool:
    """Whether a ``[difference, low, high]`` interval lies wholly on one side of 0."""
    return difference is not None and (difference[1] > 0 or difference[2] < 0)


def format_interval(values: list[float] | None, scale: float = 1.0, fmt: str = ".1f") -> str:
    """``[30.0, 45.0]`` (``scale`` 100 for percent); ``–`` when unknown."""
    return "–" if not values else "[" + ", ".join(format(scale * v, fmt) for v in values) + "]"


def format_difference(values: list[float] | None, scale: float = 1.0, fmt: str = ".1f") -> str:
    """``+2.5 [-1.0, 6.0]`` from ``[difference, low, high]``, with `` *`` where the interval excludes 0."""
    if not values:
        return "–"
    return f"{format(scale * values[0], '+' + fmt)} {format_interval(values[1:], scale, fmt)}" + (
        " *" if excludes_zero(values) else "")


def _fields(cell: dict, base: dict | None, baseline: str | None) -> dict:
    """One cell's intervals and, given the baseline's cell, its paired differences to it."""
    fields = {f"{name}_ci": interval(per_problem(values)) for name, values in cell.items()}
    if base is not None:
        shared = sorted(set(cell["pass@1"]) & set(base["pass@1"]))
        fields["vs_baseline"] = {"model": baseline, **{
            name: paired_difference(per_problem({i: cell[name][i] for i in shared}),
                                    per_problem({i: base[name][i] for i in shared}))
            for name in cell if name in base}}
    return fields


def interval_fields(records, baseline: str | None) -> dict[tuple[str, str, str], dict]:
    """Per (model, condition, benchmark): ``pass@1_ci``, ``tokens_mean_ci`` (and
    ``budget_abs_error_ci``, of |L - n|, where the prompt stated a budget n) and, for models
    other than ``baseline``, ``vs_baseline`` {"model", "pass@1", "tokens_mean"[,
    "budget_abs_error"]} over the problems both answered; where the records carry difficulty
    levels, ``by_level_ci`` holds the same fields per level ({"1": {...}, ...}), the bootstrap
    resampling that level's problems."""
    cells: dict = defaultdict(lambda: {"pass@1": defaultdict(list), "tokens_mean": defaultdict(list)})
    for r in records:
        keys = [(r.model, r.condition, r.benchmark)] + ([(r.model, r.condition, r.benchmark, str(r.level))]
                                                        if r.level is not None else [])
        for key in keys:
            cell = cells[key]
            cell["pass@1"][r.problem_id].append(1.0 if r.correct else 0.0)
            cell["tokens_mean"][r.problem_id].append(float(r.length))
            if r.budget is not None:
                cell.setdefault("budget_abs_error", defaultdict(list))[r.problem_id].append(
                    float(abs(r.length - r.budget)))
    out: dict = {}
    for key, cell in sorted(cells.items(), key=lambda item: len(item[0])):  # whole cells before their levels
        model = key[0]
        base = cells.get((baseline, *key[1:])) if baseline and model != baseline else None
        fields = _fields(cell, base, baseline)
        if len(key) == 3:
            out[key] = fields
        else:
            out[key[:3]].setdefault("by_level_ci", {})[key[3]] = fields
    for fields in out.values():
        if "by_level_ci" in fields:
            fields["by_level_ci"] = dict(sorted(fields["by_level_ci"].items(), key=lambda kv: (len(kv[0]), kv[0])))
    return out
