"""``EvalModule``: evaluation on Lightning's test loop, one ``trainer.test`` per model.

Flow: ``run_evaluation`` selects a :class:`~lapo_lightning.evaluation.models.ModelSpec` and
calls ``trainer.test(module, datamodule)``. ``configure_model`` loads that model only if some
sample is still missing from the report folder's records. Each ``test_step`` gets an
``EvalBatch`` (B problems of one benchmark under one budget condition), renders the prompts
(budget sentence from ``prompts.py``), samples every missing completion of all B problems in
one sampler call, verifies them, appends the records, and feeds whole problems (earlier
records + new ones) to that dataloader's ``BenchmarkMetrics``. ``on_test_epoch_end``
computes the metrics (synced across processes) into ``self.results``.
"""

from __future__ import annotations

import gc
import sys
import zlib

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import rank_zero_only

from lapo_lightning.evaluation.data import EvalBatch
from lapo_lightning.evaluation.metrics import BenchmarkMetrics
from lapo_lightning.evaluation.models import ModelSpec, check_models, evaluation_prompt, load_for_eval
from lapo_lightning.evaluation.records import RecordStore, SampleRecord, to_outcomes
from lapo_lightning.prompts import PromptTemplate, opens_think, parse_budget
from lapo_lightning.rollout import GenerationConfig, HFGenerate, Sampler
from lapo_lightning.types import ProblemBatch
from lapo_lightning.verify import MathVerifier, Verifier, extract_answer


