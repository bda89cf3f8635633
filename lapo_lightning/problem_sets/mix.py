"""Resolving a data recipe: every source loaded, filtered, deduplicated, checked against the
evaluation benchmarks and drawn, into one problem set with a report of every count.

Flow: ``recipe.Recipe`` -> :func:`resolve` -> (``datasets.Dataset`` of id, problem,
answer, level, source, key, row; report) -> ``resolved.write_resolved``. Per source, in
the recipe's order:

1. load and map its columns (``sources``); rows without problem text or answer are
   dropped and counted (``unusable``, with up to 3 examples);
2. keep rows whose level lies in [min_level, max_level] (a batched ``Dataset.filter``);
3. with ``deduplicate``, drop repeats of a normalised problem text within the source, then
   texts already drawn from an earlier source (Arrow group-by and ``is_in``);
4. drop (or only count, or refuse) problems whose normalised text is in a benchmark;
5. draw ``count`` rows, or ``fraction`` of them, or all: a permutation seeded by the run's
   seed and the source's name (adding a source never changes another's draw), kept in the
   source's order.

Deduplication and the check run before the draw, so a source delivers exactly its count, or
the error says how many were left and where the others went. Every step is an Arrow operation
over whole columns; the one Python loop over rows is the column mapping (``sources``).
"""

from __future__ import annotations

import zlib
from contextlib import contextmanager

import numpy as np

from lapo_lightning.problem_sets.recipe import Recipe, benchmark_keys
from lapo_lightning.problem_sets.sources import Source, open_dataset, standardise
from lapo_lightning.problem_sets.text import level_label
from lapo_lightning.problem_sets.files import DataError

EXAMPLES = 3


@contextmanager
def quiet_progress():
    """No ``datasets`` progress bars while resolving (restored after): a report is printed instead."""
    from datasets.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    was = are_progress_bars_disabled()
    disable_progress_bars()
    try:
        yield
    finally:
        if not was:
            enable_progress_bars()


def resolve(recipe: Recipe, seed: int, cache_dir: str | None = None):
    """(the resolved ``datasets.Dataset``, the report dict). Deterministic for (recipe, seed, files)."""
    import datasets
    import pyarrow as pa

    with quiet_progress():
        bench = {name: pa.array(sorted(keys), pa.string())
                 for name, keys in benchmark_keys(recipe.contamination, recipe.path).items()}
        overlaps = {name: 0 for name in bench}
        taken = pa.array([], pa.string())
        parts, reports = [], []
        for source in recipe.sources:
            dataset, report = _one_source(recipe, source, seed, cache_dir, bench, overlaps, taken)
            taken = pa.concat_arrays([taken, _column(dataset, "key").combine_chunks()]) if len(dataset) else taken
            parts.append(dataset)
            reports.append(report)
        mixed = datasets.concatenate_datasets(parts).remove_columns(["issue"])
        _check_unique_ids(mixed, recipe)
    report = {"recipe": recipe.path, "seed": seed, "total": len(mixed), "sources": reports,
              "levels": level_counts(mixed), "benchmarks": overlaps,
              "contamination_action": recipe.contamination.action if bench else None}
    return mixed, report


def _one_source(recipe: Recipe, source: Source, seed: int, cache_dir, bench: dict, overlaps: dict, taken):
    import pyarrow.compute as pc

    ds = standardise(open_dataset(source, cache_dir), source)
    report = {"name": source.name, "from": source.describe(), "loaded": len(ds)}
    issues = _column(ds, "issue")
    bad = pc.is_valid(issues).to_numpy(zero_copy_only=False)
    report["unusable"] = int(bad.sum())
    report["unusable_examples"] = [f"row {r}: {why}" for r, why in zip(
        _column(ds, "row").filter(bad).to_pylist()[:EXAMPLES], issues.filter(bad).to_pylist()[:EXAMPLES])]
    ds = _keep(ds, ~bad)
    before = len(ds)
    if source.min_level is not None or source.max_level is not None:
        ds = ds.with_format("arrow").filter(_level_mask, batched=True, keep_in_memory=True, load_from_cache_file=False,
                                            fn_kwargs={"low": source.min_level, "high": source.max_level})
        ds = ds.with_format(None)
    report["filtered_out"] = before - len(ds)
    report["duplicates_within"] = report["duplicates_across"] = 0
    if recipe.deduplicate:
        before = len(ds)
        ds = _first_of_each_key(ds)
        report["duplicates_within"] = before - len(ds)
        seen = pc.is_in(_column(ds, "key"), value_set=taken).to_numpy(zero_copy_only=False)
        report["duplicates_across"] = int(seen.sum())
        ds = _keep(ds, ~seen)
    found = np.zeros(len(ds), dtype=bool)
    for name, keys in bench.items():
        hit = pc.is_in(_column(ds, "key"), value_set=keys).to_numpy(zero_copy_only=False)
        overlaps[name] += int(hit.sum())
        found |= hit
    report["contaminated"] = int(found.sum())
    if found.any() and recipe.contamination.action == "error":
        examples = _column(ds, "problem").filter(found).to_pylist()[:EXAMPLES]
        raise DataError(f"{recipe.path}: {source.key} ({source.name}): {int(found.sum())} problems are also in the "
                        f"evaluation benchmarks (contamination.action: error), e.g. {[e[:80] for e in examples]}; "
                        "set contamination.action: drop to leave them out")
    if recipe.contamination.action == "drop":
        ds = _keep(ds, ~found)
    report["available"] = len(ds)
    ds = _draw(ds, source, seed, report, recipe.path)
    report["drawn"] = len(ds)
    return ds, report


