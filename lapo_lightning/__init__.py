"""lapo-lightning: Length-Adaptive Policy Optimization (LAPO, arXiv 2507.15758) on PyTorch Lightning.

The public plugins are re-exported here so YAML can name them by short ``class_path``
(``class_path: LengthBand``); any other importable class works by its full path.
"""

from lapo_lightning.callbacks import BudgetTargets, ExportAdapter, LengthStatsCollector, SampleLogger, TrainingHealthMonitor
from lapo_lightning.config import GRPOConfig, OptimConfig
from lapo_lightning.data import LapoDataModule, ProblemFields
from lapo_lightning.fast_rollout import CompactDecode
from lapo_lightning.module import GRPOModule
from lapo_lightning.policy import LoraSettings, PolicyConfig
from lapo_lightning.prompts import ChatPrompt, PlainPrompt, PromptTemplate
from lapo_lightning.reference import AdapterDisabled, FrozenAdapter, NoReference, Reference
from lapo_lightning.rewards import Accuracy, BudgetGaussian, LengthBand, RegexMatch, Reward, ThinkFormat
from lapo_lightning.rollout import GenerationConfig, HFGenerate, Sampler
from lapo_lightning.sft import SFTDataModule, SFTModule
from lapo_lightning.verify import ContainsAnswer, MathVerifier, Verifier

__all__ = [
    "Accuracy", "AdapterDisabled", "BudgetGaussian", "BudgetTargets", "ChatPrompt", "CompactDecode", "ContainsAnswer", "ExportAdapter", "FrozenAdapter",
    "GRPOConfig", "GRPOModule", "GenerationConfig", "HFGenerate", "LapoDataModule", "LengthBand", "LengthStatsCollector",
    "LoraSettings", "MathVerifier", "ProblemFields", "NoReference", "OptimConfig", "PlainPrompt", "PolicyConfig",
    "PromptTemplate", "Reference", "RegexMatch", "Reward", "SFTDataModule", "SFTModule", "SampleLogger", "Sampler", "ThinkFormat",
    "TrainingHealthMonitor", "Verifier",
]
__version__ = "0.1.0"
