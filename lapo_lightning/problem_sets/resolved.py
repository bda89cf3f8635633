"""The resolved problem set: one JSON-lines file that both training stages read, and its report.

Flow: ``lapo data --config RECIPE`` (``cli/data.py``), or the first training stage whose
``data.train_file`` names the recipe (``LapoDataModule.prepare_data``), resolves the recipe
(``mix.resolve``) and writes two files, each atomically:

- the recipe's ``output``, e.g. ``runs/data/paper_mix.jsonl``: one problem per line with
  ``id``, ``problem``, ``answer``, ``level``, ``source``, read like any ``data.train_file``;
- beside it ``<name>.report.json``: the recipe's inputs (settings hash, seed, a hash of each
  local file), the output file's own hash, and the full report (counts per source and level,
  overlaps, duplicates).

Every later reader (stage 2, a resume, another process) takes the file as it is, after
checking that the recipe, the seed and the files still give the same inputs and that the file
was not edited: a stale set is refused with the command that resolves it again, never quietly
rebuilt under a stage-1 length table made from the old one.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from lapo_lightning.safety.atomic import write_file
from lapo_lightning.problem_sets.recipe import load_recipe, recipe_inputs
from lapo_lightning.problem_sets.files import DataError

FORMAT = "lapo-resolved-set"
COLUMNS = ("id", "problem", "answer", "level", "source")


def report_path(output: str | Path) -> Path:
    """``runs/data/mix.jsonl`` -> ``runs/data/mix.report.json``."""
    output = Path(output)
    return output.with_name(output.stem + ".report.json")


def rows_of(dataset) -> list[dict]:
    """The resolved rows as written: integral levels as ints (``3``, not ``3.0``)."""
    rows = dataset.select_columns(list(COLUMNS)).to_list()
    for row in rows:
        level = row["level"]
        if level is not None and float(level).is_integer():
            row["level"] = int(level)
    return rows


def write_resolved(dataset, report: dict, recipe_path: str, inputs: dict, output: str | Path) -> Path:
    """Write the set, then its report (the report names the set's hash, so it goes second)."""
    text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows_of(dataset)).encode("utf-8")
    output = Path(output)
    write_file(output, lambda f: f.write(text), what="resolved problem set")
    manifest = {"format": FORMAT, "version": 1, "recipe": recipe_path, "inputs": inputs,
                "sha1": hashlib.sha1(text).hexdigest(), "rows": len(dataset), "report": report}
    body = (json.dumps(manifest, indent=1, ensure_ascii=False) + "\n").encode("utf-8")
    write_file(report_path(output), lambda f: f.write(body), what="resolved set report")
    return output


def read_manifest(output: str | Path) -> dict | None:
    path = report_path(output)
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return manifest if isinstance(manifest, dict) and manifest.get("format") == FORMAT else None


def stale_reasons(manifest: dict, inputs: dict, output: Path) -> list[str]:
    """Why the written set is not what the recipe gives now (empty: it is)."""
    old = manifest.get("inputs") or {}
    reasons = []
    if old.get("seed") != inputs["seed"]:
        reasons.append(f"it was drawn with seed {old.get('seed')}, this run's data.seed is {inputs['seed']}")
    if old.get("settings") != inputs["settings"]:
        reasons.append("the recipe's settings changed")
    old_files, new_files = old.get("files") or {}, inputs["files"]
    changed = sorted(p for p in set(old_files) | set(new_files) if old_files.get(p) != new_files.get(p))
    if changed:
        reasons.append(f"these files changed: {', '.join(changed)}")
    if hashlib.sha1(output.read_bytes()).hexdigest() != manifest.get("sha1"):
        reasons.append(f"{output} itself was edited after it was written")
    return reasons


def ensure_resolved(recipe_path: str, seed: int, cache_dir: str | None = None, key: str = "data.train_file") -> Path:
    """The recipe's resolved set: the file already written when it is current, else resolved and
    written now when there is none; a stale one raises (``lapo data`` rewrites it on purpose)."""
    recipe = load_recipe(recipe_path)
    output, inputs = Path(recipe.output), recipe_inputs(recipe, seed)
    manifest = read_manifest(output)
    if output.is_file() and manifest is not None:
        reasons = stale_reasons(manifest, inputs, output)
        if reasons:
            raise DataError(
                f"{key}: the resolved set {output} no longer matches {recipe_path}: {'; '.join(reasons)}. Resolve it "
                f"again with `lapo data --config {recipe_path} --seed {seed}` (a stage-1 length table made from the "
                "old set will then be refused by stage 2: run stage 1 again), or point the recipe's output elsewhere")
        return output
    return resolve_and_write(recipe_path, seed, cache_dir)[0]


def resolve_and_write(recipe_path: str, seed: int, cache_dir: str | None = None):
    """(output path, resolved dataset, report): resolves the recipe and writes the set and its report."""
    from lapo_lightning.problem_sets.mix import resolve

    recipe = load_recipe(recipe_path)
    inputs = recipe_inputs(recipe, seed)
    dataset, report = resolve(recipe, seed, cache_dir)
    return write_resolved(dataset, report, recipe_path, inputs, recipe.output), dataset, report