def _column(ds, name: str):
    """One column as an Arrow ChunkedArray, through the dataset's current row selection."""
    return ds.with_format("arrow")[name]


def _keep(ds, mask: np.ndarray):
    """The rows where ``mask`` is true, in order (an index selection: nothing is copied)."""
    return ds if mask.all() else ds.select(np.flatnonzero(mask))


def _level_mask(table, low: float | None, high: float | None) -> np.ndarray:
    """Batched filter on an Arrow table: level within [low, high]; a missing level never passes."""
    import pyarrow.compute as pc

    level = table["level"]
    keep = pc.is_valid(level)
    if low is not None:
        keep = pc.and_(keep, pc.greater_equal(level, low))
    if high is not None:
        keep = pc.and_(keep, pc.less_equal(level, high))
    return pc.fill_null(keep, False).to_numpy(zero_copy_only=False)


def _first_of_each_key(ds):
    """The first row of each normalised text, in the source's order (an Arrow group-by)."""
    import pyarrow as pa

    table = pa.table({"key": _column(ds, "key"), "i": pa.array(np.arange(len(ds)))})
    first = table.group_by("key", use_threads=False).aggregate([("i", "min")])["i_min"].to_numpy()
    return ds if len(first) == len(ds) else ds.select(np.sort(first))


def _draw(ds, source: Source, seed: int, report: dict, origin: str):
    available = len(ds)
    wanted = source.count if source.count is not None else (
        round(available * source.fraction) if source.fraction is not None else available)
    if wanted > available:
        raise DataError(
            f"{origin}: {source.key}.count: {wanted} problems asked of {source.name}, only {available} left ("
            f"loaded {report['loaded']}, unusable {report['unusable']}, outside the levels {report['filtered_out']}, "
            f"repeated {report['duplicates_within']}, already drawn from an earlier source {report['duplicates_across']},"
            f" in a benchmark {report['contaminated']}); lower count, or use fraction")
    if wanted == available:
        return ds
    rng = np.random.default_rng([seed, zlib.crc32(source.name.encode("utf-8"))])
    return ds.select(np.sort(rng.permutation(available)[:wanted]))


def _check_unique_ids(ds, recipe: Recipe) -> None:
    import pyarrow as pa
    import pyarrow.compute as pc

    counts = pa.table({"id": _column(ds, "id")}).group_by("id", use_threads=False).aggregate([("id", "count")])
    repeated = counts.filter(pc.greater(counts["id_count"], 1))["id"].to_pylist()
    if repeated:
        raise DataError(
            f"{recipe.path}: {len(repeated)} problem ids occur more than once in the resolved set, e.g. "
            f"{sorted(repeated)[:3]} (ids from the sources' columns.id must be unique across sources, and with "
            "deduplicate: false repeated texts share their hashed id): set columns.id to null to hash the text, "
            "or deduplicate: true")


def level_counts(ds) -> dict[str, dict[str, int]]:
    """Source -> level label -> problems (labels as :func:`text.level_label`, sorted by level)."""
    import pyarrow as pa

    table = pa.table({"source": _column(ds, "source"), "level": _column(ds, "level")})
    grouped = table.group_by(["source", "level"], use_threads=False).aggregate([("source", "count")]).to_pylist()
    out: dict[str, dict[str, int]] = {}
    for row in sorted(grouped, key=lambda r: (r["source"], r["level"] is None, r["level"] or 0)):
        out.setdefault(row["source"], {})[level_label(row["level"])] = row["source_count"]
    return out
