"""How long a data recipe takes on a real-sized source: load, map, deduplicate, contamination check.

Writes a synthetic MATH-like source of ``--rows`` rows (default 100,000: problem text of about
300 characters, a worked solution of about 900 ending in ``\\boxed{}``, a "Level k" column;
5% of the rows repeat an earlier problem in other spacing and case) and a benchmark file of
``--bench-rows`` problems (1% of them taken from the source), then times each step of
``lapo_lightning/problem_sets/mix.py`` on it and prints a table:

    python benchmarks/data_pipeline.py                 # 100,000 rows
    python benchmarks/data_pipeline.py --rows 2000     # a quick run (what the smoke test does)

Steps: ``load`` (``load_dataset("json")`` into a fresh cache: JSON -> Arrow), ``load, cached``
(the same call again), ``map`` (the column mapping: answer from the solution's box, level,
normalised-text key and id), ``dedup`` (first row of each key, an Arrow group-by), ``contamination``
(reading the benchmark file and an Arrow ``is_in``), and ``resolve`` (the whole recipe: all of
the above plus a level filter and a seeded draw of 10% of the rows).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

WORDS = ("integer triangle circle sum product prime digit sequence polynomial root area angle probability "
         "remainder fraction square cube value number points line chord radius").split()


def problem_text(rng: random.Random, i: int) -> str:
    words = " ".join(rng.choice(WORDS) for _ in range(40))
    return f"Problem {i}: let $x_{{{i}}} = {rng.randint(2, 999)}$. Find the {words} of $x^2 + {i % 97}x$."


def write_source(path: Path, rows: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    texts = []
    with open(path, "w", encoding="utf-8") as f:
        for i in range(rows):
            if texts and rng.random() < 0.05:  # an earlier problem again, in other spacing and case
                text = rng.choice(texts).upper().replace(" ", "  ")
            else:
                text = problem_text(rng, i)
                texts.append(text)
            steps = " ".join(f"Step {k}: {' '.join(rng.choice(WORDS) for _ in range(12))}." for k in range(8))
            row = {"problem": text, "solution": f"{steps} So the answer is $\\boxed{{{i % 1000}}}$.",
                   "level": f"Level {rng.randint(1, 5)}", "type": rng.choice(["Algebra", "Geometry"])}
            f.write(json.dumps(row) + "\n")
    return texts


def write_benchmark(path: Path, texts: list[str], rows: int, seed: int = 1) -> None:
    rng = random.Random(seed)
    overlap = rng.sample(texts, max(1, rows // 100))
    with open(path, "w", encoding="utf-8") as f:
        for i in range(rows):
            text = overlap[i] if i < len(overlap) else f"Benchmark question {i}: {problem_text(rng, 10**7 + i)}"
            f.write(json.dumps({"id": f"b{i}", "problem": text, "answer": "1"}) + "\n")


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--bench-rows", type=int, default=5_000)
    args = parser.parse_args(argv)

    import datasets
    import numpy as np
    import pyarrow.compute as pc

    from lapo_lightning.problem_sets.mix import _column, _first_of_each_key, quiet_progress, resolve
    from lapo_lightning.problem_sets.recipe import benchmark_keys, recipe_from_dict
    from lapo_lightning.problem_sets.sources import open_dataset, source_from_dict, standardise

    with tempfile.TemporaryDirectory() as tmp, quiet_progress():
        tmp = Path(tmp)
        texts = write_source(tmp / "source.jsonl", args.rows)
        write_benchmark(tmp / "bench.jsonl", texts, args.bench_rows)
        raw = {"name": "synthetic", "path": str(tmp / "source.jsonl"),
               "columns": {"problem": "problem", "answer": None, "solution": "solution", "level": "level"}}
        source = source_from_dict(raw, "sources[0]")
        cache = str(tmp / "cache")
        rows = []
        loaded, t = timed(lambda: open_dataset(source, cache))
        rows.append(("load", t, args.rows, len(loaded)))
        loaded, t = timed(lambda: open_dataset(source, cache))
        rows.append(("load, cached", t, args.rows, len(loaded)))
        mapped, t = timed(lambda: standardise(loaded, source))
        rows.append(("map", t, len(loaded), len(mapped)))
        unique, t = timed(lambda: _first_of_each_key(mapped))
        rows.append(("dedup", t, len(mapped), len(unique)))
        contamination = recipe_from_dict({"output": "o.jsonl", "sources": [raw],
                                          "contamination": {"files": [str(tmp / "bench.jsonl")]}}, "bench").contamination

        def check():
            keys = benchmark_keys(contamination)["bench"]
            import pyarrow as pa

            hit = pc.is_in(_column(unique, "key"), value_set=pa.array(sorted(keys))).to_numpy(zero_copy_only=False)
            return unique.select(np.flatnonzero(~hit))

        clean, t = timed(check)
        rows.append(("contamination", t, len(unique), len(clean)))
        recipe = recipe_from_dict({"output": "o.jsonl", "sources": [{**raw, "min_level": 3, "fraction": 0.1}],
                                   "contamination": {"files": [str(tmp / "bench.jsonl")]}}, "bench")
        (resolved, report), t = timed(lambda: resolve(recipe, seed=0, cache_dir=cache))
        rows.append(("resolve (all steps, cached load)", t, args.rows, len(resolved)))

    print(f"datasets {datasets.__version__}; {args.rows:,} source rows, {args.bench_rows:,} benchmark rows")
    print("| step | seconds | rows in | rows out |")
    print("|---|---|---|---|")
    for name, seconds, n_in, n_out in rows:
        print(f"| {name} | {seconds:.2f} | {n_in:,} | {n_out:,} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
