"""``lapo demo``: the whole LAPO pipeline on a laptop CPU, offline, by chaining ordinary configs.

Flow: each :class:`~lapo_lightning.cli.phases.Phase` is one config under ``configs/demo/`` run exactly as
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
import time
from pathlib import Path

from lapo_lightning.cli.phases import EVAL_SMOKE, RL_SMOKE, Phase, run_phases, stay_offline

# (name, command, file under the configs folder, what it does, extra arguments in smoke mode)
PHASES = (
    ("sft", "fit", "sft.yaml", "supervised warm start of a random-init model (overthinking traces)",
     ("--trainer.max_steps", "3")),
    ("acc_only", "fit", "acc_only.yaml", "GRPO, accuracy reward only (baseline)", RL_SMOKE),
    ("stage1", "fit", "stage1.yaml", "LAPO stage 1: discovery (length-band reward, length table)", RL_SMOKE),
    ("stage2", "fit", "stage2.yaml", "LAPO stage 2: internalization (budget in the prompt)", RL_SMOKE),
    ("eval_sampled", "eval", "eval_sampled.yaml", "evaluation, temperature 1, 4 samples per problem", EVAL_SMOKE),
    ("eval_greedy", "eval", "eval_greedy.yaml", "evaluation, greedy", EVAL_SMOKE),
)


def demo_phases(config_dir: str | Path = "configs/demo") -> list[Phase]:
    """The demo's phases with their configs under ``config_dir``; names every missing file."""
    config_dir = Path(config_dir)
    missing = [file for _, _, file, _, _ in PHASES if not (config_dir / file).is_file()]
    if missing:
        raise FileNotFoundError(f"lapo demo: {config_dir} lacks {', '.join(missing)} (run it from the repository "
                                "root, or pass --configs)")
    return [Phase(name, command, config_dir / file, what, smoke) for name, command, file, what, smoke in PHASES]


def run_demo(config_dir: str | Path = "configs/demo", smoke: bool = False, log=print) -> dict:
    """Run (or resume) every phase; returns the summary dict that was printed."""
    phases = demo_phases(config_dir)
    start = time.perf_counter()
    seconds = run_phases(phases, smoke, log)
    from lapo_lightning.demo.summary import summarize

    reports = {p.name: p.output() for p in phases if p.command == "eval"}
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
    stay_offline()
    run_demo(args.configs, args.smoke)
    return 0
