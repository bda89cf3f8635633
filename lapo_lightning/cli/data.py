"""``lapo data --config FILE``: resolve a data recipe, print what went in and out, write the set.

FILE is a recipe (``configs/data/*.yaml``) or a training config whose ``data.train_file``
names one (its ``data.seed`` is then the seed). Prints counts per source (loaded, unusable,
outside the levels, repeated, already drawn from an earlier source, in a benchmark, drawn),
problems per source and level, overlaps per benchmark and a few rows, then writes the resolved
set and its report (``problem_sets/resolved.py``), which stage 1 and stage 2 both read. Running it
again rewrites the set; when that changes its problems it says so, since a stage-1 length
table made from the earlier set no longer matches.

Imports neither torch nor Lightning: ``python -m lapo_lightning.cli.data --help`` returns in a
fraction of a second, and resolving the offline paper mix takes about 2 s, most of it importing
``datasets``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lapo_lightning.problem_sets.recipe import is_recipe, load_recipe
from lapo_lightning.problem_sets.text import level_label
from lapo_lightning.problem_sets.files import DataError
from lapo_lightning.problem_sets.resolved import read_manifest, report_path, resolve_and_write

COUNTS = (("loaded", "loaded"), ("unusable", "unusable"), ("filtered_out", "outside levels"),
          ("duplicates_within", "repeated"), ("duplicates_across", "in earlier source"),
          ("contaminated", "in benchmarks"), ("available", "available"), ("drawn", "drawn"))


def recipe_and_seed(config: str, seed: int | None) -> tuple[str, int]:
    """(recipe path, seed): FILE itself with ``--seed`` (default 0), or a training config's
    ``data.train_file`` with ``--seed`` or its ``data.seed`` (default 0, as LapoDataModule's)."""
    import yaml

    path = Path(config)
    if not path.is_file():
        raise DataError(f"--config: file not found: {path}")
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    data = raw.get("data") if isinstance(raw, dict) else None
    if not isinstance(data, dict):  # a recipe: load_recipe reports anything wrong with it
        return config, 0 if seed is None else seed
    train_file = data.get("train_file")
    if not is_recipe(train_file):
        raise DataError(f"--config: {path} is a training config whose data.train_file {train_file!r} is a problem "
                        "file, not a data recipe (.yaml): there is nothing to resolve")
    return train_file, int(data.get("seed", 0)) if seed is None else seed


def format_report(report: dict, dataset, rows: int = 3) -> str:
    lines = [f"recipe {report['recipe']}, seed {report['seed']}: {report['total']} problems"]
    names = [s["name"] for s in report["sources"]]
    width = max(len("source"), *map(len, names))
    head = ["source".ljust(width)] + [label for _, label in COUNTS]
    lines.append("  ".join(head))
    for s in report["sources"]:
        cells = [s["name"].ljust(width)] + [f"{s[key]:,}".rjust(len(label)) for key, label in COUNTS]
        lines.append("  ".join(cells))
    lines.append("sources: " + "; ".join(f"{s['name']} = {s['from']}" for s in report["sources"]))
    for s in report["sources"]:
        for example in s["unusable_examples"]:
            lines.append(f"  unusable in {s['name']}: {example}")
    lines.append("problems per level:")
    for name in names:
        levels = report["levels"].get(name, {})
        lines.append(f"  {name}: " + (", ".join(f"level {k}: {v:,}" for k, v in levels.items()) or "none drawn"))
    if report["benchmarks"]:
        action = {"drop": "dropped", "keep": "kept (contamination.action: keep)"}.get(report["contamination_action"], "")
        lines.append(f"overlaps with the evaluation benchmarks, {action}: "
                     + ", ".join(f"{k} {v:,}" for k, v in report["benchmarks"].items()))
    else:
        lines.append("no contamination check (the recipe names no evaluation config or files)")
    lines.append(f"first {min(rows, len(dataset))} rows:")
    for row in dataset.select(range(min(rows, len(dataset)))).to_list():
        text = " ".join(row["problem"].split())
        text = text if len(text) <= 90 else text[:87] + "..."
        lines.append(f"  {row['id']} [{row['source']}, level {level_label(row['level'])}] {text} -> {row['answer']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lapo data", description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True,
                        help="a data recipe (configs/data/*.yaml) or a training config whose data.train_file names one")
    parser.add_argument("--seed", type=int, default=None, help="seed of the draws (default: the config's data.seed, or 0)")
    parser.add_argument("--rows", type=int, default=3, help="example rows to print")
    parser.add_argument("--cache-dir", default=None, help="datasets cache (default: HF_DATASETS_CACHE)")
    args = parser.parse_args(argv)
    try:
        recipe, seed = recipe_and_seed(args.config, args.seed)
        previous = read_manifest(load_recipe(recipe).output)
        output, dataset, report = resolve_and_write(recipe, seed, args.cache_dir)
    except DataError as e:
        print("error: " + "\n  ".join(str(e).splitlines()), file=sys.stderr)
        return 2
    print(format_report(report, dataset, args.rows))
    print(f"wrote {output} ({len(dataset):,} problems) and {report_path(output)}")
    new = read_manifest(output)
    if previous is not None and new is not None and previous.get("sha1") != new.get("sha1"):
        print(f"note: this replaced an earlier, different set in {output}: a stage-1 length table made from it no "
              "longer matches, and stage 2 will refuse it (run stage 1 again)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
