"""Per-sample records: the evaluation's ground truth on disk, and what makes it resumable.

Flow: ``EvalModule.test_step`` appends one :class:`SampleRecord` per generated completion
to ``<report_dir>/samples.jsonl`` (``samples.rank<r>.jsonl`` on other processes) as soon
as the batch is verified, flushed and fsynced. A re-run with the same report folder loads
every ``samples*.jsonl`` into a :class:`RecordStore` and generates only the (model, budget
condition, benchmark, problem, sample) keys not yet recorded. The report's plots read the
records; its numbers come from the metrics, which are fed the same records.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
from lightning.pytorch.utilities import rank_zero_warn

from lapo_lightning.evaluation.metrics import Outcomes

FILE_GLOB = "samples*.jsonl"


class RecordError(ValueError):
    """A records file that cannot be read; the message names the file and line."""


@dataclass
class SampleRecord:
    model: str  # ModelSpec.name
    condition: str  # budget condition label: "none", "short", "long", "table" or a number
    benchmark: str  # Benchmark.name
    problem_id: str
    sample: int  # 0..N-1 within the problem
    answer: str | None  # the final answer extracted from the completion (None = none found)
    correct: bool
    parsed: bool  # False = the verifier could not extract/parse an answer (counted incorrect)
    length: int  # generated tokens, incl. EOS (as in training)
    truncated: bool  # hit max_new_tokens without finishing
    budget: int | None = None  # budget stated in the prompt; None = no budget sentence
    own_budget: int | None = None  # budget the completion states itself ("I will answer ... n tokens.")
    level: int | None = None  # difficulty level, when the benchmark has one
    gold: str | None = None  # the benchmark's reference answer, to read next to `answer` (None in older records)
    text: str | None = None  # the completion (omitted when EvalModule.save_texts is false)

    @property
    def key(self) -> tuple[str, str, str, str, int]:
        return self.model, self.condition, self.benchmark, self.problem_id, self.sample


def records_path(folder: str | Path, rank: int = 0) -> Path:
    return Path(folder) / ("samples.jsonl" if rank == 0 else f"samples.rank{rank}.jsonl")


class RecordStore:
    """All records of a report folder, indexed by problem; appends go to this rank's file."""

    def __init__(self, folder: str | Path, rank: int = 0) -> None:
        self.folder = Path(folder)
        self.path = records_path(folder, rank)
        self._by_problem: dict[tuple[str, str, str, str], dict[int, SampleRecord]] = {}
        for path in sorted(self.folder.glob(FILE_GLOB)):
            for record in _read(path):
                # A key recorded twice (two processes given the same problem) keeps the first.
                self._by_problem.setdefault(record.key[:4], {}).setdefault(record.sample, record)

    def done(self, model: str, condition: str, benchmark: str, problem_id: str) -> dict[int, SampleRecord]:
        """Sample index -> record for one problem (empty when nothing was recorded)."""
        return self._by_problem.get((model, condition, benchmark, problem_id), {})

    def append(self, records: list[SampleRecord]) -> None:
        """Add records and make them durable before returning (an interrupt loses none)."""
        if not records:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            for record in records:
                f.write(json.dumps(asdict(record), ensure_ascii=False) + "\n")
                self._by_problem.setdefault(record.key[:4], {}).setdefault(record.sample, record)
            f.flush()
            os.fsync(f.fileno())

    def records(self) -> list[SampleRecord]:
        return [r for per_problem in self._by_problem.values() for r in per_problem.values()]

    def __len__(self) -> int:
        return sum(len(v) for v in self._by_problem.values())


def _read(path: Path) -> list[SampleRecord]:
    text = path.read_text(encoding="utf-8")
    lines = text.split("\n")  # the writer ends every record with "\n": the last piece is "" ...
    partial = lines.pop() if lines[-1] else None  # ... unless an interrupt cut a record short
    if partial is not None:
        path.write_text(text[: len(text) - len(partial)], encoding="utf-8")
        rank_zero_warn(f"{path}: dropped a partially written last line (interrupted run); that sample is "
                       "generated again")
    names = {f.name for f in fields(SampleRecord)}
    records = []
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            records.append(SampleRecord(**{k: v for k, v in row.items() if k in names}))
        except (json.JSONDecodeError, TypeError) as e:
            raise RecordError(f"{path} line {lineno}: not a sample record ({e}); fix or delete the file") from None
    return records


def to_outcomes(records: list[SampleRecord]) -> Outcomes:
    """Outcomes of whole problems, grouped by problem id in order of first appearance."""
    groups: dict[str, int] = {}
    index = [groups.setdefault(r.problem_id, len(groups)) for r in records]
    return Outcomes(
        correct=torch.tensor([r.correct for r in records], dtype=torch.bool),
        lengths=torch.tensor([r.length for r in records], dtype=torch.long),
        truncated=torch.tensor([r.truncated for r in records], dtype=torch.bool),
        parsed=torch.tensor([r.parsed for r in records], dtype=torch.bool),
        group_index=torch.tensor(index, dtype=torch.long),
        levels=torch.tensor([r.level or 0 for r in records], dtype=torch.long),
        budgets=torch.tensor([float("nan") if r.budget is None else float(r.budget) for r in records],
                             dtype=torch.float32),
        own_budgets=torch.tensor([float("nan") if r.own_budget is None else float(r.own_budget) for r in records],
                                 dtype=torch.float32),
    )
