"""Benchmark problems for Lightning's test loop, one dataloader per (budget condition, benchmark).

Flow: ``run_evaluation`` calls :meth:`BenchmarkDataModule.check` (every benchmark file and
budget setting, all problems listed at once) before any model loads; ``trainer.test`` then
iterates ``test_dataloader()``, whose batches are :class:`EvalBatch`: a ``ProblemBatch``
with each problem's budget filled in (what the stage-2 callback does in training), plus the
condition and benchmark names that ``EvalModule`` writes into every record.

Budget conditions (``budgets``): ``none`` (the paper's protocol: no budget sentence),
``short``/``long`` (fixed budgets, paper Table 4; values in ``budget_short``/``budget_long``),
a number n (a fixed budget; several numbers make a budget sweep), or ``table`` (each
problem's own target from a stage-1-style length table, ``fallback_budget`` when missing).
Problems are sorted longest-first so each batch holds prompts of similar length.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import lightning.pytorch as pl
from torch.utils.data import DataLoader

from lapo_lightning.data import ProblemDataset
from lapo_lightning.problem_sets.files import DataError, Problem, load_problems
from lapo_lightning.evaluation.benchmarks import Benchmark, paper_benchmarks, parse_level
from lapo_lightning.length_table import LengthTable, LengthTableError
from lapo_lightning.types import ProblemBatch

NAMED_BUDGETS = ("none", "short", "long", "table")


@dataclass(frozen=True)
class Condition:
    """One budget setting of the evaluation; ``label`` names it in records and reports."""

    label: str  # "none", "short", "long", "table", or the number itself ("512")
    fixed: int | None = None  # the budget every problem states; None with table=False = no budget
    table: bool = False  # budgets come from the length table, per problem


@dataclass
class EvalTask:
    """The problems of one benchmark under one budget condition (one test dataloader)."""

    condition: Condition
    benchmark: Benchmark
    problems: list[Problem]  # longest problem text first
    budgets: list[int | None]  # per problem
    levels: list[int | None]  # per problem


@dataclass
class EvalBatch:
    benchmark: str
    condition: str
    samples: int  # N samples per problem for this benchmark
    problems: ProblemBatch  # B problems, budgets filled
    levels: list[int | None]  # [B]


def collate_eval(items: list[tuple[Problem, int | None, int | None]], benchmark: str, condition: str,
                 samples: int) -> EvalBatch:
    """Module-level (picklable for worker processes)."""
    problems = ProblemBatch(problem_ids=[p.id for p, _, _ in items], problems=[p.problem for p, _, _ in items],
                            answers=[p.answer for p, _, _ in items], budgets=[b for _, b, _ in items])
    return EvalBatch(benchmark, condition, samples, problems, [level for _, _, level in items])


def _key(index: int, bench: Benchmark) -> str:
    return f"data.benchmarks[{index}].path ({bench.name})"


class BenchmarkDataModule(pl.LightningDataModule):
    def __init__(
        self,
        benchmarks: list[Benchmark] | None = None,
        budgets: list[int | str] | None = None,
        budget_short: int = 1024,
        budget_long: int = 4096,
        length_table: str | None = None,
        fallback_budget: int | None = None,
        max_problems: int | None = None,
        rollouts_per_batch: int = 64,
        num_workers: int = 0,
    ) -> None:
        """Benchmark problems, with budgets, for ``EvalModule`` on ``trainer.test``.

        Args:
            benchmarks: evaluation sets; default the paper's four files in ``data/``
                (:func:`~lapo_lightning.evaluation.benchmarks.paper_benchmarks`).
            budgets: budget conditions, each evaluated on every benchmark: "none", "short",
                "long", "table" or a number of tokens. Default ["none"] (the paper's protocol).
            budget_short: the budget stated by the "short" condition (paper Table 4).
            budget_long: the budget stated by the "long" condition (paper Table 4).
            length_table: length table JSON for the "table" condition (e.g. stage 1's output).
            fallback_budget: "table" budget for problems without a target; None = the
                generation cap (``model.generation.max_new_tokens``), as in training.
            max_problems: evaluate only the first N problems of each benchmark (file order).
            rollouts_per_batch: completions per batch, so a batch holds
                max(1, rollouts_per_batch // samples) problems, all generated in one call.
            num_workers: DataLoader worker processes.
        """
        super().__init__()
        self.benchmarks = benchmarks if benchmarks is not None else paper_benchmarks()
        self.budgets = list(budgets) if budgets is not None else ["none"]
        self.budget_short, self.budget_long = budget_short, budget_long
        self.length_table, self.fallback_budget = length_table, fallback_budget
        self.max_problems, self.rollouts_per_batch, self.num_workers = max_problems, rollouts_per_batch, num_workers
        self.tasks: list[EvalTask] = []
        self._checked = False  # check() passed: setup need not read every file twice

    # ---------------------------------------------------------------- checks
    def conditions(self) -> list[Condition]:
        """The parsed ``budgets``; raises a ValueError naming ``data.budgets`` on a bad entry."""
        out = []
        for spec in self.budgets:
            if isinstance(spec, int) and not isinstance(spec, bool):
                if spec < 0:
                    raise ValueError(f"data.budgets: a budget must be >= 0 tokens, got {spec}")
                out.append(Condition(str(spec), fixed=spec))
            elif spec in ("short", "long"):
                out.append(Condition(spec, fixed=self.budget_short if spec == "short" else self.budget_long))
            elif spec in ("none", "table"):
                out.append(Condition(spec, table=spec == "table"))
            else:
                raise ValueError(f"data.budgets: unknown budget {spec!r}; use a number of tokens or one of "
                                 f"{', '.join(NAMED_BUDGETS)}")
        labels = [c.label for c in out]
        if len(set(labels)) != len(labels) or not labels:
            raise ValueError(f"data.budgets must list distinct conditions, got {self.budgets}")
        return out

    def check(self) -> list[str]:
        """Every problem with the data settings, as messages (empty = fine); loads the files."""
        errors = []
        names = [b.name for b in self.benchmarks]
        if not self.benchmarks:
            errors.append("data.benchmarks is empty: name at least one benchmark file")
        if len(set(names)) != len(names):
            errors.append(f"data.benchmarks: names must be unique, got {names}")
        if self.rollouts_per_batch < 1:
            errors.append(f"data.rollouts_per_batch must be >= 1, got {self.rollouts_per_batch}")
        if self.max_problems is not None and self.max_problems < 1:
            errors.append(f"data.max_problems must be >= 1 or null, got {self.max_problems}")
        for key, value in (("data.budget_short", self.budget_short), ("data.budget_long", self.budget_long),
                           ("data.fallback_budget", self.fallback_budget)):
            if value is not None and value < 1:
                errors.append(f"{key} must be >= 1 token, got {value}")
        try:
            conditions = self.conditions()
        except ValueError as e:
            errors.append(str(e))
            conditions = []
        if any(c.table for c in conditions):
            if self.length_table is None:
                errors.append("data.budgets has 'table' but data.length_table is not set")
            else:
                try:
                    LengthTable.load(self.length_table)
                except LengthTableError as e:
                    errors.append(f"data.length_table: {e}")
        for i, bench in enumerate(self.benchmarks):
            try:
                load_problems(bench.path, bench.fields, bench.split, key=_key(i, bench),
                              fields_key=f"data.benchmarks[{i}].fields")
            except DataError as e:
                errors.append(str(e))
        self._checked = not errors
        return errors

    # ---------------------------------------------------------------- setup
    def setup(self, stage: str | None = None) -> None:
        if self.tasks:  # idempotent: trainer.test runs once per model
            return
        if not self._checked:
            errors = self.check()
            if errors:
                raise DataError("invalid evaluation data:\n  " + "\n  ".join(errors))
        conditions = self.conditions()
        table = LengthTable.load(self.length_table) if any(c.table for c in conditions) else None
        fallback = self.fallback_budget or self._generation_cap()
        if table is not None and fallback is None:
            raise DataError("data.fallback_budget: set it; the 'table' budget needs one for problems without a "
                            "target and no generation cap (model.generation.max_new_tokens) is known here")
        for condition in conditions:
            for i, bench in enumerate(self.benchmarks):
                problems = load_problems(bench.path, bench.fields, bench.split, key=_key(i, bench),
                                         fields_key=f"data.benchmarks[{i}].fields")
                problems = sorted(problems[: self.max_problems], key=lambda p: -len(p.problem))  # stable sort
                if condition.table:
                    budgets = [t if (t := table.target(p.id)) is not None else fallback for p in problems]
                else:
                    budgets = [condition.fixed] * len(problems)
                levels = [parse_level(p.extra.get(bench.level_field)) if bench.level_field else None for p in problems]
                self.tasks.append(EvalTask(condition, bench, problems, budgets, levels))

    def _generation_cap(self) -> int | None:
        module = self.trainer.lightning_module if self.trainer is not None else None
        generation = getattr(module, "generation", None)
        return None if generation is None else int(generation.max_new_tokens)

    def test_dataloader(self) -> list[DataLoader]:
        return [self._loader(task) for task in self.tasks]

    def _loader(self, task: EvalTask) -> DataLoader:
        items = list(zip(task.problems, task.budgets, task.levels))
        sampler = None
        if self.trainer is not None and self.trainer.world_size > 1:
            # Each problem on exactly one process (Lightning's default sampler repeats some to
            # even out batch counts; metrics are only reduced at epoch end, so uneven is fine).
            from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler

            sampler = UnrepeatedDistributedSampler(items, num_replicas=self.trainer.world_size,
                                                   rank=self.trainer.global_rank, shuffle=False)
        return DataLoader(
            ProblemDataset(items),
            batch_size=max(1, self.rollouts_per_batch // task.benchmark.samples),
            shuffle=False,
            sampler=sampler,
            collate_fn=partial(collate_eval, benchmark=task.benchmark.name, condition=task.condition.label,
                               samples=task.benchmark.samples),
            num_workers=self.num_workers,
        )
