"""The Lightning data module that batches training problems into ``ProblemBatch``.

Flow: ``data.train_file`` -> :func:`~lapo_lightning.problem_sets.files.load_problems` (a local
.jsonl/.json/.parquet file or a hub dataset id) -> ``list[Problem]`` ->
:class:`LapoDataModule` dataloaders -> ``ProblemBatch`` (plain strings, budgets all None; a
stage-2 callback fills budgets). ``data.train_file`` may also name a data recipe (a ``.yaml``
under ``configs/data/``: several sources mixed, filtered, deduplicated and checked against the
benchmarks, ``problem_sets/mix.py``); its resolved problem set is one file that stage 1 writes (or
``lapo data`` does first) and stage 2 reads, so both stages train on identical problems and text.
No tokenizer ever touches this module: prompts are rendered and tokenized on the policy side.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch.utils.data import DataLoader, Dataset

from lapo_lightning.order import EpochShuffle
from lapo_lightning.problem_sets.files import DataError, Problem, ProblemFields, is_local_source, load_problems, nfc
from lapo_lightning.problem_sets.recipe import is_recipe
from lapo_lightning.types import ProblemBatch


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
            train_file: local .jsonl/.json/.parquet file, a hub dataset id, or a data recipe (.yaml,
                ``configs/data/``) whose resolved set both stages read (``lapo data --config RECIPE``).
            val_file: optional validation problems (same formats); excludes val_fraction.
            fields: column names for problem, answer and id.
            problems_per_step: problems per optimizer step on each process (B); each gets G
                rollouts. A batch (one generation) holds B x ``steps_per_generation`` problems.
            val_fraction: share of train_file held out for validation (seeded), 0 = none.
            max_problems: keep only the first N problems of train_file (before any holdout).
            seed: seeds the shuffle order, the holdout and a recipe's draws.
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
        fields = ProblemFields() if is_recipe(self.train_file) else self.fields  # a resolved set has the standard ones
        problems = load_problems(self.train_source(), fields, self.split, self.dataset_name, "data.train_file")
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

    def prepare_data(self) -> None:
        """Lightning calls this once per machine (local rank 0) before ``setup``: a recipe's
        resolved set is written here when there is none yet, so the other processes only read it."""
        self.train_source()

    def train_source(self) -> str:
        """The file the training problems are read from: ``train_file``, or, when that names a
        data recipe, its resolved set (written now if missing; refused if stale: ``problem_sets/resolved.py``)."""
        if not is_recipe(self.train_file):
            return self.train_file
        from lapo_lightning.problem_sets.resolved import ensure_resolved

        return str(ensure_resolved(self.train_file, self.seed))

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
