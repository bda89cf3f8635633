"""Benchmarks: which problem file to evaluate on, how many samples per problem, which fields.

Flow: ``BenchmarkDataModule`` (``evaluation/data.py``) reads each :class:`Benchmark` with
:func:`lapo_lightning.problem_sets.files.load_problems` and batches its problems for ``EvalModule``.
:func:`paper_benchmarks` is the paper's protocol for the files in ``data/``: MATH-500 and
OlympiadBench with 4 samples per problem, AIME24 and AMC23 with 32 (Pass@1 = mean accuracy
over those samples); sampling settings live in ``EvalModule.generation`` (temperature 0.6,
top-p 0.95 in ``configs/eval.yaml``) and no budget is stated unless asked for.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from lapo_lightning.problem_sets.files import ProblemFields

_LEVEL = re.compile(r"(\d+)")


@dataclass
class Benchmark:
    """One evaluation set.

    Args:
        name: short name used in reports and records (unique within a run), e.g. "math500".
        path: local .jsonl/.json/.parquet file (or a hub dataset id, read like training data).
        samples: completions sampled per problem (N); Pass@1 is the mean accuracy over them.
        fields: column names for problem, answer and id.
        level_field: column holding a difficulty level (int, or text such as "Level 3"); None
            when the set has no levels. Used for the per-level breakdown and plot.
        split: dataset split, for a hub dataset id only (a local file is one split).
    """

    name: str
    path: str
    samples: int = 4
    fields: ProblemFields = field(default_factory=ProblemFields)
    level_field: str | None = None
    split: str = "test"

    def __post_init__(self) -> None:
        problems = []
        if not self.name or not re.fullmatch(r"[\w.+-]+", self.name):
            problems.append(f"benchmark name {self.name!r} must be non-empty letters, digits, '_', '-', '.' or '+'")
        if self.samples < 1:
            problems.append(f"benchmark {self.name!r}: samples must be >= 1, got {self.samples}")
        if problems:
            raise ValueError("invalid benchmark:\n  " + "\n  ".join(problems))


def paper_benchmarks(data_dir: str | Path = "data") -> list[Benchmark]:
    """The paper's four evaluation sets (files shipped in ``data/``, see its README)."""
    data_dir = Path(data_dir)
    return [
        Benchmark("math500", str(data_dir / "math500.jsonl"), samples=4, level_field="level"),
        Benchmark("aime24", str(data_dir / "aime24.jsonl"), samples=32),
        Benchmark("amc23", str(data_dir / "amc23.jsonl"), samples=32),
        Benchmark("olympiadbench", str(data_dir / "olympiadbench.jsonl"), samples=4),
    ]


def parse_level(value: object) -> int | None:
    """A difficulty level as an int: ``3`` -> 3, ``"Level 3"`` -> 3, ``None``/``"?"`` -> None."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if value.is_integer() else None
    found = _LEVEL.search(str(value))
    return int(found[1]) if found else None
