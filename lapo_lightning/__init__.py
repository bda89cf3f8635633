"""lapo-lightning: Length-Adaptive Policy Optimization (LAPO, arXiv 2507.15758) on PyTorch Lightning.

The public plugins are re-exported here so YAML can name them by short ``class_path``
(``class_path: LengthBand``); any other importable class works by its full path.

The re-exports load on first use (``lapo_lightning.GRPOModule`` imports ``module.py`` then),
so a light command such as ``lapo table`` does not pay seconds of torch/transformers imports.
Short ``class_path`` names resolve only among imported classes: the commands that parse a
config call :func:`import_plugins` first.
"""

from importlib import import_module

_EXPORTS = {
    "lapo_lightning.callbacks": ("BudgetTargets", "ExportAdapter", "LengthStatsCollector", "ProgressLines",
                                 "SampleLogger", "TrainingHealthMonitor"),
    "lapo_lightning.config": ("GRPOConfig", "OptimConfig"),
    "lapo_lightning.data": ("LapoDataModule",),
    "lapo_lightning.fast_rollout": ("CompactDecode",),
    "lapo_lightning.methods.dapo": ("OverlongPenalty",),
    "lapo_lightning.methods.efficient": ("EfficientReasoning",),
    "lapo_lightning.methods.kimi": ("KimiLengthPenalty",),
    "lapo_lightning.methods.l1": ("L1Exact", "L1Max", "L1Targets"),
    "lapo_lightning.methods.shorter_better": ("ShorterBetter",),
    "lapo_lightning.methods.thinkprune": ("CappedAccuracy", "CapSchedule"),
    "lapo_lightning.module": ("GRPOModule",),
    "lapo_lightning.policy": ("LoraSettings", "PolicyConfig"),
    "lapo_lightning.problem_sets.files": ("ProblemFields",),
    "lapo_lightning.prompts": ("ChatPrompt", "PlainPrompt", "PromptTemplate"),
    "lapo_lightning.reference": ("AdapterDisabled", "FrozenAdapter", "NoReference", "Reference"),
    "lapo_lightning.rewards": ("Accuracy", "BudgetGaussian", "LengthBand", "RegexMatch", "Reward", "ThinkFormat"),
    "lapo_lightning.rollout": ("GenerationConfig", "HFGenerate", "Sampler"),
    "lapo_lightning.sft": ("SFTDataModule", "SFTModule"),
    "lapo_lightning.verify": ("ContainsAnswer", "MathVerifier", "Verifier"),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_MODULE_OF)
__version__ = "0.1.0"


def __getattr__(name: str):
    """``lapo_lightning.<Name>``: import the defining module on first use (PEP 562)."""
    if name not in _MODULE_OF:
        raise AttributeError(f"module 'lapo_lightning' has no attribute {name!r}")
    value = getattr(import_module(_MODULE_OF[name]), name)
    globals()[name] = value  # later lookups skip this function
    return value


def import_plugins() -> None:
    """Import every re-exported class, so that YAML short names (``class_path: LengthBand``)
    resolve: jsonargparse finds them among the already imported subclasses of each base."""
    for name in __all__:
        __getattr__(name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
