"""Problem datasets and the Lightning data module that batches them into ``ProblemBatch``.

Flow: a local .jsonl/.json/.parquet file (or a hub dataset id) -> :func:`load_problems` ->
``list[Problem]`` -> :class:`LapoDataModule` dataloaders -> ``ProblemBatch`` (plain strings,
budgets all None; a stage-2 callback fills budgets). No tokenizer ever touches this module:
prompts are rendered and tokenized on the policy side.

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

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch.utils.data import DataLoader, Dataset

from lapo_lightning.order import EpochShuffle
from lapo_lightning.types import ProblemBatch

LOCAL_SUFFIXES = (".jsonl", ".json", ".parquet")


class DataError(ValueError):
    """Bad data or data config; the message names the config key, the file and what was found.

    ``problems`` holds one line per problem found (the message is those lines joined), so a
    caller such as the start-up check (``lapo_lightning/preflight.py``) can list every one.
    """

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems = problems if problems is not None else [message]


MAX_REPORTED = 20  # problems listed per file; the rest are counted


def _raise_all(problems: list[str], key: str, source: str) -> None:
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
        unit, rows = _read_local(Path(source).expanduser(), key, errors)
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
    _raise_all(errors, key, source)
    return problems


def _read_local(path: Path, key: str, errors: list[str]) -> tuple[str, list[tuple[int, dict]]]:
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


class ProblemDataset(Dataset):
    """Map-style, so Lightning can wrap it in a DistributedSampler when several processes train."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems

    def __len__(self) -> int:
        return len(self.problems)

    def __getitem__(self, index: int) -> Problem:
        return self.problems[index]


def collate_problems(items: list[Problem]) -> ProblemBatch:
    """Module-level (picklable for worker processes). Budgets start as None; stage 2 fills them."""
    return ProblemBatch(
        problem_ids=[p.id for p in items], problems=[p.problem for p in items], answers=[p.answer for p in items]
    )


