"""Resumable chains of ordinary configs: what ``lapo demo`` and ``lapo compare`` run.

Flow: a :class:`Phase` is one YAML run exactly as ``lapo fit --config ...`` or ``lapo eval
--config ...`` would run it. :func:`run_phases` runs a list of them in order; a phase that
finishes leaves a marker file (its time, and whether it was a smoke run) in its output folder
(the exported model for ``fit``, the report folder for ``eval``), and a later call skips every
phase whose marker is there, so an interrupted chain resumes where it stopped. A full run never
trusts a marker that only a smoke run (a few steps per phase) left.

A training phase that was started but never finished (killed, crashed, Ctrl-C) continues from
its last checkpoint: the next call passes ``--ckpt_path last`` (which starts at step 0 when the
phase saved no checkpoint yet). Only a phase started in the same mode is continued: a full run
never resumes a smoke run's checkpoint, nor the reverse. ``lapo eval`` phases resume from their
own records anyway.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import yaml

MARKER = ".lapo-demo-done"
STARTED = ".lapo-phase-started"  # in the output folder while a phase runs; removed when it finishes
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

    def args(self, smoke: bool, resume: bool = False) -> list[str]:
        # A phase that starts afresh replaces what an unfinished or smoke run of it left (a finished
        # run of it is skipped), which `lapo fit` otherwise refuses (finished_results.py).
        fresh = ("--export.overwrite", "true") if self.command == "fit" and not resume else ()
        return [self.command, "--config", str(self.config), *(self.smoke if smoke else ()),
                *(("--ckpt_path", "last") if resume else fresh)]


def stay_offline() -> None:
    """Every phase of a chain runs on files built locally: never let a library wait on the hub
    (a user's own HF_HUB_OFFLINE / HF_DATASETS_OFFLINE setting wins)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


def marker(folder: Path) -> dict | None:
    """The marker a finished phase left in ``folder`` (None when it did not finish)."""
    path = folder / MARKER
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def is_done(folder: Path, smoke: bool) -> bool:
    done = marker(folder)
    return done is not None and (smoke or not done.get("smoke", False))


def interrupted(folder: Path, smoke: bool) -> bool:
    """True when a run in the same mode (smoke or full) started the phase writing ``folder`` and
    did not finish it."""
    path = folder / STARTED
    return path.is_file() and json.loads(path.read_text(encoding="utf-8")).get("smoke") == smoke


def run_phase(phase: Phase, smoke: bool, resume: bool = False) -> None:
    """Run one phase in this process: ``lapo fit`` or ``lapo eval`` with the phase's arguments."""
    args = phase.args(smoke, resume)
    if args[0] == "eval":
        from lapo_lightning.evaluation.run import main as evaluate

        evaluate(args[1:])
    else:
        from lapo_lightning.cli.fit import build_cli

        build_cli(args)


def run_phases(phases: list[Phase], smoke: bool = False, log: Callable[[str], None] = print,
               runner: Callable[[Phase, bool, bool], None] | None = None) -> dict[str, float]:
    """Run (or skip, when finished earlier) every phase in order; returns name -> seconds of
    the phases this call ran. ``runner`` defaults to :func:`run_phase` (tests replace it)."""
    runner = runner or run_phase
    seconds = {}
    for i, phase in enumerate(phases, start=1):
        out = phase.output()
        if is_done(out, smoke):
            log(f"[{i}/{len(phases)}] {phase.name}: done earlier ({out}), skipped")
            continue
        resume = phase.command == "fit" and interrupted(out, smoke)
        log(f"[{i}/{len(phases)}] {phase.name}: {phase.what}" + (" (interrupted earlier: continuing from its last "
            "checkpoint)" if resume else "") + "\n    lapo " + " ".join(phase.args(smoke, resume)))
        out.mkdir(parents=True, exist_ok=True)
        (out / STARTED).write_text(json.dumps({"phase": phase.name, "smoke": smoke}) + "\n", encoding="utf-8")
        t0 = time.perf_counter()
        runner(phase, smoke, resume)
        seconds[phase.name] = time.perf_counter() - t0
        out.mkdir(parents=True, exist_ok=True)  # an export replaces the folder: the started-marker goes with it
        (out / MARKER).write_text(json.dumps({"phase": phase.name, "seconds": round(seconds[phase.name], 1),
                                              "smoke": smoke}) + "\n", encoding="utf-8")
        (out / STARTED).unlink(missing_ok=True)
        log(f"    {phase.name} finished in {seconds[phase.name]:.0f} s")
    return seconds
