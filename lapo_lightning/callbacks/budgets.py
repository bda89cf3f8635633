"""LAPO stage 2 (Internalization): budget-conditioned rollouts and live target refinement.

Flow: ``setup`` loads the stage-1 length table; before every training batch this callback
writes each problem's budget (stated in the prompt) and length target (aimed at by
``BudgetGaussian``) into the ``ProblemBatch``; after the batch it reads the gathered
``StepSummary`` and applies paper Eq. 8 (unsolved -> current median, solved -> min(old,
current median)), so the next sampling of a problem states its refined budget. The live
table is kept in ``state_dict`` and written atomically at every checkpoint and at the end.
A stage-1 table marked ``complete: false`` (its run did not finish) is refused unless
``allow_partial_table`` is set (see ``table_writer``).
Departs from the official code, whose Eq. 8 update never reaches later prompts.
"""

from __future__ import annotations

import math
from dataclasses import asdict
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import rank_zero_warn

from lapo_lightning.algo import group_length_stats, refine_targets
from lapo_lightning.callbacks.length_stats import gather_summaries
from lapo_lightning.callbacks.table_writer import LengthTableWriter
from lapo_lightning.length_table import LengthEntry, LengthTable, LengthTableError, round_half_up
from lapo_lightning.rewards import BudgetGaussian
from lapo_lightning.problem_sets.files import nfc
from lapo_lightning.types import ProblemBatch, StepSummary

KEY = "trainer.callbacks[BudgetTargets]"
DEFAULT_SIGMA = 120.0  # the paper's sigma, used only when no BudgetGaussian reward is configured


