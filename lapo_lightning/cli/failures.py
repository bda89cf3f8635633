"""One line for every failure of a command after its start-up, the traceback in a log file.

Where it sits: bad input is refused before anything loads (``preflight.py``, ``parse_errors.py``,
exit status 2). What fails later reaches this module: a reward or callback plugin that raises in
the middle of a run, a folder that stops being writable, a setting Lightning rejects only once
the trainer runs, an evaluation input error, Ctrl-C. :class:`FailureReport` (a callback that
``lapo fit`` adds) attaches the run's folders to a failure inside ``trainer.fit``; ``cli.run``
(the ``lapo`` console script) hands every failure to :func:`report`. Either way the user reads one line on
stderr that names the part that failed and, when the run has a checkpoint, the command that
resumes it; the full traceback goes to ``lapo-error.log`` in the run's folder. ``--debug``
(or ``LAPO_DEBUG=1``) shows the traceback as well.

Exit status: 2 for bad input found late (a setting Lightning refuses, a length table, data file or
model name lapo refuses once the run has started), 1 for the rest (Ctrl-C
during training too: Lightning exits 1 itself; 130 elsewhere). ``cli.main``, which tests and
``lapo demo``'s phases call in-process, lets exceptions through.
"""

from __future__ import annotations

import os
import shlex
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import lightning.pytorch as pl

DEBUG_ENV = "LAPO_DEBUG"
LOG_NAME = "lapo-error.log"


def debugging() -> bool:
    return os.environ.get(DEBUG_ENV, "") not in ("", "0")


def take_debug_flag(argv: list[str]) -> list[str]:
    """``argv`` without ``--debug``, which sets ``LAPO_DEBUG=1`` for this process instead."""
    if "--debug" in argv:
        os.environ[DEBUG_ENV] = "1"
    return [a for a in argv if a != "--debug"]


@dataclass
class RunFolders:
    """Where a run writes: its log folder (the traceback goes there) and its checkpoint folders;
    ``since``: when the run started (a checkpoint older than that is another run's, unless this
    run resumed from it)."""

    log_folder: Path | None = None
    checkpoint_folders: list[Path] = field(default_factory=list)
    since: float = 0.0

    @classmethod
    def of(cls, trainer: pl.Trainer, since: float = 0.0) -> RunFolders:
        from lapo_lightning.safety.checkpointing import checkpoint_dirs

        return cls(Path(trainer.default_root_dir), checkpoint_dirs(trainer), since)

    def checkpoint(self, resumed: bool = False) -> Path | None:
        """The newest checkpoint this run wrote (or, ``resumed``, any), if there is one."""
        found = [p for folder in self.checkpoint_folders if folder.is_dir() for p in folder.glob("*.ckpt")
                 if resumed or p.stat().st_mtime >= self.since]
        lasts = [p for p in found if p.name.startswith("last")] or found
        return max(lasts, key=lambda p: p.stat().st_mtime) if lasts else None


def plugin_kinds() -> list[tuple[type, str]]:
    """The extension points a user's plugin subclasses, with the word a message uses for each."""
    from lapo_lightning.prompts import PromptTemplate
    from lapo_lightning.reference import Reference
    from lapo_lightning.rewards import Reward
    from lapo_lightning.rollout import Sampler
    from lapo_lightning.verify import Verifier

    return [(Reward, "reward"), (Verifier, "verifier"), (PromptTemplate, "prompt"), (Reference, "reference"),
            (Sampler, "sampler"), (pl.Callback, "callback")]


def culprit(error: BaseException) -> str | None:
    """The innermost plugin object on ``error``'s traceback, as ``"reward Exploding (name 'x')"``."""
    kinds = plugin_kinds()
    frames = [frame for frame, _ in traceback.walk_tb(error.__traceback__)]
    for frame in reversed(frames):
        obj = frame.f_locals.get("self")
        for base, word in kinds:
            if isinstance(obj, base):
                name = getattr(obj, "name", None)
                return f"{word} {type(obj).__name__}" + (f" (name {name!r})" if isinstance(name, str) else "")
    return None


def one_line(error: BaseException) -> str:
    """What failed, in one line: the plugin that raised, the file that could not be written, or
    the setting Lightning refused, then the error's own first line."""
    if isinstance(error, KeyboardInterrupt):
        return "interrupted (Ctrl-C)"
    message = (str(error).strip().splitlines() or [""])[0]
    if refused_by_lightning(error):
        return f"Lightning refused the settings: {message}"
    if isinstance(error, OSError) and error.filename and error.strerror:
        return f"could not write {error.filename}: {error.strerror}"
    who = culprit(error)
    what = f"{type(error).__name__}: {message}" if message else type(error).__name__
    return f"{who} raised {what}" if who else what