class EvalModule(pl.LightningModule):
    """Samples, verifies and scores benchmark problems for each model in turn.

    Args:
        models: the models to compare (one report row each).
        generation: sampling settings (paper: temperature 0.6, top-p 0.95) and the token cap.
        prompt: how a problem (and its budget) becomes prompt text, the same for every model;
            default the prompt the adapters recorded at export (``lapo_prompt.json``), else
            the paper's plain template (see ``models.evaluation_prompt``).
        sampler: generation engine; default batched HF ``generate``.
        verifier: answer checker; default math-verify.
        report_dir: the report folder: records, results.json, report.md, plots. Re-running
            with the same folder resumes: recorded samples are not generated again.
        save_texts: keep each completion's text in the records.
        merge_adapter: merge LoRA adapters into the base weights before generating (faster;
            skipped for 4-bit bases, where merging is not exact).
        num_levels: difficulty levels 1..num_levels in the per-level breakdown (MATH: 5).
        progress: show a progress bar over problems x samples.
        plots: draw the PNG plots of the report (off: results.json and report.md only).
        seed: each batch is sampled with a seed derived from (seed, model, condition,
            benchmark, batch index, rank).
    """

    def __init__(
        self,
        models: list[ModelSpec],
        generation: GenerationConfig = GenerationConfig(),
        prompt: PromptTemplate | None = None,
        sampler: Sampler | None = None,
        verifier: Verifier | None = None,
        report_dir: str = "runs/eval",
        save_texts: bool = True,
        merge_adapter: bool = True,
        num_levels: int = 5,
        progress: bool = True,
        plots: bool = True,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.models = list(models)
        self.generation = generation
        self.prompt, self._prompt_problems = evaluation_prompt(self.models, prompt)
        self.sampler = sampler or HFGenerate()
        self.verifier = verifier or MathVerifier()
        self.report_dir, self.save_texts, self.merge_adapter = report_dir, save_texts, merge_adapter
        self.num_levels, self.progress, self.plots, self.seed = num_levels, progress, plots, seed
        self.current: ModelSpec | None = None  # chosen by run_evaluation before each trainer.test
        self.policy = None  # loaded in configure_model, only when something is left to generate
        self.tokenizer = None
        self.store: RecordStore | None = None
        self.task_metrics = torch.nn.ModuleList()
        self.results: dict[tuple[str, str, str], dict] = {}  # (model, condition, benchmark) -> numbers
        self._bar = None

    # ----------------------------------------------------------------- models
    def check(self) -> list[str]:
        return check_models(self.models) + self._prompt_problems

    def select(self, spec: ModelSpec) -> None:
        if spec is not self.current:
            self.release()
        self.current = spec

    def release(self) -> None:
        """Drop the loaded model (the next one needs the memory)."""
        if self.policy is None:
            return
        self.policy = self.tokenizer = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def setup(self, stage: str) -> None:
        if self.current is None:
            raise RuntimeError("EvalModule: call select(model_spec) before trainer.test (run_evaluation does)")
        self.store = RecordStore(self.report_dir, rank=self.global_rank)

    def configure_model(self) -> None:
        if self.policy is not None or self._pending() == 0:
            return
        index = self.models.index(self.current)
        self.policy, self.tokenizer = load_for_eval(self.current, index, self.trainer.strategy.root_device,
                                                    self.merge_adapter)

    def _pending(self) -> int:
        """Samples of all tasks not yet in the records (over all processes' problems)."""
        count = 0
        for task in self.trainer.datamodule.tasks:
            for problem in task.problems:
                done = self._done(task.condition.label, task.benchmark.name, problem.id)
                count += sum(s not in done for s in range(task.benchmark.samples))
        return count

    def _done(self, condition: str, benchmark: str, problem_id: str) -> dict[int, SampleRecord]:
        return self.store.done(self.current.name, condition, benchmark, problem_id)

    # --------------------------------------------------------------- test loop
    def on_test_start(self) -> None:
        tasks = self.trainer.datamodule.tasks
        self.task_metrics = torch.nn.ModuleList(
            [BenchmarkMetrics(t.benchmark.samples, self.num_levels) for t in tasks]).to(self.device)
        total = sum(len(t.problems) * t.benchmark.samples for t in tasks)
        self._open_bar(total, total - self._pending())

    def test_step(self, batch: EvalBatch, batch_idx: int, dataloader_idx: int = 0) -> None:
        done = [self._done(batch.condition, batch.benchmark, pid) for pid in batch.problems.problem_ids]  # [B]
        missing = [[s for s in range(batch.samples) if s not in d] for d in done]  # [B] sample indices
        new = self.generate(batch, missing, batch_idx) if any(missing) else []
        self.store.append(new)
        fresh = {(r.problem_id, r.sample): r for r in new}
        complete = [d.get(s) or fresh[(pid, s)]
                    for pid, d in zip(batch.problems.problem_ids, done) for s in range(batch.samples)]
        self.task_metrics[dataloader_idx].update(to_outcomes(complete).to(self.device))
        if self._bar is not None:
            self._bar.update(len(new))

    def generate(self, batch: EvalBatch, missing: list[list[int]], batch_idx: int) -> list[SampleRecord]:
        """Sample every missing completion of the batch's problems in one sampler call."""
        problems = batch.problems
        counts = {len(m) for m in missing if m}
        if len(counts) == 1:  # the usual case: every problem needs the same number (all N)
            rows = [j for j, m in enumerate(missing) if m]
            group_size = counts.pop()
            samples = [s for j in rows for s in missing[j]]  # [R] sample index of each rollout
        else:  # resumed mid-problem: one row per missing sample
            rows = [j for j, m in enumerate(missing) for _ in m]
            group_size = 1
            samples = [s for m in missing for s in m]
        sub = ProblemBatch(problem_ids=[problems.problem_ids[j] for j in rows],
                           problems=[problems.problems[j] for j in rows],
                           answers=[problems.answers[j] for j in rows], budgets=[problems.budgets[j] for j in rows])
        prompts = [self.prompt.render(p, b, self.tokenizer) for p, b in zip(sub.problems, sub.budgets)]
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):  # leave the global RNG stream untouched
            torch.manual_seed(self._batch_seed(batch, batch_idx))
            rollouts = self.sampler.sample(self.policy, self.tokenizer, prompts, sub, group_size, self.generation)
        owners = rollouts.group_index.tolist()  # [R] index into sub
        opened = [opens_think(prompts[i]) for i in owners]  # [R] the prompt left <think> open
        verdict = self.verifier(rollouts.texts, [sub.answers[i] for i in owners], opened)
        lengths, truncated = rollouts.lengths.tolist(), rollouts.truncated.tolist()
        fallback = getattr(self.verifier, "fallback", True)
        # The recorded answer comes from the part the verifier graded: none while still reasoning.
        graded = [self.verifier.graded_text(text, o) for text, o in zip(rollouts.texts, opened)]
        answers = [None if g is None else extract_answer(g, fallback=fallback) for g in graded]  # [R]
        return [
            SampleRecord(
                model=self.current.name, condition=batch.condition, benchmark=batch.benchmark,
                problem_id=sub.problem_ids[owner], sample=samples[i], answer=answers[i],
                correct=bool(verdict.correct[i]), parsed=bool(verdict.parsed[i]), length=int(lengths[i]),
                truncated=bool(truncated[i]), budget=sub.budgets[owner],
                own_budget=parse_budget(text) if sub.budgets[owner] is None else None, level=batch.levels[rows[owner]],
                gold=sub.answers[owner], text=text if self.save_texts else None,
            )
            for i, (owner, text) in enumerate(zip(owners, rollouts.texts))
        ]

    def _batch_seed(self, batch: EvalBatch, batch_idx: int) -> int:
        key = f"{self.seed}|{self.current.name}|{batch.condition}|{batch.benchmark}|{batch_idx}|{self.global_rank}"
        return zlib.crc32(key.encode("utf-8"))

    def on_test_epoch_end(self) -> None:
        for task, metrics in zip(self.trainer.datamodule.tasks, self.task_metrics):
            values = metrics.compute()  # torchmetrics reduces the states over processes first
            metrics.reset()
            key = (self.current.name, task.condition.label, task.benchmark.name)
            self.results[key] = {
                "model": key[0], "condition": key[1], "benchmark": key[2],
                "budget": task.condition.fixed, "samples_per_problem": task.benchmark.samples, **values,
            }
            for name, value in values.items():
                if isinstance(value, (int, float)):
                    self.log("/".join((*key, name)), float(value), rank_zero_only=True)

    def on_test_end(self) -> None:
        self._close_bar()

    @rank_zero_only
    def _open_bar(self, total: int, done: int) -> None:
        if not self.progress:
            return
        if not sys.stderr.isatty():  # a log file would show a redrawn bar as one endless line
            from lapo_lightning.callbacks.progress_lines import LineBar

            self._bar = LineBar(total, done, desc=f"eval {self.current.name}", unit="sample")
            return
        from tqdm import tqdm

        self._bar = tqdm(total=total, initial=done, unit="sample", dynamic_ncols=True,
                         desc=f"eval {self.current.name} (problems x samples)")

    def _close_bar(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