class LapoDataModule(pl.LightningDataModule):
    def __init__(
        self,
        train_file: str,
        val_file: str | None = None,
        fields: ProblemFields = ProblemFields(),
        problems_per_step: int = 8,
        val_fraction: float = 0.0,
        max_problems: int | None = None,
        seed: int = 0,
        num_workers: int = 0,
        dataset_name: str | None = None,
        split: str = "train",
    ) -> None:
        """Problems for GRPO/LAPO training, batched as ``ProblemBatch``.

        Args:
            train_file: local .jsonl/.json/.parquet file, or a hub dataset id.
            val_file: optional validation problems (same formats); excludes val_fraction.
            fields: column names for problem, answer and id.
            problems_per_step: problems per optimizer step on each process (B); each gets G
                rollouts. A batch (one generation) holds B x ``steps_per_generation`` problems.
            val_fraction: share of train_file held out for validation (seeded), 0 = none.
            max_problems: keep only the first N problems of train_file (before any holdout).
            seed: seeds the shuffle order and the holdout.
            num_workers: DataLoader worker processes.
            dataset_name: hub dataset config name (hub ids only).
            split: hub dataset split (hub ids only).
        """
        super().__init__()
        errors = []
        if problems_per_step < 1:
            errors.append(f"data.problems_per_step must be >= 1, got {problems_per_step}")
        if not 0.0 <= val_fraction < 1.0:
            errors.append(f"data.val_fraction must be in [0, 1), got {val_fraction}")
        if val_file and val_fraction > 0:
            errors.append(f"set data.val_file or data.val_fraction, not both (got {val_file!r} and {val_fraction})")
        if max_problems is not None and max_problems < 1:
            errors.append(f"data.max_problems must be >= 1 or null, got {max_problems}")
        for key, src in (("data.train_file", train_file), ("data.val_file", val_file)):
            if src and is_local_source(src) and not Path(src).expanduser().is_file():
                errors.append(f"{key}: file not found: {src}")
        if errors:
            raise DataError("; ".join(errors), errors)
        self.train_file, self.val_file, self.fields = train_file, val_file, fields
        self.problems_per_step, self.val_fraction, self.max_problems = problems_per_step, val_fraction, max_problems
        self.seed, self.num_workers, self.dataset_name, self.split = seed, num_workers, dataset_name, split
        self._train: list[Problem] | None = None
        self._val: list[Problem] = []
        self._resume: tuple[int, int] | None = None  # (epoch, batches done) from a checkpoint
        self.steps_per_generation = 1
        """Optimizer steps each batch feeds (``model.grpo.steps_per_generation``; ``GRPOModule.setup``
        sets it): a batch holds that many steps' worth of problems, sampled at once."""

    @property
    def problems_per_batch(self) -> int:
        """Problems per batch on each process: ``problems_per_step x steps_per_generation``."""
        return self.problems_per_step * self.steps_per_generation

    def setup(self, stage: str | None = None) -> None:
        if self._train is not None:  # idempotent: Lightning may call setup once per stage
            return
        problems = load_problems(self.train_file, self.fields, self.split, self.dataset_name, "data.train_file")
        problems = problems[: self.max_problems]
        val: list[Problem] = []
        if self.val_file:
            val = load_problems(self.val_file, self.fields, self.split, self.dataset_name, "data.val_file")
            shared = {p.id for p in val} & {p.id for p in problems}
            if shared:  # a warning, not an error: ids from different sources may collide by accident
                rank_zero_warn(f"data.val_file shares {len(shared)} problem ids with data.train_file, e.g. {min(shared)!r}")
        elif self.val_fraction > 0:
            n_val = max(1, round(len(problems) * self.val_fraction))
            if n_val >= len(problems):
                raise DataError(f"data.val_fraction={self.val_fraction} leaves no training problems of {len(problems)}")
            order = torch.randperm(len(problems), generator=torch.Generator().manual_seed(self.seed)).tolist()
            held = set(order[:n_val])
            val = [p for i, p in enumerate(problems) if i in held]  # keep file order within each split
            problems = [p for i, p in enumerate(problems) if i not in held]
        self._train, self._val = problems, val

    @property
    def train_problems(self) -> list[Problem]:
        self.setup()  # loading is cheap and idempotent; callbacks may ask before the trainer does
        return self._train

    @property
    def val_problems(self) -> list[Problem]:
        self.setup()
        return self._val

    @property
    def problem_ids(self) -> list[str]:
        return [p.id for p in self.train_problems]

    @property
    def fingerprint(self) -> str:
        """Short hash of the sorted train ids and the source, stored in the length table metadata.

        Local paths contribute their file name only, so the same file reached through another
        working directory or an absolute path gives the same fingerprint.
        """
        src = Path(self.train_file).name if is_local_source(self.train_file) else self.train_file
        payload = json.dumps({"source": src, "ids": sorted(self.problem_ids)}, ensure_ascii=False)
        return hashlib.sha1(payload.encode("utf-8")).hexdigest()[:12]

    @property
    def content_fingerprint(self) -> str:
        """Short hash of the training problems themselves: each id with its (NFC-normalised)
        problem text and answer. Part of a checkpoint's run identity, so a resume on other data
        (another file, or the same ids with other problems) is refused."""
        rows = sorted((nfc(p.id), nfc(p.problem), nfc(p.answer)) for p in self.train_problems)
        return hashlib.sha1(json.dumps(rows, ensure_ascii=False).encode("utf-8")).hexdigest()[:12]

    def content_hashes(self) -> dict[str, str]:
        """Per problem (NFC id), a short hash of its NFC text and answer: stage 2 names which
        problems of a table were written for other text under the same id."""
        return {nfc(p.id): hashlib.sha1(json.dumps([nfc(p.problem), nfc(p.answer)], ensure_ascii=False)
                                        .encode("utf-8")).hexdigest()[:10] for p in self.train_problems}

    def describe(self) -> dict:
        return {
            "source": self.train_file,
            "size": len(self.train_problems),
            "val_size": len(self.val_problems),
            "fingerprint": self.fingerprint,
            "content_fingerprint": self.content_fingerprint,
            "content_hashes": self.content_hashes(),
        }

    def train_dataloader(self) -> DataLoader:
        sampler = self.train_sampler()
        if self._resume is not None:
            sampler.skip_once(*self._resume)
            self._resume = None
        return self._loader(self.train_problems, sampler)

    def train_sampler(self) -> EpochShuffle:
        return EpochShuffle(len(self.train_problems), self.seed, **self.shard())

    def shard(self) -> dict:
        """This process's share of each epoch: ``num_replicas`` and ``rank`` for ``EpochShuffle``.

        The sampler shards itself (Lightning keeps a ``DistributedSampler`` as it is), so
        the same seeded order is split the same way in a fresh and in a resumed run.
        """
        trainer = self.trainer
        return {"num_replicas": trainer.world_size, "rank": trainer.global_rank} if trainer else {}

    def val_dataloader(self) -> DataLoader | list:
        problems = self.val_problems
        sampler = EpochShuffle(len(problems), self.seed, shuffle=False, **self.shard())
        return self._loader(problems, sampler) if problems else []

    def collate_fn(self):
        """Turns a list of ``Problem`` into one batch (module-level, so worker processes can pickle it)."""
        return collate_problems

    def _loader(self, problems: list[Problem], sampler: EpochShuffle) -> DataLoader:
        return DataLoader(
            ProblemDataset(problems),
            batch_size=self.problems_per_batch,
            sampler=sampler,
            drop_last=False,
            collate_fn=self.collate_fn(),
            num_workers=self.num_workers,
        )

    # A mid-epoch checkpoint records how far into the epoch training got, so the resumed
    # run skips exactly the problems it already trained on (see lapo_lightning/order.py).
    def state_dict(self) -> dict:
        trainer = self.trainer
        if trainer is None:
            return {}
        batches = trainer.fit_loop.epoch_loop.batch_progress.current.processed
        return {"epoch": trainer.current_epoch, "batches_done": batches,
                "problems_done": batches * self.problems_per_batch * trainer.world_size}

    def load_state_dict(self, state_dict: dict) -> None:
        if state_dict:  # checkpoints from before problems_done were single-process
            done = state_dict.get("problems_done", state_dict["batches_done"] * self.problems_per_step)
            self._resume = (state_dict["epoch"], done)
