"""``lapo demo``: the whole LAPO pipeline on a laptop CPU, offline, by chaining ordinary configs.

Flow: each :class:`Phase` is one config under ``configs/demo/`` run exactly as
``lapo fit --config ...`` or ``lapo eval --config ...`` would run it (SFT warm start,
accuracy-only GRPO, LAPO stage 1, LAPO stage 2, then evaluation sampled and greedy). A phase
that finishes leaves a marker file in its output folder; re-running the command skips it, so
an interrupted demo resumes where it stopped. At the end :func:`summarize` reads both
evaluation reports and prints the paper-style table, the checks against the demo's targets
and the total time (also written to ``<runs>/demo_summary.md``).

``--smoke`` runs every phase for a few steps (what CI does); its markers say so, and a full
run never skips a phase that only a smoke run finished.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

MARKER = ".lapo-demo-done"


@dataclass(frozen=True)
class Phase:
    name: str
    command: str  # "fit" or "eval"
    config: str  # file name under the configs folder
    what: str  # one line for the progress header
    smoke: tuple[str, ...]  # extra CLI arguments in smoke mode

    def output(self, config_dir: Path) -> Path:
        """The folder this phase writes (from its config): the exported model or the report."""
        cfg = yaml.safe_load((config_dir / self.config).read_text(encoding="utf-8"))
        return Path(cfg["export"]["dirpath"] if self.command == "fit" else cfg["model"]["report_dir"])


_RL_SMOKE = ("--trainer.max_steps", "2", "--data.problems_per_step", "8", "--data.max_problems", "16")
_EVAL_SMOKE = ("--data.max_problems", "8")
PHASES = (
    Phase("sft", "fit", "sft.yaml", "supervised warm start of a random-init model (overthinking traces)",
          ("--trainer.max_steps", "3")),
    Phase("acc_only", "fit", "acc_only.yaml", "GRPO, accuracy reward only (baseline)", _RL_SMOKE),
    Phase("stage1", "fit", "stage1.yaml", "LAPO stage 1: discovery (length-band reward, length table)", _RL_SMOKE),
    Phase("stage2", "fit", "stage2.yaml", "LAPO stage 2: internalization (budget in the prompt)", _RL_SMOKE),
    Phase("eval_sampled", "eval", "eval_sampled.yaml", "evaluation, temperature 1, 4 samples per problem",
          _EVAL_SMOKE),
    Phase("eval_greedy", "eval", "eval_greedy.yaml", "evaluation, greedy", _EVAL_SMOKE),
)


def is_done(folder: Path, smoke: bool) -> bool:
    marker = folder / MARKER
    if not marker.is_file():
        return False
    return smoke or not json.loads(marker.read_text(encoding="utf-8")).get("smoke", False)


def run_phase(phase: Phase, config_dir: Path, smoke: bool) -> None:
    from lapo_lightning.cli import main

    args = [phase.command, "--config", str(config_dir / phase.config), *(phase.smoke if smoke else ())]
    main(args)


def run_demo(config_dir: str | Path = "configs/demo", smoke: bool = False, log=print) -> dict:
    """Run (or resume) every phase; returns the summary dict that was printed."""
    config_dir = Path(config_dir)
    missing = [p.config for p in PHASES if not (config_dir / p.config).is_file()]
    if missing:
        raise FileNotFoundError(f"lapo demo: {config_dir} lacks {', '.join(missing)} (run it from the repository "
                                "root, or pass --configs)")
    start, seconds = time.perf_counter(), {}
    for i, phase in enumerate(PHASES, start=1):
        out = phase.output(config_dir)
        if is_done(out, smoke):
            log(f"[{i}/{len(PHASES)}] {phase.name}: done earlier ({out}), skipped")
            continue
        log(f"[{i}/{len(PHASES)}] {phase.name}: {phase.what}\n    lapo {phase.command} --config "
            f"{config_dir / phase.config}" + (" " + " ".join(phase.smoke) if smoke else ""))
        t0 = time.perf_counter()
        run_phase(phase, config_dir, smoke)
        seconds[phase.name] = time.perf_counter() - t0
        out.mkdir(parents=True, exist_ok=True)
        (out / MARKER).write_text(json.dumps({"phase": phase.name, "seconds": round(seconds[phase.name], 1),
                                              "smoke": smoke}) + "\n", encoding="utf-8")
        log(f"    {phase.name} finished in {seconds[phase.name]:.0f} s")
    from lapo_lightning.demo.summary import summarize

    reports = {p.name: p.output(config_dir) for p in PHASES if p.command == "eval"}
    summary = summarize(reports["eval_sampled"], reports["eval_greedy"])
    summary["seconds"] = {"this run": round(time.perf_counter() - start, 1), **{k: round(v, 1) for k, v in seconds.items()}}
    text = summary["markdown"] + f"\nTotal time of this run: {summary['seconds']['this run'] / 60:.1f} min" + (
        " (" + ", ".join(f"{k} {v:.0f} s" for k, v in seconds.items()) + ")\n" if seconds else "\n")
    path = reports["eval_sampled"].parent / "demo_summary.md"
    path.write_text(text, encoding="utf-8")
    log("\n" + text + f"\nReports: {reports['eval_sampled']}/report.md, {reports['eval_greedy']}/report.md; "
        f"this summary: {path}")
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lapo demo", description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default="configs/demo", help="folder holding the phase configs")
    parser.add_argument("--smoke", action="store_true", help="a few steps per phase (checks the plumbing, not LAPO)")
    args = parser.parse_args(argv)
    # Everything is built locally: never let a library wait on the hub.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    run_demo(args.configs, args.smoke)
    return 0
