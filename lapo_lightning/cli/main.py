"""The ``lapo`` command: subcommand dispatch, and LightningCLI over ``GRPOModule`` + ``LapoDataModule``.

Those two are defaults, not the only choice: a YAML may name another module and data
module by ``class_path`` (``configs/demo/sft.yaml`` runs ``SFTModule`` + ``SFTDataModule``).
The training CLI itself (``LapoCLI``) lives in ``cli/fit.py``: this module imports nothing
heavy at import time, so ``lapo table`` starts in a fraction of a second instead of seconds
of torch/transformers/Lightning imports.

``lapo fit --config configs/stage1.yaml`` trains; ``lapo table PATH`` prints a length
table's summary; ``lapo data --config RECIPE`` resolves a data recipe (``lapo_lightning/cli/data.py``). Any importable class is a plugin through ``class_path``; the package
re-exports the public ones so YAML can use short names (``class_path: LengthBand``).
``lapo eval --config configs/eval.yaml`` evaluates models (``lapo_lightning/evaluation``);
``lapo check --config FILE --device-memory GB`` says whether a training config fits a card,
before any weights load (``lapo_lightning/cli/check.py``); ``lapo answer --adapter DIR "question"`` answers one question with a trained adapter,
optionally with ``--budget N`` injected (``lapo_lightning/inference.py``). ``lapo demo`` runs
the offline CPU demo (``lapo_lightning/demo/``); ``lapo compare`` trains length-control methods
side by side and writes one report (``lapo_lightning/compare/``).
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lapo_lightning.cli.fit import LapoCLI


# Lightning warnings that are expected here and would only bury the ones that matter.
_EXPECTED_WARNINGS = (
    # Manual optimization checkpoints hold the post-update weights, which is what we want.
    r"Using ModelCheckpoint with manual optimization",
    # A data module without a validation set returns [] on purpose.
    r"Total length of `list` across ranks is zero",
    # LapoDataModule restores the position inside the epoch itself (lapo_lightning/order.py).
    r"You're resuming from a checkpoint that ended before the epoch ended",
    # A CSVLogger folder that already has files (the run's own lock file, or an earlier run's logs):
    # an earlier metrics.csv was moved aside before the logger starts (finished_results.py).
    r"Experiment logs directory .* exists and is not empty",
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


class _Drop(logging.Filter):
    """Drop the records of one logger whose message starts with one of ``prefixes``."""

    def __init__(self, *prefixes: str) -> None:
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefixes)


# Logger -> messages nobody can act on. Lightning's product tips ("💡 Tip: ... try installing
# litlogger") are advertising; bitsandbytes on a CPU looks for an optional faster kernel on the
# hub at every 4-bit load and says, twice, that it is not there (the slower built-in one runs).
_DROPPED = {**{name: ("💡 Tip",) for name in _LIGHTNING_LOGGERS},
            "bitsandbytes.backends.cpu.ops": ("Failed to load CPU gemm_4bit_forward from kernels-community",),
            "kernels._internals.hf_hub": ("Skipping publisher trust check",)}


def quiet() -> None:
    """Silence what every command would otherwise print and nobody can act on: the expected
    Lightning warnings, library FutureWarnings, the messages in ``_DROPPED``, and, when stderr is
    not a terminal (a log file), the loading and download bars of transformers and the hub,
    which a file shows as noise."""
    for pattern in _EXPECTED_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    warnings.filterwarnings("ignore", category=FutureWarning, module=_LIBRARIES)
    for name, prefixes in _DROPPED.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _Drop) for f in logger.filters):
            logger.addFilter(_Drop(*prefixes))
    if not sys.stderr.isatty():  # read when transformers / huggingface_hub are first imported
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


COMMANDS = """usage: lapo COMMAND [options]    (lapo COMMAND --help for its options)

