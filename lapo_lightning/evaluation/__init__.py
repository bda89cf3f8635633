"""Evaluation: Pass@1 / #Tok reports for several models on several benchmarks (``lapo eval``).

Flow: ``run.py`` (the command) -> ``data.py`` (benchmarks x budget conditions as test
dataloaders, problems from ``benchmarks.py``) -> ``module.py`` (``EvalModule`` on
``trainer.test``: sample with the training sampler, verify, record, score with
``metrics.py``) -> ``records.py`` (per-sample JSONL, resume) -> ``report.py`` + ``plots.py``
(results.json, report.md, PNGs). See docs/evaluation.md.
"""

from lapo_lightning.evaluation.benchmarks import Benchmark, paper_benchmarks
from lapo_lightning.evaluation.data import BenchmarkDataModule, Condition, EvalBatch
from lapo_lightning.evaluation.metrics import BenchmarkMetrics, Outcomes, PassAtK, pass_at_k
from lapo_lightning.evaluation.models import EvalError, ModelSpec
from lapo_lightning.evaluation.module import EvalModule
from lapo_lightning.evaluation.records import RecordStore, SampleRecord
from lapo_lightning.evaluation.run import run_evaluation

__all__ = [
    "Benchmark", "BenchmarkDataModule", "BenchmarkMetrics", "Condition", "EvalBatch", "EvalError", "EvalModule",
    "ModelSpec", "Outcomes", "PassAtK", "RecordStore", "SampleRecord", "paper_benchmarks", "pass_at_k",
    "run_evaluation",
]
