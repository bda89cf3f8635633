"""The length table: the one versioned file that stage 1 hands to stage 2.

Stage 1's ``LengthStatsCollector`` callback records, per problem, the median length of the
correct completions from the most recent step in which the problem was sampled (paper
Eq. 5), and writes this table at the end of fit. Stage 2's budget callback reads it and
turns each median into the token budget n(q) stated in the prompt (paper Eq. 6), which
Eq. 8 refines.

How it departs from the official LAPO code: entries are keyed by a stable problem id,
never by prompt text; medians come from generated token ids (no prompt text counted); the
file is versioned and written atomically (temp file + fsync + ``os.replace``), and the
same content (``to_dict``) is stored in checkpoints so a resumed run continues exactly.
``metadata.complete`` tells a finished run's table (true) from one written at a checkpoint
(false: the run may have been killed), which stage 2 refuses unless told otherwise. Loading
refuses medians that no run can produce (0 or under one token such as 0.4, above 10^6, NaN,
infinite, negative), naming the file and the problem id.

Run ``python -m lapo_lightning.length_table PATH [--dataset FILE]`` to inspect a table.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from lapo_lightning.safety.atomic import write_file

FORMAT = "lapo-length-table"
FORMAT_VERSION = 1
QUANTILES = (0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0)
MAX_TOKENS = 1e6  # no completion is this long: a larger median is a corrupt or hand-edited table
LOW_COVERAGE = 0.5  # below this share of problems with a target, `main` says what it means and what to try


def round_half_up(tokens: float) -> int:
    """A median length as a whole token budget, halves rounded up (100.5 -> 101, 101.5 -> 102)."""
    return int(math.floor(tokens + 0.5))


class LengthTableError(ValueError):
    """A length table file that cannot be read or written; the message names the file."""


@dataclass
class LengthEntry:
    """One problem's statistics, in generated tokens.

    ``median``/``low``/``high`` are the median and band edges of the correct lengths in the
    latest step the problem was sampled; all None (and ``solved`` False) when no rollout was
    correct in that step. ``count`` = correct rollouts behind the median.
    """

    median: float | None
    low: float | None
    high: float | None
    count: int
    last_step: int
    solved: bool


@dataclass
class LengthTable:
    entries: dict[str, LengthEntry] = field(default_factory=dict)
    metadata: dict = field(default_factory=dict)

    # ----- targets -------------------------------------------------------------------------
    def target(self, problem_id: str) -> int | None:
        """Rounded median (halves round up), or None when the problem is unsolved or missing.

        Half-up rather than Python's banker's rounding: a median of two lengths is often
        x.5, and 100.5 -> 100 but 101.5 -> 102 would look like a bug.
        """
        entry = self.entries.get(problem_id)
        if entry is None or not entry.solved or entry.median is None:
            return None
        return round_half_up(entry.median)

    def coverage(self, problem_ids: list[str]) -> float:
        """Share of ``problem_ids`` that have a target (in the table and solved); 0.0 for none."""
        ids = set(problem_ids)
        return sum(self.target(pid) is not None for pid in ids) / len(ids) if ids else 0.0

    def match_report(self, problem_ids: list[str]) -> dict:
        """How the table lines up with a dataset's ids (counts, plus up to 3 example ids)."""
        ids, known = set(problem_ids), set(self.entries)
        both, missing, unknown = ids & known, sorted(ids - known), sorted(known - ids)
        unsolved = sum(self.target(pid) is None for pid in both)
        return {
            "dataset": len(ids),
            "table": len(known),
            "in_both": len(both),
            "with_target": len(both) - unsolved,
            "unsolved": unsolved,
            "missing_from_table": len(missing),
            "unknown_to_dataset": len(unknown),
            "missing_examples": missing[:3],
            "unknown_examples": unknown[:3],
        }

    def summary(self) -> dict:
        """Counts and target quantiles (linear interpolation, as numpy's default)."""
        targets = sorted(t for t in map(self.target, self.entries) if t is not None)
        n = len(self.entries)
        return {
            "count": n,
            "solved": len(targets),
            "unsolved_share": (n - len(targets)) / n if n else 0.0,
            "quantiles": {q: _quantile(targets, q) for q in QUANTILES} if targets else {},
        }

    def format_summary(self) -> str:
        s = self.summary()
        lines = [f"length table: {s['count']} problems, {s['solved']} solved ({s['unsolved_share']:.1%} unsolved)"]
        if s["quantiles"]:
            names = {0.0: "min", 0.5: "median", 1.0: "max"}
            parts = [f"{names.get(q, f'p{round(q * 100)}')} {v:g}" for q, v in s["quantiles"].items()]
            lines.append("target tokens: " + ", ".join(parts))
        for key, value in sorted(self.metadata.items()):
            lines.append(f"  {key}: {value}")
        return "\n".join(lines)

    # ----- (de)serialisation ---------------------------------------------------------------
    def to_dict(self) -> dict:
        """The file's JSON content; also what a callback keeps in its checkpoint state."""
        return {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "metadata": self.metadata,
            "entries": {pid: asdict(e) for pid, e in self.entries.items()},
        }

    @classmethod
    def from_dict(cls, data: object, origin: str = "<dict>") -> LengthTable:
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            found = data.get("format") if isinstance(data, dict) else type(data).__name__
            raise LengthTableError(f"{origin}: not a length table (format {found!r}, expected {FORMAT!r})")
        if data.get("version") != FORMAT_VERSION:
            raise LengthTableError(
                f"{origin}: length table version {data.get('version')!r} found, expected {FORMAT_VERSION}"
            )
        entries, metadata = data.get("entries"), data.get("metadata", {})
        if not isinstance(entries, dict) or not isinstance(metadata, dict):
            raise LengthTableError(f"{origin}: 'entries' and 'metadata' must be JSON objects")
        return cls({pid: _parse_entry(pid, raw, origin) for pid, raw in entries.items()}, dict(metadata))

    def save(self, path: str | os.PathLike) -> None:
        """Write atomically (``atomic.write_file``): a reader sees the old file or the new one,
        never a partial one; a full disk or read-only folder raises an error naming the folder."""
        # allow_nan=False: a NaN median would write invalid JSON; fail before touching the file.
        text = json.dumps(self.to_dict(), indent=1, sort_keys=True, allow_nan=False) + "\n"
        write_file(path, lambda f: f.write(text.encode("utf-8")), what="length table")

    @property
    def complete(self) -> bool | None:
        """True when written at the end of a finished run, False when written at a checkpoint of a
        run still going (or killed), None for a table from before this mark existed."""
        value = self.metadata.get("complete")
        return value if isinstance(value, bool) else None

    @classmethod
    def load(cls, path: str | os.PathLike) -> LengthTable:
        path = Path(path)
        if not path.is_file():
            raise LengthTableError(f"length table not found: {path} (stage 1 writes it at the end of fit)")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise LengthTableError(f"{path}: corrupt length table, not valid JSON ({e})") from None
        return cls.from_dict(data, origin=str(path))