def refused_by_lightning(error: BaseException) -> bool:
    """A setting Lightning rejects once the trainer runs (``val_check_interval`` above the
    batches, say): a configuration error raised inside Lightning itself."""
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    if isinstance(error, MisconfigurationException):
        return True
    frames = [frame for frame, _ in traceback.walk_tb(error.__traceback__)]
    module = frames[-1].f_globals.get("__name__", "") if frames else ""
    return isinstance(error, (ValueError, TypeError)) and module.startswith(("lightning.", "pytorch_lightning."))


def bad_input(error: BaseException) -> bool:
    """An input lapo itself refuses once the run has started (a stage-2 table of other problems,
    a data file, a model name): exit status 2, as the start-up check gives it."""
    from lapo_lightning.problem_sets.files import DataError
    from lapo_lightning.length_table import LengthTableError
    from lapo_lightning.models.source import ModelNotFound

    return isinstance(error, (DataError, LengthTableError, ModelNotFound)) or refused_by_lightning(error)


def exit_status(error: BaseException) -> int:
    if isinstance(error, KeyboardInterrupt):
        return 130
    return 2 if bad_input(error) else 1


def write_log(error: BaseException, folder: Path | None, argv: list[str] | None) -> Path | None:
    """Append ``error``'s traceback to ``folder/lapo-error.log`` (a temp file when the folder
    cannot be written: the failure may be that very folder); the path written, or None."""
    text = (f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} pid {os.getpid()}: lapo {shlex.join(argv or [])}\n"
            + "".join(traceback.format_exception(error)))
    candidates = ([folder / LOG_NAME] if folder else []) + [Path(tempfile.gettempdir()) / f"lapo-error-{os.getpid()}.log"]
    for path in candidates:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "a", encoding="utf-8") as f:
                f.write(text)
            return path
        except OSError:
            continue
    return None


def resume_command(argv: list[str] | None, checkpoint: Path | None) -> str | None:
    """``lapo <argv> --ckpt_path last``, any earlier ``--ckpt_path`` dropped; None without a checkpoint."""
    if checkpoint is None:
        return None
    if not argv:
        return "--ckpt_path last"
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--ckpt_path":
            skip = True
        elif not arg.startswith("--ckpt_path="):
            kept.append(arg)
    return f"lapo {shlex.join(kept)} --ckpt_path last"


def report(error: BaseException, argv: list[str] | None, folders: RunFolders | None = None, write=None) -> int:
    """Log ``error``'s traceback, print its one line (once per error; on stderr unless ``write``
    is given), return the exit status."""
    if getattr(error, "_lapo_reported", False):
        return exit_status(error)
    folders = folders or RunFolders()
    log = write_log(error, folders.log_folder, argv)
    line = f"lapo {argv[0] if argv else ''}: {one_line(error)}".replace("lapo : ", "lapo: ")
    resumed = any(a == "--ckpt_path" or a.startswith("--ckpt_path=") for a in argv or [])
    if resume := resume_command(argv, folders.checkpoint(resumed)):
        line += f"; resume with: {resume}"
    if log is not None:
        line += f" (traceback: {log}{'' if debugging() else '; --debug shows it'})"
    (write or sys.stderr.write)(line + "\n")
    try:
        error._lapo_reported = True
    except AttributeError:  # an exception type with __slots__: it may be reported twice
        pass
    return exit_status(error)


class FailureReport(pl.Callback):
    """``lapo fit``'s view of a failure inside ``trainer.fit``: the run's folders, for the line.

    It attaches them to the exception for ``cli.run`` to report. Ctrl-C it reports itself:
    Lightning turns it into ``sys.exit(1)`` right after this hook, so the line with the resume
    command is printed here or nowhere.
    """

    def __init__(self, argv: list[str] | None) -> None:
        self.argv = argv
        self.since = time.time()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if not trainer.is_global_zero:
            return
        folders = RunFolders.of(trainer, self.since)
        if isinstance(exception, KeyboardInterrupt):
            report(exception, self.argv, folders)
        else:
            try:
                exception._lapo_folders = folders
            except AttributeError:  # an exception type with __slots__: reported without its folders
                pass
