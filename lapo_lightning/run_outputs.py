"""What a run writes, read from its trainer: the adapter export and the length tables.

Flow: ``lapo fit``'s start-up reads it twice, before any weights load: ``run_lock`` locks the
folders these results (and the checkpoints) go into, and ``finished_results`` refuses a run
that would replace one of them with less.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Result:
    """One result a run leaves: ``where`` names it by its config key for messages."""

    where: str
    kind: str  # "adapter" (a folder) or "length table" (a file)
    path: Path


def results(trainer) -> list[Result]:
    """The adapter export (``ExportAdapter``) and every table a callback writes (its ``path``)."""
    from lapo_lightning.callbacks.export import ExportAdapter

    found = []
    for callback in trainer.callbacks:
        if isinstance(callback, ExportAdapter):
            folder = callback.resolve(trainer)
            found.append(Result(f"export.dirpath {folder}", "adapter", folder))
        path = getattr(callback, "path", None)
        if isinstance(path, str) and path:
            found.append(Result(f"{type(callback).__name__}.path {path}", "length table", Path(path)))
    return found