def _parse_entry(pid: str, raw: object, origin: str) -> LengthEntry:
    def bad(why: str) -> LengthTableError:
        return LengthTableError(f"{origin}: malformed entry for problem id {pid!r}: {why}")

    if not isinstance(raw, dict):
        raise bad(f"expected an object, found {type(raw).__name__}")
    expected = {"median", "low", "high", "count", "last_step", "solved"}
    if set(raw) != expected:
        raise bad(f"fields {sorted(raw)}, expected {sorted(expected)}")
    for name in ("median", "low", "high"):
        value = raw[name]
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise bad(f"{name} must be a number or null, found {value!r}")
    for name in ("count", "last_step"):
        if isinstance(raw[name], bool) or not isinstance(raw[name], int) or raw[name] < 0:
            raise bad(f"{name} must be an integer >= 0, found {raw[name]!r}")
    median = raw["median"]
    if median is not None and not (math.isfinite(median) and 1 <= median <= MAX_TOKENS):
        raise bad(f"median {median!r} is not a token count (expected a finite number of tokens from 1 to "
                  f"{MAX_TOKENS:.0e}; the file was edited or corrupted: rewrite it with stage 1)")
    for name in ("low", "high"):
        value = raw[name]
        if value is not None and not (math.isfinite(value) and 0 <= value <= MAX_TOKENS):
            raise bad(f"{name} {value!r} is not a token count (expected a finite number from 0 to {MAX_TOKENS:.0e})")
    if not isinstance(raw["solved"], bool):
        raise bad(f"solved must be true/false, found {raw['solved']!r}")
    if raw["solved"] != (raw["median"] is not None):  # one truth: solved <=> a median exists
        raise bad(f"solved={raw['solved']} but median={raw['median']!r}")
    return LengthEntry(**raw)


