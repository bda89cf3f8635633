"""``lapo fit``: LightningCLI over ``GRPOModule`` + ``LapoDataModule`` (``LapoCLI``).

``cli.main`` dispatches here for ``fit`` (and Lightning's other training subcommands); kept
apart from ``cli.py`` because importing it loads torch, transformers and Lightning.
"""

from __future__ import annotations

import lightning.pytorch as pl
from lightning.pytorch.cli import LightningCLI

from lapo_lightning.callbacks.export import ExportAdapter
from lapo_lightning.cli import prepare_config_parsing, print_cpu_thread_hint
from lapo_lightning.data import LapoDataModule
from lapo_lightning.module import GRPOModule

prepare_config_parsing()


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
        if self.trainer.strategy.root_device.type == "cpu":
            print_cpu_thread_hint()


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
