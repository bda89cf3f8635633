"""Data recipes: the YAML under ``configs/data/`` that says which sources make the training set.

Flow: :func:`load_recipe` reads and checks a recipe into a :class:`Recipe` (its sources are
``sources.Source``); ``mix.resolve`` builds the problem set from it;
``resolved.py`` writes that set to the recipe's ``output`` file, which both training
stages read. A recipe looks like::

    output: runs/data/my_mix.jsonl          # the resolved set (JSON lines), read by both stages
    sources:
      - {name: a, path: org/hub-set, split: train, count: 600, columns: {problem: question}}
      - {name: b, path: data/b.jsonl, min_level: 3, max_level: 5, fraction: 0.5,
         columns: {answer: null, solution: solution, level: level}}
    deduplicate: true                       # drop repeats of a normalised problem text
    contamination:                          # problems also in an evaluation set
      eval_config: configs/eval.yaml        # its data.benchmarks files; and/or
      files: [data/math500.jsonl]           # any problem files
      action: drop                          # drop (default) | keep (report only) | error

Paths are relative to the working folder, as in every other config. The seed of the draws is
the run's ``data.seed`` (``lapo data --seed``), not part of the recipe, so the training config
that reads a recipe decides it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from lapo_lightning.problem_sets.sources import Source, source_from_dict
from lapo_lightning.problem_sets.text import text_key
from lapo_lightning.problem_sets.files import DataError, ProblemFields, load_problems, raise_all

RECIPE_SUFFIXES = (".yaml", ".yml")
ACTIONS = ("drop", "keep", "error")


@dataclass
class Contamination:
    """Which evaluation problems training must not contain, and what to do with overlaps."""

    eval_config: str | None = None
    files: list[str] = field(default_factory=list)
    action: str = "drop"


@dataclass
class Recipe:
    sources: list[Source]
    output: str
    deduplicate: bool = True
    contamination: Contamination = field(default_factory=Contamination)
    path: str = "<recipe>"  # the YAML it came from, for messages

    def settings(self) -> dict:
        """Everything that decides the resolved set except the seed and the files' content."""
        return {"sources": [asdict(s) for s in self.sources], "deduplicate": self.deduplicate,
                "contamination": asdict(self.contamination)}


def is_recipe(path: str | None) -> bool:
    """``data.train_file`` names a recipe (not a problem file) when it ends in .yaml/.yml."""
    return bool(path) and str(path).endswith(RECIPE_SUFFIXES)


