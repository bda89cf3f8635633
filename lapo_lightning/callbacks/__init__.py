"""Callbacks: they read the ``StepSummary`` that ``training_step`` returns, never its internals."""

from lapo_lightning.callbacks.budgets import BudgetTargets
from lapo_lightning.callbacks.export import ExportAdapter
from lapo_lightning.callbacks.length_stats import LengthStatsCollector
from lapo_lightning.callbacks.monitors import SampleLogger, TrainingHealthMonitor

__all__ = ["BudgetTargets", "ExportAdapter", "LengthStatsCollector", "SampleLogger", "TrainingHealthMonitor"]