commands:
  fit      train: lapo fit --config configs/stage1.yaml (LightningCLI; also validate, test, predict)
  check    will a training config fit a card, before anything loads: lapo check --config FILE --device-memory 12
  eval     evaluate models on benchmarks, one report: lapo eval --config configs/eval.yaml
  answer   answer one question with a trained adapter: lapo answer --adapter DIR "question"
  data     resolve a data recipe into the problem set both stages read: lapo data --config configs/data/paper_mix_offline.yaml
  table    summarise a stage-1 length table: lapo table runs/stage1/length_table.json
  plot     a run's training curves as PNGs (written at the end of every fit too): lapo plot runs/stage1
  demo     the whole LAPO pipeline on a laptop CPU, offline: lapo demo
  compare  length-control methods side by side, one report: lapo compare --config configs/compare/demo.yaml
"""


def main(args: list[str] | None = None) -> LapoCLI | None:
    argv = sys.argv[1:] if args is None else list(args)
    if argv[:1] in ([], ["-h"], ["--help"]):  # the commands, not only LightningCLI's fit/validate/test/predict
        print(COMMANDS, end="")
        raise SystemExit(0 if argv else 2)
    quiet()
    if argv[:1] == ["table"]:
        from lapo_lightning.length_table import main as table_main

        raise SystemExit(table_main(argv[1:]))
    if argv[:1] == ["data"]:  # `lapo data --config RECIPE`: sources mixed, checked, written once for both stages
        from lapo_lightning.cli.data import main as data_main

        raise SystemExit(data_main(argv[1:]))
    if argv[:1] == ["plot"]:  # `lapo plot RUN_DIR`: training curves from the run's metrics.csv
        from lapo_lightning.run_plots import main as plot_main

        raise SystemExit(plot_main(argv[1:]))
    if argv[:1] == ["check"]:  # `lapo check --config FILE [--device-memory GB]`: the estimate, no weights
        from lapo_lightning.cli.check import main as check_main

        raise SystemExit(check_main(argv[1:]))
    if argv[:1] == ["answer"]:
        from lapo_lightning.cli.answer import main as answer_main

        raise SystemExit(answer_main(argv[1:]))
    if argv[:1] == ["demo"]:  # `lapo demo`: every configs/demo phase in turn, resumable
        from lapo_lightning.demo.run import main as demo_main

        raise SystemExit(demo_main(argv[1:]))
    if argv[:1] == ["compare"]:  # `lapo compare --config configs/compare/demo.yaml`: methods side by side
        from lapo_lightning.compare.run import main as compare_main

        raise SystemExit(compare_main(argv[1:]))
    if argv[:1] == ["eval"]:  # `lapo eval --config configs/eval.yaml`: trainer.test per model, one report
        from lapo_lightning.evaluation.run import main as eval_main

        return eval_main(argv[1:])
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    return build_cli(args)


def build_cli(args: list[str] | None = None, run: bool = True) -> LapoCLI:
    """The training CLI exactly as ``lapo fit`` builds it (``run=False``: parse and instantiate only)."""
    from lapo_lightning.cli.fit import build_cli as build  # torch, transformers, Lightning: seconds

    return build(args, run)


def run() -> None:
    """The ``lapo`` console script. ``main`` returns the CLI object (handy in tests), but a
    script's return value becomes its exit status, so this returns nothing: success is 0.
    A failure after start-up ends in one line and a log file (``failures.py``); the working
    folder is importable, so a config can name plugins defined there."""
    from lapo_lightning.cli.failures import debugging, report, take_debug_flag

    # Plugins in the folder `lapo` is started from import by class_path, as with `python -m`
    # (a console script's own path entry is its bin folder, not the working folder).
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    argv = take_debug_flag(sys.argv[1:])
    try:
        main(argv)
    except SystemExit:
        raise
    except BaseException as error:  # noqa: BLE001 - every failure becomes one line; --debug keeps the traceback
        status = report(error, argv, getattr(error, "_lapo_folders", None))
        if debugging():
            raise
        raise SystemExit(status) from None


if __name__ == "__main__":
    run()