def _quantile(sorted_values: list[int], q: float) -> float:
    pos = q * (len(sorted_values) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def check_writable(path: str | os.PathLike) -> None:
    """Fail at start-up, not after hours of training, if the table could not be written."""
    path = Path(path)
    if path.is_dir():
        raise LengthTableError(f"cannot write the length table to {path}: it is a directory")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        probe = path.parent / f".{path.name}.probe-{os.getpid()}"
        probe.write_text("ok", encoding="utf-8")
        probe.unlink()
    except OSError as e:
        raise LengthTableError(f"cannot write the length table to {path}: {e.strerror or e}") from None


def coverage_advice(share: float) -> str:
    """What a low share of problems with a target means for stage 2, and what to try."""
    return "\n".join([
        f"advice: only {share:.0%} of the problems have a target. In stage 2 every problem without one states the "
        "fallback budget (BudgetTargets fallback_budget, by default the cap model.generation.max_new_tokens) and "
        "learns no length of its own.",
        "  - first read verify/miss_rate and verify/unclosed_think_rate in stage 1's metrics.csv: a high miss rate "
        "means no final answer was found (no \\boxed{}); an unclosed-think rate near 1 means completions never "
        "closed </think>: cut off by the cap, or a model that writes no think tags (then set "
        "`verifier: {class_path: MathVerifier, init_args: {think_tags: false}}`)",
        "  - then try a stronger base model, more samples per problem (model.grpo.group_size), a larger cap "
        "(model.generation.max_new_tokens) or easier training data",
    ])


def _dataset_ids(path: str, problem: str, answer: str, id_field: str | None) -> list[str]:
    """Problem ids of ``--dataset``, read as the data module reads them (a data recipe: its
    resolved set). Imported here only: a plain ``lapo table PATH`` needs none of it."""
    from lapo_lightning.problem_sets.recipe import is_recipe, load_recipe
    from lapo_lightning.problem_sets.files import DataError, ProblemFields, load_problems

    try:
        if is_recipe(path):
            path = load_recipe(path).output
        return [p.id for p in load_problems(path, ProblemFields(problem, answer, id_field), key="--dataset")]
    except DataError as e:  # one error type for main to print
        raise LengthTableError(str(e)) from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lapo_lightning.length_table", description=__doc__.split("\n")[0])
    parser.add_argument("path", help="length table JSON written by stage 1")
    parser.add_argument("--dataset", help="problems file (.jsonl/.json/.parquet), or a data recipe (.yaml: its "
                        "resolved set), to match the table against")
    parser.add_argument("--problem-field", default="problem")
    parser.add_argument("--answer-field", default="answer")
    parser.add_argument("--id-field", default="id", help="'' hashes the problem text, as the data module does")
    args = parser.parse_args(argv)
    try:
        table = LengthTable.load(args.path)
        print(table.format_summary())
        summary = table.summary()
        share = summary["solved"] / summary["count"] if summary["count"] else 0.0
        if args.dataset:
            ids = _dataset_ids(args.dataset, args.problem_field, args.answer_field, args.id_field or None)
            report = table.match_report(ids)
            share = table.coverage(ids)  # what stage 2 will see on this data
            print(f"match against {args.dataset} (coverage {share:.1%}):")
            for key, value in report.items():
                print(f"  {key}: {value}")
        if share < LOW_COVERAGE:
            print(coverage_advice(share))
    except LengthTableError as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)  # one line, whatever the message
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
