"""``lapo fit``: LightningCLI over ``GRPOModule`` + ``LapoDataModule`` (``LapoCLI``).

``cli.main`` dispatches here for ``fit`` (and Lightning's other training subcommands); kept
apart from ``cli.py`` because importing it loads torch, transformers and Lightning.

Bad input ends in one line per problem, naming the config key (or file and line), and exit
status 2, never in jsonargparse's dump of the whole namespace: parse errors are summarised
(``parse_errors.py``), and the start-up check (``preflight.py``) runs between parsing and
``instantiate_classes``, before any weights load.
"""

from __future__ import annotations

import sys

import lightning.pytorch as pl
from lightning.pytorch.cli import LightningCLI

from lapo_lightning.callbacks.export import ExportAdapter
from lapo_lightning.cli.setup import prepare_config_parsing, print_cpu_thread_hint
from lapo_lightning.data import LapoDataModule
from lapo_lightning.module import GRPOModule
from lapo_lightning.cli.parse_errors import summarize
from lapo_lightning.safety.preflight import check, report

prepare_config_parsing()


class ConfigProblems(SystemExit):
    """``lapo fit`` refused its config: the problems are printed, the exit status is 2."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__(2)
        self.problems = problems


def refuse(problems: list[str], command: str = "lapo fit") -> ConfigProblems:
    """Print one line per problem on stderr; the exception to raise (exit status 2, no traceback)."""
    report(problems, sys.stderr.write, command)
    return ConfigProblems(problems)


def init_arguments(class_path: str) -> list[str] | None:
    """The init arguments a plugin class takes (None if it cannot be imported)."""
    import inspect

    from jsonargparse.typing import import_object

    try:
        params = inspect.signature(import_object(class_path)).parameters.values()
    except Exception:  # noqa: BLE001 - only a hint for an error message
        return None
    return [p.name for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


class LapoCLI(LightningCLI):
    def init_parser(self, **kwargs):
        parser = super().init_parser(**kwargs)
        parser.exit_on_error = False  # parse errors raise, so parse_arguments can summarise them
        return parser

    def parse_arguments(self, parser, args) -> None:
        from jsonargparse import ArgumentError

        self.argv = list(args) if isinstance(args, list) else sys.argv[1:]  # for the resume command of a failure
        try:
            super().parse_arguments(parser, args)
        except ArgumentError as e:
            raise refuse(summarize(str(e), init_arguments)) from None

    def instantiate_classes(self) -> None:
        """The start-up check first (all of it for ``fit``; the settings for other uses), then
        jsonargparse's instantiation, whose rare leftover errors are summarised the same way."""
        config = self.config.get(str(self.subcommand), self.config) if self.subcommand else self.config
        problems = check(config, inputs=self.subcommand == "fit")
        if problems:
            raise refuse(problems)
        try:
            super().instantiate_classes()
        except (ValueError, TypeError) as e:
            if "Given value" not in str(e) and "Union subtypes" not in str(e):
                raise  # not jsonargparse's report: keep the traceback
            raise refuse(summarize(str(e))) from None

    def _parse_ckpt_path(self) -> None:
        # Lightning reads a --ckpt_path file right here (for hyper-parameters): refuse a truncated,
        # corrupt or non-checkpoint file first, in one line naming the last good checkpoint.
        from lapo_lightning.safety.checkpointing import CheckpointError, load_checkpoint

        subcommand = self.config.get("subcommand")
        path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if path and path not in ("last", "best", "hpc") and "://" not in str(path):
            try:
                load_checkpoint(path)
            except CheckpointError as e:
                raise refuse([str(e)]) from None
        super()._parse_ckpt_path()

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
        from lapo_lightning.safety.checkpointing import CheckpointError, prepare_fit
        from lapo_lightning.cli.failures import FailureReport
        from lapo_lightning.safety.finished_results import keep_previous_metrics, replacement_problems
        from lapo_lightning.safety.run_identity import CheckpointMismatchError
        from lapo_lightning.safety.run_lock import FolderBusy, FolderLocks

        callbacks = self.trainer.callbacks
        for i, callback in enumerate(callbacks):
            if type(callback) in (ModelSummary, RichModelSummary):
                callbacks[i] = ParameterSummary(max_depth=getattr(callback, "_max_depth", 1))
        if self.trainer.strategy.root_device.type == "cpu":
            print_cpu_thread_hint()
        if not sys.stderr.isatty():  # a log file shows a bar once, at its end: plain lines instead
            from lightning.pytorch.callbacks import ProgressBar

            from lapo_lightning.callbacks.progress_lines import ProgressLines

            callbacks[:] = [c for c in callbacks if not isinstance(c, ProgressBar)]
            if not any(isinstance(c, ProgressLines) for c in callbacks):
                callbacks.append(ProgressLines())
        # A failure inside trainer.fit is reported in one line with the run's folders (failures.py).
        callbacks.insert(0, FailureReport(getattr(self, "argv", None)))
        # The run owns its output folders before it touches them: a second run on them stops here.
        locks = FolderLocks()
        callbacks.insert(0, locks)
        try:
            locks.acquire(self.trainer)
        except FolderBusy as e:
            raise refuse([str(e)]) from None
        # Atomic checkpoint saves, `--ckpt_path last`, and a checked checkpoint, before weights load;
        # then no finished result may be replaced by less. A refusal releases the folders again
        # (trainer.fit, which would release them at its end, never starts).
        config = self.config_init[self.subcommand]
        try:
            try:
                config["ckpt_path"] = prepare_fit(self.trainer, self.model, config.get("ckpt_path"), self.datamodule)
            except (CheckpointError, CheckpointMismatchError) as e:  # one line per problem, exit status 2
                raise refuse([line.strip() for line in str(e).splitlines()]) from None
            if problems := replacement_problems(self.trainer, config["ckpt_path"]):
                raise refuse(problems)
            keep_previous_metrics(self.trainer)
        except BaseException:
            locks.release()
            raise


    def after_fit(self) -> None:
        """The run's training curves beside its metrics (``run_plots.py``; ``lapo plot`` redraws them),
        and to TensorBoard when that logger is configured too."""
        from lightning.pytorch.loggers import CSVLogger
        from lightning.pytorch.utilities import rank_zero_info

        from lapo_lightning.run_plots import PlotError, figure_sink, plot_run

        logger = next((lg for lg in self.trainer.loggers if isinstance(lg, CSVLogger)), None)
        if not self.trainer.is_global_zero or logger is None:
            return
        logger.save()  # the last step's row is on disk before it is read
        try:
            others = [lg for lg in self.trainer.loggers if lg is not logger]
            written = plot_run(logger.log_dir, figure_sink(others, self.trainer.global_step))
        except PlotError as e:  # a fit with no training step (max_steps reached already): nothing to draw
            rank_zero_info(f"training curves not drawn: {e}")
            return
        except Exception as e:  # noqa: BLE001 - a picture must never fail a finished run
            rank_zero_info(f"training curves not drawn: {type(e).__name__}: {e}")
            return
        rank_zero_info("training curves: " + ", ".join(str(p) for p in written))


class ParseOnlyCLI(LapoCLI):
    """``lapo fit``'s parsing and parse errors, and nothing built or seeded: ``lapo check`` reads ``config``."""

    def _set_seed(self) -> None:
        pass

    def instantiate_classes(self) -> None:
        pass


def build_cli(args: list[str] | None = None, run: bool = True, parse_only: bool = False) -> LapoCLI:
    """The training CLI exactly as ``lapo fit`` builds it (``run=False``: parse and instantiate only;
    ``parse_only``: parse only, the parsed values in ``.config``)."""
    return (ParseOnlyCLI if parse_only else LapoCLI)(
        pl.LightningModule,
        pl.LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        args=args,
        save_config_kwargs={"overwrite": True},
        run=run,
    )
