"""Reading problem files: one local .jsonl/.json/.parquet file (or a hub dataset id) as ``list[Problem]``.

Flow: :func:`load_problems` reads ``data.train_file`` / ``data.val_file`` (and the evaluation
benchmarks) for :class:`~lapo_lightning.data.LapoDataModule`, checking every row and reporting
each bad one with its file and line. Light on purpose (no torch, no Lightning): ``lapo table``
and ``lapo data`` use it too. Mixes of several sources are built by ``mix.py``.

Every problem has a stable id: the configured id field, else a hash of the problem text
(:func:`problem_id_for`). The official LAPO code keys its statistics by prompt text, which
breaks as soon as the prompt template changes between stages; ids do not.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LOCAL_SUFFIXES = (".jsonl", ".json", ".parquet")


class DataError(ValueError):
    """Bad data or data config; the message names the config key, the file and what was found.

    ``problems`` holds one line per problem found (the message is those lines joined), so a
    caller such as the start-up check (``lapo_lightning/safety/preflight.py``) can list every one.
    """

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems = problems if problems is not None else [message]


MAX_REPORTED = 20  # problems listed per file; the rest are counted


def raise_all(problems: list[str], key: str, source: str) -> None:
    """Raise one DataError listing every problem (the first MAX_REPORTED, then a count)."""
    if not problems:
        return
    shown = problems[:MAX_REPORTED]
    if len(problems) > MAX_REPORTED:
        shown.append(f"{key}: ... and {len(problems) - MAX_REPORTED} more problems in {source}")
    raise DataError("\n".join(shown), shown)


@dataclass
class ProblemFields:
    """Column names in the source data.

    Args:
        problem: field holding the problem text (without any instruction).
        answer: field holding the reference final answer (numbers are turned into strings).
        id: field holding a stable id; None (or an absent/empty value) hashes the problem text.
    """

    problem: str = "problem"
    answer: str = "answer"
    id: str | None = "id"


@dataclass(frozen=True)
class Problem:
    id: str
    problem: str
    answer: str
    extra: dict = field(default_factory=dict, compare=False)  # every other field, e.g. level


def problem_id_for(text: str) -> str:
    """Stable id from the problem text alone (never the rendered prompt), e.g. 'sha1-0a1b...'."""
    return "sha1-" + hashlib.sha1(text.encode("utf-8")).hexdigest()[:16]


def is_local_source(source: str) -> bool:
    """A path-looking source is read from disk; anything else is a hub dataset id."""
    return (
        source.endswith(LOCAL_SUFFIXES)
        or source.startswith(("/", "./", "../", "~"))
        or Path(source).expanduser().exists()
    )


def load_problems(
    source: str,
    fields: ProblemFields,
    split: str = "train",
    name: str | None = None,
    key: str = "data.train_file",
    fields_key: str = "data.fields",
) -> list[Problem]:
    """Read problems from a local file or a hub dataset; ``key`` (the source) and ``fields_key``
    (where ``fields`` is set) are the config keys errors name.

    ``split`` and ``name`` only apply to hub datasets (a local file is one split).
    Every problem in the file is reported in one error (one line each, with its line or row),
    not only the first.
    """
    errors: list[str] = []
    if is_local_source(source):
        unit, rows = read_local(Path(source).expanduser(), key, errors)
        where = f"{source} {unit}"
    else:
        rows, where = _read_hub(source, name, split, key), f"hub dataset {source!r} (split {split}) row"
    problems, numbers = [], []
    for n, row in rows:
        problem = _to_problem(row, fields, f"{where} {n}", errors, fields_key)
        if problem is not None:
            problems.append(problem)
            numbers.append(n)
    if not problems and not errors:
        raise DataError(f"{key}: {source} holds no problems (empty dataset)")
    errors += _unique_problems([p.id for p in problems], numbers, source, key, fields, fields_key)
    raise_all(errors, key, source)
    return problems


def read_local(path: Path, key: str, errors: list[str]) -> tuple[str, list[tuple[int, dict]]]:
    """("line" or "row", [(number, row)]); numbers are 1-based so they match an editor.

    A file that cannot be read at all raises; a bad line or row is appended to ``errors``
    and skipped, so every bad line of a file is reported together.
    """
    if not path.is_file():
        found = "a directory" if path.is_dir() else "nothing"
        raise DataError(f"{key}: file not found: {path} (found {found} there)")
    if path.suffix not in LOCAL_SUFFIXES:
        raise DataError(f"{key}: unsupported file type {path.suffix!r} for {path} (use .jsonl, .json or .parquet)")
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq  # installed with `datasets`

        return "row", list(enumerate(pq.read_table(path).to_pylist(), start=1))
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            if "Extra data" not in str(e):  # several objects one per line: treat as JSON lines
                raise DataError(f"{key}: {path} is not valid JSON ({e})") from None
        else:
            if isinstance(data, dict):  # {"data": [...]}-style wrapper with one list inside
                lists = [v for v in data.values() if isinstance(v, list)]
                if len(lists) != 1:
                    raise DataError(f"{key}: {path} holds an object, expected a list of problems")
                data = lists[0]
            if not isinstance(data, list):
                raise DataError(f"{key}: {path} holds {type(data).__name__}, expected a list of problems")
            return "row", _check_objects(list(enumerate(data, start=1)), path, key, "row", errors)
    rows = []
    for lineno, line in enumerate(jsonl_lines(text), start=1):
        if line.strip():
            try:
                rows.append((lineno, json.loads(line)))
            except json.JSONDecodeError as e:
                errors.append(f"{key}: {path} line {lineno} is not valid JSON ({e})")
    return "line", _check_objects(rows, path, key, "line", errors)


def jsonl_lines(text: str) -> list[str]:
    """The lines of a JSON-lines text: split on "\\n" only (a "\\r\\n" ending loses its "\\r").

    Not ``str.splitlines``: it also breaks on U+2028/U+2029, \\x85, \\x0b, \\x0c and
    \\x1c-\\x1e, which JSON allows unescaped inside a string (GSM8K's train file has U+2028),
    so one record would be cut in two and reported as invalid JSON.
    Example: ``jsonl_lines('{"a": "x\\u2028y"}\\r\\n{}')`` -> ``['{"a": "x\\u2028y"}', '{}']``.
    """
    return [line[:-1] if line.endswith("\r") else line for line in text.split("\n")]


def _check_objects(rows: list[tuple[int, Any]], path: Path, key: str, unit: str,
                   errors: list[str]) -> list[tuple[int, dict]]:
    """The rows that are JSON objects; each other one is a line in ``errors``."""
    for n, row in rows:
        if not isinstance(row, dict):
            errors.append(f"{key}: {path} {unit} {n} is {type(row).__name__}, expected an object")
    return [(n, row) for n, row in rows if isinstance(row, dict)]


def _read_hub(source: str, name: str | None, split: str, key: str) -> list[tuple[int, dict]]:
    import datasets

    try:
        ds = datasets.load_dataset(source, name, split=split)
    except Exception as e:  # datasets raises many unrelated types (ConnectionError, FileNotFoundError, ...)
        raise DataError(
            f"{key}: could not load {source!r} (not a local file, so tried the hub; name={name}, split={split}): "
            f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}. Offline (HF_DATASETS_OFFLINE=1)? "
            f"Point {key} at a local .jsonl/.json/.parquet file."
        ) from None
    return list(enumerate(ds, start=1))


def _to_problem(row: dict, fields: ProblemFields, where: str, errors: list[str],
                fields_key: str = "data.fields") -> Problem | None:
    """The row as a Problem, or None with each thing wrong with it appended to ``errors``."""
    values, found = {}, len(errors)
    for role in ("problem", "answer"):
        col = getattr(fields, role)
        value = row.get(col)
        if value is None or (isinstance(value, str) and not value.strip()):
            what = "is empty" if col in row else "not found"
            errors.append(f"{fields_key}.{role}: field {col!r} {what} in {where}; fields found: {sorted(row)}")
        elif (why := text_value_problem(value)) is not None:
            errors.append(f"{fields_key}.{role}: field {col!r} in {where} {why}")
        else:
            values[role] = value if isinstance(value, str) else str(value)  # answers are often int/float
    raw_id = row.get(fields.id) if fields.id else None
    if raw_id not in (None, "") and (why := id_problem(raw_id)) is not None:
        errors.append(f"{fields_key}.id: field {fields.id!r} in {where} {why}")
    if len(errors) > found:
        return None
    pid = str(raw_id) if raw_id not in (None, "") else problem_id_for(values["problem"])
    skip = {fields.problem, fields.answer, fields.id}
    return Problem(pid, values["problem"], values["answer"], {k: v for k, v in row.items() if k not in skip})


def text_value_problem(value: object) -> str | None:
    """Why a problem or answer value is refused, or None: text, or a finite number (a number is
    kept as its text, e.g. 42 -> "42", since many datasets store numeric answers as numbers).

    Refused: true/false, lists and objects (their text, e.g. "['1', '2']", would never match
    a model's answer, so every rollout would be graded wrong), NaN and infinities.
    Example: ``text_value_problem(["4"])`` -> ``'is a list (["4"]), expected text or a number'``.
    """
    if isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)):
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else f"is {value}, expected text or a finite number"
    shown = json.dumps(value, ensure_ascii=False)
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    kind = {bool: "true/false", list: "a list", dict: "an object"}.get(type(value), type(value).__name__)
    return f"is {kind} ({shown}), expected text or a number"


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def id_problem(raw_id: object) -> str | None:
    """Why a problem id is refused, or None.

    Ids are keys (length tables, logs, sample records), never file names, and MATH-style ids
    such as ``train/algebra/0.json`` hold slashes, so a relative slash path is accepted. Refused,
    so that no id could ever steer a write outside the run folder or break a log line: an
    absolute path (``/x``, ``\\x``, ``~x``, ``C:x``), a ``..`` segment, a backslash, and control
    characters (newlines, tabs, NUL). Numbers are kept as their text.
    Example: ``id_problem("../../etc/passwd")`` -> ``"is '../../etc/passwd': a '..' path segment ..."``.
    """
    if isinstance(raw_id, bool) or not isinstance(raw_id, (str, int)):
        return f"is {type(raw_id).__name__}, expected text or an integer"
    pid = str(raw_id)
    if _CONTROL.search(pid):
        return f"is {pid!r}: control characters (newline, tab, NUL, ...) are not allowed in ids"
    if "\\" in pid:
        return f"is {pid!r}: backslashes (a path separator) are not allowed in ids"
    if pid.startswith(("/", "~")) or re.match(r"[A-Za-z]:", pid):
        return f"is {pid!r}: an absolute path is not allowed as an id"
    if ".." in pid.split("/"):
        return f"is {pid!r}: a '..' path segment is not allowed in ids"
    return None


def _unique_problems(ids: list[str], where: list[int], source: str, key: str, fields: ProblemFields,
                     fields_key: str = "data.fields") -> list[str]:
    first: dict[str, int] = {}
    dups = []
    for pid, n in zip(ids, where):
        if pid in first:
            dups.append(f"{pid!r} (#{first[pid]} and #{n})")
        else:
            first[pid] = n
    if not dups:
        return []
    hashed = [d for d in dups if d.startswith("'sha1-")]  # ids made by problem_id_for
    hint = "ids are hashes of the problem text: identical problems" if hashed else f"ids from field {fields.id!r}"
    return [
        f"{key}: {len(dups)} duplicate problem ids in {source}, e.g. {', '.join(dups[:2])} "
        f"(# = line/row; {hint}; set {fields_key}.id to a unique field or deduplicate the file)"
    ]


def nfc(text: str) -> str:
    """Ids (and texts, where compared) in Unicode NFC: the same id typed or stored another way is one problem."""
    return unicodedata.normalize("NFC", text)
