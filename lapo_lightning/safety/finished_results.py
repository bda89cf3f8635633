"""Finished results are never replaced by less: checked at start-up, before any weights load.

Flow: ``cli.fit.LapoCLI.before_fit`` (after the run has locked its folders and resolved
``--ckpt_path``) calls :func:`replacement_problems`.
It looks at what this run would write over when it ends: the adapter export (its record
``lapo_export.json``, written by ``ExportAdapter``: the optimizer step it was exported at and
whether its run completed) and every length table a callback writes (``metadata.step`` and
``metadata.complete``). A run is refused, one line per result, when it would replace

- a result exported at more optimizer steps than this run will reach (``trainer.max_steps``),
- or a completed result, unless this run resumes a checkpoint (continuing a run to more
  steps is what ``--ckpt_path`` is for).

``export.overwrite: true`` replaces them anyway. An adapter folder without a record (exported
by an older lapo, or by hand) counts as completed, at an unknown step.

Then :func:`keep_previous_metrics` moves aside an earlier run's ``metrics.csv`` that Lightning's
``CSVLogger`` would delete (a log folder with a fixed ``version``).
"""

from __future__ import annotations

from pathlib import Path

from lapo_lightning.callbacks.export import export_state

def table_state(path: Path) -> tuple[int | None, bool] | None:
    """(step, complete) of a length table at ``path``; None when there is none (or it is unreadable:
    the table's own checks report that)."""
    from lapo_lightning.length_table import LengthTable, LengthTableError

    if not path.is_file():
        return None
    try:
        metadata = LengthTable.load(path).metadata
    except LengthTableError:
        return None
    step = metadata.get("step")
    return (step if isinstance(step, int) else None), bool(metadata.get("complete"))


def replacement_problems(trainer, ckpt_path: str | None) -> list[str]:
    """One line per finished result this run would replace with less (empty when none, or when
    the run's ``ExportAdapter`` says ``overwrite``)."""
    from lapo_lightning.callbacks.export import ExportAdapter
    from lapo_lightning.run_outputs import results

    if any(isinstance(c, ExportAdapter) and c.overwrite for c in trainer.callbacks):
        return []
    planned = trainer.max_steps if trainer.max_steps > 0 else None
    problems = []
    for result in results(trainer):
        where, what = result.where, result.kind
        state = export_state(result.path) if what == "adapter" else table_state(result.path)
        if state is None:
            continue
        step, complete = state
        at = f"step {step}" if step is not None else "an unknown step"
        if planned is not None and step is not None and planned < step:
            problems.append(f"{where}: holds {'an' if what[0] in 'aeiou' else 'a'} {what} from {at}, and this run stops at trainer.max_steps {planned}: it "
                            f"would replace it with less; write elsewhere, or set export.overwrite: true to replace it")
        elif complete and ckpt_path is None:
            problems.append(f"{where}: holds the {what} of a completed run ({at}); this fresh run would replace it: "
                            "resume that run with --ckpt_path last, write elsewhere, or set export.overwrite: true")
    return problems


def keep_previous_metrics(trainer) -> list[Path]:
    """Move aside a ``metrics.csv`` that a ``CSVLogger`` would delete: one writing into a log
    folder that already holds one (a fixed ``version``, reused by a resume or a second run).
    Lightning deletes that file when its writer starts; here it becomes ``metrics.<k>.csv``
    (the first free k) beside it. Returns the files moved."""
    from lightning.pytorch.loggers import CSVLogger
    from lightning.pytorch.utilities import rank_zero_info

    moved = []
    for logger in trainer.loggers if trainer.is_global_zero else []:
        path = Path(logger.log_dir) / "metrics.csv" if isinstance(logger, CSVLogger) else None
        if path is None or not path.is_file():
            continue
        k = 0
        while (kept := path.with_name(f"metrics.{k}.csv")).exists():
            k += 1
        path.rename(kept)
        moved.append(kept)
        rank_zero_info(f"{path} is from an earlier run in the same log folder: kept as {kept.name}")
    return moved
