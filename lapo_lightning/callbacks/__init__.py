"""Callbacks: they read the ``StepSummary`` that ``training_step`` returns, never its internals."""

from lapo_lightning.callbacks.budgets import BudgetTargets
from lapo_lightning.callbacks.export import ExportAdapter
from lapo_lightning.callbacks.length_stats import LengthStatsCollector
from lapo_lightning.callbacks.monitors import SampleLogger, TrainingHealthMonitor
from lapo_lightning.callbacks.progress_lines import ProgressLines

__all__ = ["BudgetTargets", "ExportAdapter", "LengthStatsCollector", "ProgressLines", "SampleLogger",
           "TrainingHealthMonitor"]