class BudgetTargets(LengthTableWriter):
    """Supply stage-2 budgets/targets from the stage-1 length table and refine them (Eq. 8).

    Args:
        table: the stage-1 length table (``LengthStatsCollector`` output).
        fallback_budget: budget stated for problems that have no target (missing from the
            table or unsolved). None = the generation cap ``model.generation.max_new_tokens``
            (the longest answer the run allows). Such problems get no length target: ``BudgetGaussian`` centres on
            the group's median correct length until Eq. 8 gives them one.
        path: where the refined table is written; default ``<log_dir>/length_table_refined.json``.
        sigma: tolerance of the ``budget/within_sigma`` metric; default the sigma of the first
            ``BudgetGaussian`` reward, else 120.
        allow_partial_table: accept a table marked ``complete: false`` (written at a checkpoint of
            a stage-1 run that did not reach its end, e.g. killed); refused by default.
        allow_partial_match: accept a table that lacks some of the data's problems, holds others,
            or was written for other text under the same ids; refused by default, since its
            budgets would belong to other problems.

    Logs per step (over all processes): ``budget/abs_error``, ``budget/signed_error`` (mean
    L - n) and ``budget/within_sigma`` over rollouts that stated a budget n (fallback budgets
    included), ``budget/abs_error_correct`` over the correct ones, ``budget/newly_solved`` (this
    step), ``budget/targets_shrunk`` (cumulative) and ``budget/mean_target`` (live targets).
    """

    def __init__(self, table: str, fallback_budget: int | None = None, path: str | None = None,
                 sigma: float | None = None, allow_partial_table: bool = False,
                 allow_partial_match: bool = False) -> None:
        if fallback_budget is not None and fallback_budget < 1:
            raise ValueError(f"{KEY}.fallback_budget must be >= 1 token or null, got {fallback_budget}")
        if sigma is not None and sigma <= 0:
            raise ValueError(f"{KEY}.sigma must be > 0 tokens or null, got {sigma}")
        self.table, self.fallback_budget, self.path, self.sigma = table, fallback_budget, path, sigma
        self.allow_partial_table, self.allow_partial_match = allow_partial_table, allow_partial_match
        # The live table: entry.median is the problem's current target (None = no target yet).
        self.entries: dict[str, LengthEntry] = {}
        self.shrunk = 0  # cumulative: targets lowered by Eq. 8
        self.solved_total = 0  # cumulative: problems that got their first target in stage 2
        self.metadata: dict = {}
        self.fallback: int | None = fallback_budget  # resolved in setup
        self.tolerance: float = sigma or DEFAULT_SIGMA  # resolved in setup
        self._fallback_source = f"{KEY}.fallback_budget"
        self._restored = False  # load_state_dict ran: the checkpoint, not the table file, is the truth

    # ----------------------------------------------------------------- setup
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        # Resolved copies: the constructor arguments stay as configured (setup may run twice).
        if self.fallback_budget is None:
            self.fallback = int(pl_module.generation.max_new_tokens)
            self._fallback_source = "the generation cap model.generation.max_new_tokens"
        else:
            self.fallback, self._fallback_source = self.fallback_budget, f"{KEY}.fallback_budget"
        sigmas = [r.sigma for r in getattr(pl_module, "rewards", []) if isinstance(r, BudgetGaussian)]
        self.tolerance = float(self.sigma if self.sigma is not None else sigmas[0] if sigmas else DEFAULT_SIGMA)
        try:
            table = LengthTable.load(self.table)
        except LengthTableError as e:
            raise LengthTableError(f"{KEY}.table: {e}") from None
        self.check_complete(table)
        self.resolve_path(trainer, "length_table_refined.json")
        if Path(self.path).resolve() == Path(self.table).resolve():
            raise ValueError(f"{KEY}.path: {self.path} is the stage-1 table itself; write the refined table elsewhere")
        datamodule = getattr(trainer, "datamodule", None)
        if datamodule is not None and hasattr(datamodule, "problem_ids"):
            self.check_dataset(table, list(datamodule.problem_ids), datamodule.describe()
                               if hasattr(datamodule, "describe") else {})
        self.metadata = {
            "source_table": str(self.table),
            "source_metadata": table.metadata,
            **self.run_metadata(trainer, pl_module),
            "settings": {"fallback_budget": self.fallback, "refinement": "paper Eq. 8",
                         "length_unit": "generated tokens incl. EOS"},
        }
        # Lightning restores callback state *after* setup on resume; guard anyway so the table
        # file can never overwrite refined targets, whichever order a strategy uses.
        if not self._restored:
            self.entries = {nfc(pid): entry for pid, entry in table.entries.items()}

    def check_complete(self, table: LengthTable) -> None:
        """Refuse the table of a stage-1 run that did not reach its end, unless allowed."""
        if table.complete is not False:
            if table.complete is None:
                rank_zero_warn(f"{KEY}.table: {self.table} does not say whether its stage-1 run finished "
                               "(written before tables were marked); using it as complete")
            return
        what = (f"{self.table} is the table of a stage-1 run that did not finish (written at its checkpoint of "
                f"step {table.metadata.get('step', '?')}, {len(table.entries)} problems, "
                f"{table.summary()['solved']} solved)")
        if self.allow_partial_table:
            rank_zero_warn(f"{KEY}.table: {what}; used anyway (allow_partial_table: true)")
            return
        raise LengthTableError(
            f"{KEY}.table: {what}: finish stage 1 first (lapo fit --config <stage-1 config> --ckpt_path last), "
            f"or set {KEY}.allow_partial_table: true to use it as it is"
        )

    def check_dataset(self, table: LengthTable, problem_ids: list[str], described: dict) -> None:
        """Stage 2 trusts only a table of its own problems: ids compared after NFC normalisation,
        and, where the table records it, the problems' text and answers (content fingerprint).
        A table missing some of the data's problems, or holding others, is refused unless
        ``allow_partial_match``; one sharing no id at all is refused always."""
        ids, known = {nfc(p) for p in problem_ids}, {nfc(p) for p in table.entries}
        missing, extra = sorted(ids - known), sorted(known - ids)
        if ids and not ids & known:
            raise LengthTableError(
                f"{KEY}.table: {self.table} shares no problem ids with data.train_file ({len(known)} in the table, "
                f"e.g. {extra[:3]}; {len(ids)} in the dataset, e.g. {missing[:3]}): was stage 1 run on this dataset?")
        problems = []
        recorded = table.metadata.get("dataset") or {}
        written, hashes = recorded.get("content_fingerprint"), recorded.get("content_hashes")
        if isinstance(hashes, dict) and isinstance(described.get("content_hashes"), dict):
            theirs, ours = {nfc(k): v for k, v in hashes.items()}, described["content_hashes"]
            differ = sorted(i for i in ids & theirs.keys() if theirs[i] != ours.get(i))
            if differ:
                problems.append(f"{len(differ)} of the {len(ids & known)} problems in both have other text or answers "
                                f"under the same id, e.g. {differ[:3]}")
        elif written and described.get("content_fingerprint") and written != described["content_fingerprint"]:
            problems.append(f"its problems' text or answers differ from data.train_file's under the same ids (content "
                            f"fingerprint {written} in the table, {described['content_fingerprint']} in the data)")
        if missing:
            problems.append(f"{len(missing)} of the {len(ids)} training problems are not in it, e.g. {missing[:3]}")
        if extra:
            problems.append(f"{len(extra)} of its {len(known)} problems are not in data.train_file, e.g. {extra[:3]}")
        if problems and not self.allow_partial_match:
            raise LengthTableError(
                f"{KEY}.table: {self.table} is not the table of this data: {'; '.join(problems)}; run stage 1 on "
                f"data.train_file, or set {KEY}.allow_partial_match: true to train with it anyway (problems without a "
                f"target state the fallback budget)")
        if problems:
            rank_zero_warn(f"{KEY}.table: {self.table}: {'; '.join(problems)}; used anyway (allow_partial_match: true)")
        entries = {nfc(pid): entry for pid, entry in table.entries.items()}
        unsolved = sum(not entries[pid].solved for pid in ids & known)
        lacking = len(missing) + unsolved
        if lacking:
            rank_zero_warn(
                f"{KEY}.table: {lacking} of {len(ids)} training problems have no target "
                f"({len(missing)} missing from {self.table}, {unsolved} unsolved in "
                f"stage 1); their prompts state the fallback budget {self.fallback} ({self._fallback_source}) "
                f"and their length reward centres on the group median until they are solved"
            )

    # ----------------------------------------------------------------- hooks
    def on_train_batch_start(self, trainer, pl_module, batch: ProblemBatch, batch_idx: int) -> None:
        super().on_train_batch_start(trainer, pl_module, batch, batch_idx)  # the last checkpoint's table
        self.apply(batch)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        metrics = self.update(gather_summaries(trainer, outputs["summary"]))
        pl_module.log_dict(metrics, batch_size=1)

    # ----------------------------------------------------------------- logic
    @property
    def targets(self) -> dict[str, float | None]:
        """problem id -> current length target (None = no target: fallback budget)."""
        return {pid: e.median if e.solved else None for pid, e in self.entries.items()}

    def target(self, problem_id: str) -> float | None:
        entry = self.entries.get(nfc(problem_id))
        return entry.median if entry is not None and entry.solved else None

    def apply(self, batch: ProblemBatch) -> None:
        """Write budgets and targets into the batch in place (training_step gets this object)."""
        targets = [self.target(pid) for pid in batch.problem_ids]
        batch.targets[:] = targets
        batch.budgets[:] = [self.fallback if t is None else round_half_up(t) for t in targets]

    def update(self, summaries: list[StepSummary]) -> dict[str, float]:
        """Eq. 8 on every gathered summary; returns this step's adherence metrics."""
        errors, correct_errors, newly_solved = [], [], 0
        for s in summaries:
            stats = group_length_stats(s.lengths, s.correct, s.group_index, num_groups=len(s.problem_ids))
            old = torch.tensor([math.nan if (t := self.target(pid)) is None else t for pid in s.problem_ids],
                               dtype=torch.float64)
            new = refine_targets(old, stats.median.to(torch.float64))
            for g, pid in enumerate(s.problem_ids):
                if torch.isnan(new[g]) or new[g] == old[g]:
                    continue  # unsolved now, or a larger/equal median: the target stays
                if torch.isnan(old[g]):
                    newly_solved += 1
                else:
                    self.shrunk += 1
                # The entry records the step whose median set the target (its band and count too).
                self.entries[nfc(pid)] = LengthEntry(
                    median=float(new[g]), low=float(stats.low[g]), high=float(stats.high[g]),
                    count=int(stats.num_correct[g]), last_step=s.step, solved=True,
                )
            stated = ~torch.isnan(s.budgets)
            diff = s.lengths.double()[stated] - s.budgets.double()[stated]
            errors.append(diff)
            correct_errors.append(diff[s.correct[stated]])
        self.solved_total += newly_solved
        metrics = {"budget/targets_shrunk": float(self.shrunk), "budget/newly_solved": float(newly_solved)}
        diff, diff_correct = torch.cat(errors), torch.cat(correct_errors)
        if diff.numel():
            metrics.update({
                "budget/abs_error": float(diff.abs().mean()),
                "budget/signed_error": float(diff.mean()),
                "budget/within_sigma": float((diff.abs() <= self.tolerance).double().mean()),
            })
        if diff_correct.numel():
            metrics["budget/abs_error_correct"] = float(diff_correct.abs().mean())
        live = [t for t in self.targets.values() if t is not None]
        if live:
            metrics["budget/mean_target"] = sum(live) / len(live)
        return metrics

    def extra_metadata(self) -> dict:
        return {"targets_shrunk": self.shrunk, "newly_solved": self.solved_total}

    # ----------------------------------------------------------------- state
    def state_dict(self) -> dict:
        return {"entries": {pid: asdict(e) for pid, e in self.entries.items()}, "shrunk": self.shrunk,
                "solved_total": self.solved_total, "table": self.table}

    def load_state_dict(self, state_dict: dict) -> None:
        self.entries = {pid: LengthEntry(**raw) for pid, raw in state_dict["entries"].items()}
        self.shrunk, self.solved_total = state_dict["shrunk"], state_dict["solved_total"]
        if state_dict.get("table") != self.table:
            rank_zero_warn(f"{KEY}.table: resuming with targets refined from {state_dict.get('table')}, "
                           f"not {self.table}; the checkpoint's targets are kept")
        self._restored = True
