"""One source of training problems, read through Hugging Face ``datasets`` and mapped to the
columns every later step expects.

Flow: a data recipe (``recipe.py``) lists sources; for each, :func:`open_dataset` loads it
and :func:`standardise` maps its columns (one batched ``Dataset.map``) to :data:`FEATURES`:
``id``, ``problem``, ``answer``, ``level``, ``source``, ``key`` (the normalised-text key of
``text.py``), ``row`` (1-based row in the source, for messages) and ``issue`` (why the
row cannot be used, or null). ``mix.py`` then filters, deduplicates, checks and draws.

Where a source can live, all loaded by ``datasets``:

- a hub dataset id: ``load_dataset(id, config, split=..., revision=...)``;
- a local folder laid out like a hub dataset repository (data files, optionally a README.md
  card whose ``configs:`` name them): the very same ``load_dataset`` call, given the folder;
- a folder written by ``Dataset.save_to_disk`` (or ``DatasetDict``'s): ``load_from_disk``;
- a local .jsonl/.json/.parquet/.csv file: ``load_dataset(builder, data_files=file)``. A JSON
  file that Arrow cannot read is read again by ``problems.py``, which names each bad line.

Nothing is written beside a source: mapped and filtered sets stay in memory; only
``load_dataset`` keeps its usual cache (``HF_DATASETS_CACHE``, or ``cache_dir``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from lapo_lightning.boxed import extract_boxed
from lapo_lightning.problem_sets.text import level_value, text_id, text_key
from lapo_lightning.problem_sets.files import DataError, id_problem, raise_all, read_local, text_value_problem

BUILDERS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}
SAVED_MARKERS = ("state.json", "dataset_dict.json")  # what save_to_disk writes
_TEXT_TYPES = ("string", "large_string")
_NUMBER_TYPES = ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
                 "float16", "float32", "float64")


def features():
    """The columns of every standardised source (``datasets.Features``; imported lazily)."""
    from datasets import Features, Value

    return Features({"id": Value("string"), "problem": Value("string"), "answer": Value("string"),
                     "level": Value("float64"), "source": Value("string"), "key": Value("string"),
                     "row": Value("int64"), "issue": Value("string")})


@dataclass
class Columns:
    """Which column of the source holds what.

    Args:
        problem: the problem text.
        answer: the final answer (numbers become text); null when the source has none.
        solution: a worked solution whose last ``\\boxed{}`` is the answer (MATH); used where
            ``answer`` is null or empty.
        level: an optional level or difficulty (``3``, ``"Level 3"``, ``2.5``), for filters and counts.
        id: an optional stable id; rows without one get ``q-`` + a hash of the normalised text.
    """

    problem: str = "problem"
    answer: str | None = "answer"
    solution: str | None = None
    level: str | None = None
    id: str | None = None


@dataclass
class Source:
    """One source of a recipe (``sources[i]`` in its YAML).

    Args:
        path: a hub dataset id, a local folder, or a local .jsonl/.json/.parquet/.csv file.
        name: short name, printed and stored in each row's ``source``; default from ``path``.
        config: the hub dataset's configuration (``name`` in ``load_dataset``), or a local
            hub-layout folder's.
        split: the split to read (hub ids and folders; a file is one split).
        revision: a hub commit, tag or branch (pin it: an unpinned set can change upstream).
        columns: see :class:`Columns`.
        min_level, max_level: keep rows whose level lies in [min_level, max_level] (rows
            without a level are dropped when either is set).
        count, fraction: how many of the rows left after filtering, deduplication and the
            contamination check to draw (seeded); neither = all of them.
        key: where the source sits in its recipe, e.g. ``sources[1]``: messages name it.
    """

    path: str
    name: str = ""
    config: str | None = None
    split: str = "train"
    revision: str | None = None
    columns: Columns = field(default_factory=Columns)
    min_level: float | None = None
    max_level: float | None = None
    count: int | None = None
    fraction: float | None = None
    key: str = "sources[0]"

    def describe(self) -> str:
        """Where the rows came from, for reports: ``id (config, split, revision)`` or the path."""
        if Path(self.path).expanduser().is_file():  # one file is one split: config and split do not apply
            return self.path
        extra = [x for x in (self.config, self.split, self.revision and f"revision {self.revision}") if x]
        return f"{self.path} ({', '.join(extra)})" if extra else self.path


def source_from_dict(raw: object, key: str) -> Source:
    """A :class:`Source` from its YAML mapping; every wrong key or value is one line of the error."""
    if not isinstance(raw, dict):
        raise DataError(f"{key}: expected a mapping (path, columns, count, ...), found {type(raw).__name__}")
    allowed = [f.name for f in fields(Source) if f.name != "key"]
    errors = [f"{key}.{name}: unknown setting (known: {', '.join(allowed)})" for name in raw if name not in allowed]
    if not isinstance(raw.get("path"), str) or not raw.get("path"):
        errors.append(f"{key}.path: required: a hub dataset id, a local folder or a .jsonl/.json/.parquet/.csv file")
    columns = raw.get("columns") or {}
    col_names = [f.name for f in fields(Columns)]
    if not isinstance(columns, dict):
        errors.append(f"{key}.columns: expected a mapping of {', '.join(col_names)}, found {type(columns).__name__}")
        columns = {}
    errors += [f"{key}.columns.{name}: unknown role (known: {', '.join(col_names)})" for name in columns
               if name not in col_names]
    errors += [f"{key}.columns.{name}: expected a column name or null, found {value!r}" for name, value in
               columns.items() if name in col_names and value is not None and not isinstance(value, str)]
    errors += _number_errors(raw, key)
    raise_all(errors, key, "the recipe")
    cols = Columns(**columns)
    if not cols.problem:
        raise DataError(f"{key}.columns.problem: required (the column holding the problem text)")
    if not cols.answer and not cols.solution:
        raise DataError(f"{key}.columns: name an answer column (columns.answer) or a solution column whose last "
                        "\\boxed{} is the answer (columns.solution)")
    values = {k: v for k, v in raw.items() if k != "columns"}
    name = values.pop("name", None) or Path(raw["path"].rstrip("/")).stem or raw["path"]
    return Source(**values, name=str(name), columns=cols, key=key)


def _number_errors(raw: dict, key: str) -> list[str]:
    errors = []
    count, fraction = raw.get("count"), raw.get("fraction")
    if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 1):
        errors.append(f"{key}.count: expected a whole number >= 1, found {count!r}")
    if fraction is not None and (isinstance(fraction, bool) or not isinstance(fraction, (int, float))
                                 or not 0 < fraction <= 1):
        errors.append(f"{key}.fraction: expected a number in (0, 1], found {fraction!r}")
    if count is not None and fraction is not None:
        errors.append(f"{key}: set count or fraction, not both (found count {count!r}, fraction {fraction!r})")
    for name in ("min_level", "max_level"):
        value = raw.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            errors.append(f"{key}.{name}: expected a number, found {value!r}")
    lo, hi = raw.get("min_level"), raw.get("max_level")
    if isinstance(lo, (int, float)) and isinstance(hi, (int, float)) and lo > hi:
        errors.append(f"{key}: min_level {lo} is above max_level {hi}: no row could pass")
    return errors


# ----------------------------------------------------------------------------------- loading
def open_dataset(source: Source, cache_dir: str | None = None):
    """The source as one ``datasets.Dataset`` (its split), or a DataError naming ``source.key``."""
    path = Path(source.path).expanduser()
    looks_local = path.suffix in BUILDERS or source.path.startswith(("/", "./", "../", "~"))
    if path.is_file() or (looks_local and not path.is_dir()):
        return _open_file(path, source, cache_dir)
    if path.is_dir():
        if any((path / marker).is_file() for marker in SAVED_MARKERS):
            return _open_saved(path, source)
        return _open_repo(str(path), source, cache_dir, revision=None)  # exactly as a hub id is loaded
    return _open_repo(source.path, source, cache_dir, revision=source.revision)


def _open_file(path: Path, source: Source, cache_dir: str | None):
    import datasets

    key = f"{source.key}.path"
    if not path.is_file():
        raise DataError(f"{key}: file not found: {path} (found {'a directory' if path.is_dir() else 'nothing'} there)")
    builder = BUILDERS.get(path.suffix)
    if builder is None:
        raise DataError(f"{key}: unsupported file type {path.suffix!r} for {path} (use .jsonl, .json, .parquet or "
                        ".csv, a folder, or a hub dataset id)")
    try:
        return datasets.load_dataset(builder, data_files=str(path), split="train", cache_dir=cache_dir)
    except Exception as e:  # noqa: BLE001 - Arrow, pandas and datasets raise many types
        if builder == "json":  # name every bad line, as a data.train_file would
            errors: list[str] = []
            read_local(path, key, errors)
            raise_all(errors, key, str(path))
        raise DataError(f"{key}: could not read {path}: {type(e).__name__}: {_first_line(e)}") from None


def _open_saved(path: Path, source: Source):
    import datasets

    loaded = datasets.load_from_disk(str(path))
    if isinstance(loaded, datasets.DatasetDict):
        if source.split not in loaded:
            raise DataError(f"{source.key}.split: {source.split!r} is not a split of {path} "
                            f"(save_to_disk folder with splits {sorted(loaded)})")
        return loaded[source.split]
    return loaded


def _open_repo(name: str, source: Source, cache_dir: str | None, revision: str | None):
    import datasets

    try:
        return datasets.load_dataset(name, source.config, split=source.split, revision=revision, cache_dir=cache_dir)
    except Exception as e:  # noqa: BLE001 - ConnectionError, FileNotFoundError, ValueError, ...
        why = f"{type(e).__name__}: {_first_line(e)}"
        if "BuilderConfig" in why or "Config name is missing" in why:
            raise DataError(f"{source.key}.config: {source.config!r} is not a configuration of {name} ({why})") from None
        if "Unknown split" in why or "Bad split" in why:
            raise DataError(f"{source.key}.split: {source.split!r} is not a split of {name} ({why})") from None
        raise DataError(f"{source.key}.path: could not load {name!r} (config {source.config}, split {source.split}, "
                        f"revision {revision}): {why}. Offline (HF_DATASETS_OFFLINE=1)? Use a local file or folder, "
                        "or a dataset already in the datasets cache") from None


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else ""


# ----------------------------------------------------------------------------------- mapping
def standardise(dataset, source: Source):
    """The source's rows in :func:`features` columns: one batched ``map``, nothing written to disk.

    A missing column, or one whose type can never be text (a list, a struct), raises naming the
    setting, the column and the columns the source has. A row without problem text or answer
    keeps ``issue`` (``mix.py`` counts and drops it); an id that is unsafe as a key raises.
    """
    _check_columns(dataset, source)
    mapped = dataset.map(
        _standard_rows, batched=True, with_indices=True, remove_columns=dataset.column_names,
        features=features(), keep_in_memory=True, load_from_cache_file=False,
        fn_kwargs={"columns": vars(source.columns), "name": source.name}, desc=f"map {source.name}",
    )
    bad_ids = [issue for issue in mapped.unique("issue") if issue and issue.startswith("id ")]
    if bad_ids:
        raise_all([f"{source.key}.columns.id: column {source.columns.id!r} of {source.describe()}: {issue}"
                    for issue in sorted(bad_ids)], f"{source.key}.columns.id", source.describe())
    return mapped


def _check_columns(dataset, source: Source) -> None:
    found = list(dataset.column_names)
    errors = []
    for role, column in vars(source.columns).items():
        if column is None:
            continue
        if column not in found:
            errors.append(f"{source.key}.columns.{role}: column {column!r} not in {source.describe()}; its columns: "
                          f"{found}")
            continue
        feature = dataset.features[column]
        dtype = getattr(feature, "dtype", None)
        scalar = type(feature).__name__ == "Json" or dtype in _TEXT_TYPES + _NUMBER_TYPES
        if not scalar:
            errors.append(f"{source.key}.columns.{role}: column {column!r} of {source.describe()} holds {feature}, "
                          "expected text or numbers")
    raise_all(errors, f"{source.key}.columns", source.describe())


def _standard_rows(batch: dict[str, list], indices: list[int], columns: dict[str, str | None],
                   name: str) -> dict[str, list]:
    """Map function (module level: picklable, and ``datasets`` can fingerprint it)."""
    n = len(indices)

    def column(role: str) -> list:
        return batch[columns[role]] if columns[role] else [None] * n

    problems, answers, solutions, levels, ids = (column(r) for r in ("problem", "answer", "solution", "level", "id"))
    out: dict[str, list[Any]] = {k: [] for k in ("id", "problem", "answer", "level", "source", "key", "row", "issue")}
    for i in range(n):
        problem, issue = _text(problems[i], "problem")
        answer, answer_issue = _text(answers[i], "answer") if columns["answer"] else (None, None)
        if answer is None and isinstance(solutions[i], str):
            answer = extract_boxed(solutions[i])
            answer = answer.strip() if answer and answer.strip() else None
            answer_issue = None if answer else "no \\boxed{} answer in its solution"
        if issue is None and answer is None:
            issue = answer_issue or "no answer"
        key = text_key(problem) if problem is not None else None
        raw_id = ids[i]
        if raw_id not in (None, "") and (why := id_problem(raw_id)) is not None:
            issue = f"id in row {indices[i] + 1} {why}"
        pid = str(raw_id) if raw_id not in (None, "") else (text_id(key) if key else None)
        for k, v in (("id", pid), ("problem", problem), ("answer", answer), ("level", level_value(levels[i])),
                     ("source", name), ("key", key), ("row", indices[i] + 1), ("issue", issue)):
            out[k].append(v)
    return out


def _text(value: object, role: str) -> tuple[str | None, str | None]:
    """(the value as text, None) or (None, why it cannot be used)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None, f"no {role}"
    if (why := text_value_problem(value)) is not None:
        return None, f"{role} {why}"
    text = value if isinstance(value, str) else str(value)
    return (text, None) if text.strip() else (None, f"empty {role}")