def load_recipe(path: str | Path) -> Recipe:
    import yaml

    path = Path(path)
    if not path.is_file():
        raise DataError(f"data recipe not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise DataError(f"{path}: not valid YAML ({' '.join(str(e).split())})") from None
    return recipe_from_dict(raw, str(path))


def recipe_from_dict(raw: object, origin: str) -> Recipe:
    """A :class:`Recipe` from parsed YAML; errors start with the recipe file and the key."""
    if not isinstance(raw, dict):
        raise DataError(f"{origin}: expected a mapping with sources and output, found {type(raw).__name__}")
    known = ("sources", "output", "deduplicate", "contamination")
    errors = [f"{origin}: {k}: unknown setting (known: {', '.join(known)})" for k in raw if k not in known]
    sources = raw.get("sources")
    if not isinstance(sources, list) or not sources:
        errors.append(f"{origin}: sources: required: a list of one or more sources")
    if not isinstance(raw.get("output"), str) or not raw.get("output"):
        errors.append(f"{origin}: output: required: the file the resolved problem set is written to (.jsonl)")
    elif not raw["output"].endswith(".jsonl"):
        errors.append(f"{origin}: output: {raw['output']!r} must end in .jsonl")
    if not isinstance(raw.get("deduplicate", True), bool):
        errors.append(f"{origin}: deduplicate: expected true or false, found {raw['deduplicate']!r}")
    contamination = _contamination(raw.get("contamination") or {}, origin, errors)
    raise_all(errors, origin, origin)
    parsed = []
    for i, item in enumerate(sources):
        try:
            parsed.append(source_from_dict(item, f"sources[{i}]"))
        except DataError as e:
            raise DataError("\n".join(f"{origin}: {line}" for line in e.problems),
                            [f"{origin}: {line}" for line in e.problems]) from None
    names = [s.name for s in parsed]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise DataError(f"{origin}: sources: names must differ (set name:), found {repeated} more than once")
    return Recipe(parsed, raw["output"], raw.get("deduplicate", True), contamination, origin)


def _contamination(raw: object, origin: str, errors: list[str]) -> Contamination:
    key = f"{origin}: contamination"
    if not isinstance(raw, dict):
        errors.append(f"{key}: expected a mapping (eval_config, files, action), found {type(raw).__name__}")
        return Contamination()
    errors += [f"{key}.{k}: unknown setting (known: eval_config, files, action)" for k in raw
               if k not in ("eval_config", "files", "action")]
    files = raw.get("files") or []
    if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
        errors.append(f"{key}.files: expected a list of problem files, found {files!r}")
        files = []
    action = raw.get("action", "drop")
    if action not in ACTIONS:
        errors.append(f"{key}.action: expected one of {', '.join(ACTIONS)}, found {action!r}")
    eval_config = raw.get("eval_config")
    if eval_config is not None and not isinstance(eval_config, str):
        errors.append(f"{key}.eval_config: expected a path, found {eval_config!r}")
    return Contamination(eval_config, list(files), action)


# ------------------------------------------------------------------------------ benchmarks
def benchmark_files(contamination: Contamination, origin: str = "<recipe>") -> list[tuple[str, str, ProblemFields]]:
    """(name, path, fields) of every evaluation set to check against: the eval config's
    ``data.benchmarks`` (with their ``fields``), then ``files`` (default fields)."""
    import yaml

    found = []
    if contamination.eval_config:
        path = Path(contamination.eval_config)
        key = f"{origin}: contamination.eval_config"
        if not path.is_file():
            raise DataError(f"{key}: file not found: {path}")
        config = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        benchmarks = (config.get("data") or {}).get("benchmarks") if isinstance(config, dict) else None
        if not isinstance(benchmarks, list) or not benchmarks:
            raise DataError(f"{key}: {path} lists no data.benchmarks (a lapo eval config names its benchmark files there)")
        for item in benchmarks:
            if not isinstance(item, dict) or not isinstance(item.get("path"), str):
                raise DataError(f"{key}: {path}: each of data.benchmarks needs a path, found {item!r}")
            cols = item.get("fields") or {}
            found.append((str(item.get("name") or Path(item["path"]).stem), item["path"],
                          ProblemFields(**{k: v for k, v in cols.items() if k in ("problem", "answer", "id")})))
    found += [(Path(f).stem, f, ProblemFields()) for f in contamination.files]
    return found


def benchmark_keys(contamination: Contamination, origin: str = "<recipe>") -> dict[str, set[str]]:
    """Benchmark name -> the normalised-text keys of its problems."""
    keys: dict[str, set[str]] = {}
    for name, path, fields in benchmark_files(contamination, origin):
        problems = load_problems(path, fields, split="test", key=f"{origin}: contamination ({name})")
        keys.setdefault(name, set()).update(text_key(p.problem) for p in problems)
    return keys


# ---------------------------------------------------------------------------------- inputs
def recipe_inputs(recipe: Recipe, seed: int) -> dict:
    """What decides the resolved set: a hash of the settings, the seed, and a hash of the bytes
    of every local source and benchmark file (a hub source counts by id and revision only)."""
    settings = json.dumps(recipe.settings(), sort_keys=True, default=str)
    files = {}
    for p in [s.path for s in recipe.sources] + [p for _, p, _ in _benchmarks_or_none(recipe)]:
        path = Path(p).expanduser()
        if path.is_file() or path.is_dir():
            files[p] = _digest(path)
    return {"settings": hashlib.sha1(settings.encode("utf-8")).hexdigest()[:16], "seed": seed, "files": files}


def _benchmarks_or_none(recipe: Recipe) -> list[tuple[str, str, ProblemFields]]:
    try:
        return benchmark_files(recipe.contamination, recipe.path)
    except DataError:  # reported when the set is resolved
        return []


def _digest(path: Path) -> str:
    """SHA-1 over a file's bytes, or over every file of a folder (relative name and bytes)."""
    sha = hashlib.sha1()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for f in files:
        sha.update(str(f.relative_to(path) if f != path else f.name).encode("utf-8"))
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                sha.update(block)
    return sha.hexdigest()
