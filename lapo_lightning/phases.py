"""Resumable chains of ordinary configs: what ``lapo demo`` and ``lapo compare`` run.

Flow: a :class:`Phase` is one YAML run exactly as ``lapo fit --config ...`` or ``lapo eval
--config ...`` would run it. :func:`run_phases` runs a list of them in order; a phase that
finishes leaves a marker file (its time, and whether it was a smoke run) in its output folder
(the exported model for ``fit``, the report folder for ``eval``), and a later call skips every
phase whose marker is there, so an interrupted chain resumes where it stopped. A full run never
trusts a marker that only a smoke run (a few steps per phase) left.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import yaml

MARKER = ".lapo-demo-done"
COMMANDS = ("fit", "eval")
# A few steps per phase: checks the plumbing of a chain, not the method (what CI runs).
RL_SMOKE = ("--trainer.max_steps", "2", "--data.problems_per_step", "8", "--data.max_problems", "16")
EVAL_SMOKE = ("--data.max_problems", "8")


@dataclass(frozen=True)
class Phase:
    name: str
    command: str  # "fit" or "eval"
    config: Path
    what: str  # one line for the progress header
    smoke: tuple[str, ...] = ()  # extra CLI arguments in smoke mode

    def output(self) -> Path:
        """The folder this phase writes (from its config): the exported model or the report."""
        cfg = yaml.safe_load(self.config.read_text(encoding="utf-8")) or {}
        section, key = ("export", "dirpath") if self.command == "fit" else ("model", "report_dir")
        try:
            return Path(cfg[section][key])
        except (KeyError, TypeError):
            raise ValueError(f"{self.config}: phase {self.name!r} needs {section}.{key} (where its output and "
                             "finished-marker go)") from None

    def args(self, smoke: bool) -> list[str]:
        return [self.command, "--config", str(self.config), *(self.smoke if smoke else ())]


def marker(folder: Path) -> dict | None:
    """The marker a finished phase left in ``folder`` (None when it did not finish)."""
    path = folder / MARKER
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def is_done(folder: Path, smoke: bool) -> bool:
    done = marker(folder)
    return done is not None and (smoke or not done.get("smoke", False))


def run_phase(phase: Phase, smoke: bool) -> None:
    from lapo_lightning.cli import main

    main(phase.args(smoke))


def run_phases(phases: list[Phase], smoke: bool = False, log: Callable[[str], None] = print,
               runner: Callable[[Phase, bool], None] | None = None) -> dict[str, float]:
    """Run (or skip, when finished earlier) every phase in order; returns name -> seconds of
    the phases this call ran. ``runner`` defaults to :func:`run_phase` (tests replace it)."""
    runner = runner or run_phase
    seconds = {}
    for i, phase in enumerate(phases, start=1):
        out = phase.output()
        if is_done(out, smoke):
            log(f"[{i}/{len(phases)}] {phase.name}: done earlier ({out}), skipped")
            continue
        log(f"[{i}/{len(phases)}] {phase.name}: {phase.what}\n    lapo " + " ".join(phase.args(smoke)))
        t0 = time.perf_counter()
        runner(phase, smoke)
        seconds[phase.name] = time.perf_counter() - t0
        out.mkdir(parents=True, exist_ok=True)
        (out / MARKER).write_text(json.dumps({"phase": phase.name, "seconds": round(seconds[phase.name], 1),
                                              "smoke": smoke}) + "\n", encoding="utf-8")
        log(f"    {phase.name} finished in {seconds[phase.name]:.0f} s")
    return seconds
