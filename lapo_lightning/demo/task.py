"""The demo's synthetic reasoning task: sums of single digits, solved as running sums.

Flow: :func:`write_splits` (``python -m lapo_lightning.demo.task --out data/demo``) writes
the three JSONL files the demo configs read: ``sft.jsonl`` (problems with a supervised
trace in ``solution``), ``train.jsonl`` (RL problems) and ``test.jsonl`` (held out). Rows
use the same fields as the real math sets (``id``, ``problem``, ``answer``, plus ``level``),
so the same data module, verifier and evaluation read them.

A problem ``3+5+2+7`` (level = terms - 1, so 1 to 4) is solved in its trace by one running-sum step per
term, so the *necessary* reasoning grows with difficulty::

     3+5=8 8+2=10 10+7=17 check 8+2=10 ok </think> \\boxed{17}

The ``check ... ok`` lines are redundant work: 0 to 5 of them, drawn independently of the
level and skewed towards few (most traces overthink a little, some a lot). That is the slack
LAPO stage 1 should find and remove while keeping the steps that difficulty needs.
"""

from __future__ import annotations

import argparse
import json
import random
from dataclasses import dataclass
from pathlib import Path

LEVELS = (1, 2, 3, 4)
EXTRA_TERMS = 1  # level k sums k + 1 digits
# P(number of redundant checks = k), k = 0..5: median 1, mean 1.75.
CHECK_WEIGHTS = (0.30, 0.25, 0.15, 0.10, 0.10, 0.10)
# Rows per level. Level 1 has only 81 distinct problems: 30 are held out for the test split.
SPLITS = {
    "sft": {1: 3000, 2: 3000, 3: 3000, 4: 3000},
    "train": {1: 500, 2: 500, 3: 500, 4: 500},
    "test": {1: 30, 2: 200, 3: 200, 4: 200},
}


@dataclass(frozen=True)
class SumProblem:
    """One problem: the digits to add and its difficulty level."""

    terms: tuple[int, ...]

    @property
    def level(self) -> int:
        return len(self.terms) - EXTRA_TERMS

    @property
    def text(self) -> str:
        return "+".join(map(str, self.terms))

    @property
    def answer(self) -> int:
        return sum(self.terms)

    def steps(self) -> list[str]:
        """The running-sum steps: ``["3+5=8", "8+2=10", "10+7=17"]`` for 3+5+2+7."""
        out, total = [], self.terms[0]
        for term in self.terms[1:]:
            out.append(f"{total}+{term}={total + term}")
            total += term
        return out


def sample_problem(rng: random.Random, level: int) -> SumProblem:
    return SumProblem(tuple(rng.randint(1, 9) for _ in range(level + EXTRA_TERMS)))


def trace(problem: SumProblem, rng: random.Random, checks: int | None = None) -> str:
    """The supervised completion (everything after the prompt's ``<think>``), e.g.
    ``" 3+5=8 8+2=10 check 3+5=8 ok </think> \\boxed{10}"``; ``checks`` defaults to a draw
    from :data:`CHECK_WEIGHTS`."""
    steps = problem.steps()
    if checks is None:
        checks = rng.choices(range(len(CHECK_WEIGHTS)), weights=CHECK_WEIGHTS)[0]
    redundant = [f"check {rng.choice(steps)} ok" for _ in range(checks)]
    return " " + " ".join(steps + redundant) + f" </think> \\boxed{{{problem.answer}}}"


def make_rows(counts: dict[int, int], rng: random.Random, split: str, exclude: set[str],
              with_trace: bool = False, distinct: bool = False) -> list[dict]:
    """``counts[level]`` rows per level (levels interleaved), skipping texts in ``exclude``;
    ``distinct`` also skips repeats within the split and adds the chosen texts to ``exclude``."""
    rows, left = [], dict(counts)
    while any(left.values()):
        for level in LEVELS:
            if not left.get(level):
                continue
            problem = sample_problem(rng, level)
            if problem.text in exclude:
                continue
            if distinct:
                exclude.add(problem.text)
            row = {"id": f"{split}-{len(rows):05d}", "problem": problem.text, "answer": str(problem.answer),
                   "level": level}
            if with_trace:
                row["solution"] = trace(problem, rng)
            rows.append(row)
            left[level] -= 1
    return rows


def make_splits(seed: int = 0, sizes: dict[str, dict[int, int]] = SPLITS) -> dict[str, list[dict]]:
    """The three splits, from one seeded generator. Test problems are distinct and never appear
    in ``sft`` or ``train``, which repeat problems freely (level 1 has only 81 distinct ones)."""
    rng = random.Random(seed)
    held_out: set[str] = set()
    test = make_rows(sizes["test"], rng, "test", held_out, distinct=True)
    return {
        "sft": make_rows(sizes["sft"], rng, "sft", held_out, with_trace=True),
        "train": make_rows(sizes["train"], rng, "train", held_out),
        "test": test,
    }


def write_splits(out: str | Path, seed: int = 0) -> dict[str, Path]:
    """Write ``<out>/{sft,train,test}.jsonl``; returns split -> path."""
    return write_jsonl_splits(make_splits(seed), out)


def write_jsonl_splits(splits: dict[str, list[dict]], out: str | Path) -> dict[str, Path]:
    """Write each split's rows to ``<out>/<split>.jsonl``; returns split -> path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for split, rows in splits.items():
        paths[split] = out / f"{split}.jsonl"
        paths[split].write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lapo_lightning.demo.task", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="data/demo", help="folder for sft.jsonl, train.jsonl and test.jsonl")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    for split, path in write_splits(args.out, args.seed).items():
        print(f"{split}: {sum(1 for _ in path.open())} rows -> {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
