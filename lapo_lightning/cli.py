"""The ``lapo`` command: LightningCLI over ``GRPOModule`` + ``LapoDataModule``.

Those two are defaults, not the only choice: a YAML may name another module and data
module by ``class_path`` (``configs/demo/sft.yaml`` runs ``SFTModule`` + ``SFTDataModule``).

``lapo fit --config configs/stage1.yaml`` trains; ``lapo table PATH`` prints a length
table's summary. Any importable class is a plugin through ``class_path``; the package
re-exports the public ones so YAML can use short names (``class_path: LengthBand``).
``lapo eval --config configs/eval.yaml`` evaluates models (``lapo_lightning/evaluation``);
``lapo answer --adapter DIR "question"`` answers one question with a trained adapter,
optionally with ``--budget N`` injected (``lapo_lightning/inference.py``). ``lapo demo`` runs
the offline CPU demo (``lapo_lightning/demo/``).
"""

from __future__ import annotations

import logging
import os
import sys
import warnings

import lightning.pytorch as pl
from jsonargparse import set_parsing_settings
from lightning.pytorch.cli import LightningCLI

from lapo_lightning.callbacks.export import ExportAdapter
from lapo_lightning.data import LapoDataModule
from lapo_lightning.module import GRPOModule


# Lightning warnings that are expected here and would only bury the ones that matter.
_EXPECTED_WARNINGS = (
    # Manual optimization checkpoints hold the post-update weights, which is what we want.
    r"Using ModelCheckpoint with manual optimization",
    # A data module without a validation set returns [] on purpose.
    r"Total length of `list` across ranks is zero",
    # LapoDataModule restores the position inside the epoch itself (lapo_lightning/order.py).
    r"You're resuming from a checkpoint that ended before the epoch ended",
    # `lapo demo` (and the tests) run `lapo fit`/`lapo eval` in-process with args= while sys.argv
    # still holds the outer command: exactly the use args= is for.
    r"LightningCLI's args parameter is intended to run from within Python",
)
# FutureWarnings raised inside these libraries (transformers' is_gradient_checkpointing read by
# peft, torch's LeafSpec used by Lightning, ...): only their next release can act on them. One
# attributed to our own code (or a user's plugin) stays visible: that caller can be fixed.
_LIBRARIES = r"(transformers|peft|torch|lightning|lightning_fabric|pytorch_lightning|lightning_utilities|accelerate|" \
             r"bitsandbytes|datasets|huggingface_hub|jsonargparse|torchmetrics|math_verify|sympy)(\.|$)"
# Loggers through which Lightning's rank_zero_info prints, among others, its product tips.
_LIGHTNING_LOGGERS = ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero")


class _NoProductTips(logging.Filter):
    # "💡 Tip: ... try installing litlogger / litmodels" on every run: advertising, not advice.
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("💡 Tip")


def quiet() -> None:
    """Silence what every command would otherwise print and nobody can act on: the expected
    Lightning warnings, library FutureWarnings and Lightning's product tips."""
    for pattern in _EXPECTED_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    warnings.filterwarnings("ignore", category=FutureWarning, module=_LIBRARIES)
    for name in _LIGHTNING_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _NoProductTips) for f in logger.filters):
            logger.addFilter(_NoProductTips())


# Field docstrings of the config dataclasses become --help text.
set_parsing_settings(docstring_parse_attribute_docstrings=True)


class LapoCLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:
        # GRPO unless the YAML names another class; plain `model: {policy: ...}` keys fill these.
        parser.set_defaults({"model": {"class_path": f"{GRPOModule.__module__}.{GRPOModule.__name__}"},
                             "data": {"class_path": f"{LapoDataModule.__module__}.{LapoDataModule.__name__}"}})
        # Always on, configured under `export.*`: every run leaves its trained weights.
        parser.add_lightning_class_args(ExportAdapter, "export")

    def before_fit(self) -> None:
        # Lightning's own summary prints "FLOPs 0" columns and lines (see callbacks/summary.py).
        from lightning.pytorch.callbacks import ModelSummary, RichModelSummary

        from lapo_lightning.callbacks.summary import ParameterSummary

        callbacks = self.trainer.callbacks
        for i, callback in enumerate(callbacks):
            if type(callback) in (ModelSummary, RichModelSummary):
                callbacks[i] = ParameterSummary(max_depth=getattr(callback, "_max_depth", 1))


def main(args: list[str] | None = None) -> LapoCLI | None:
    argv = sys.argv[1:] if args is None else list(args)
    quiet()
    if argv[:1] == ["table"]:
        from lapo_lightning.length_table import main as table_main

        raise SystemExit(table_main(argv[1:]))
    if argv[:1] == ["answer"]:
        from lapo_lightning.inference import main as answer_main

        raise SystemExit(answer_main(argv[1:]))
    if argv[:1] == ["demo"]:  # `lapo demo`: every configs/demo phase in turn, resumable
        from lapo_lightning.demo.run import main as demo_main

        raise SystemExit(demo_main(argv[1:]))
    if argv[:1] == ["eval"]:  # `lapo eval --config configs/eval.yaml`: trainer.test per model, one report
        from lapo_lightning.evaluation.run import main as eval_main

        return eval_main(argv[1:])
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    return build_cli(args)


def build_cli(args: list[str] | None = None, run: bool = True) -> LapoCLI:
    """The training CLI exactly as ``lapo fit`` builds it (``run=False``: parse and instantiate only)."""
    return LapoCLI(
        pl.LightningModule,
        pl.LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        args=args,
        save_config_kwargs={"overwrite": True},
        run=run,
    )


def run() -> None:
    """The ``lapo`` console script. ``main`` returns the CLI object (handy in tests), but a
    script's return value becomes its exit status, so this returns nothing: success is 0."""
    main()


if __name__ == "__main__":
    run()
