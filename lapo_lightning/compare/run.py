"""``lapo compare --config configs/compare/demo.yaml``: run every phase of a comparison, then report.

Flow: :func:`load_config` reads and checks the comparison YAML (every problem named at once,
by file and key); :func:`run_compare` runs its phases in order through
:func:`lapo_lightning.cli.phases.run_phases` (each an ordinary ``lapo fit``/``lapo eval`` config;
finished phases are skipped, so an interrupted comparison resumes, and a phase shared with
``lapo demo``, e.g. its SFT model, is not trained twice), prints each phase's time, and writes
the report (:mod:`lapo_lightning.compare.report`).

The YAML::

    title: Length-control methods on the demo task      # report heading
    report_dir: runs/compare/report                     # report.md, pareto_*.png, compare.json
    notes: text printed under the heading (optional)
    phases:                                             # run in this order
      - {name: sft, config: configs/demo/sft.yaml, what: "SFT warm start", smoke: [--trainer.max_steps, "3"]}
      - {name: kimi, config: configs/compare/demo/kimi.yaml}                  # command: fit (default)
      - {name: eval, command: eval, config: configs/compare/demo/eval.yaml}   # its results go in the report

``smoke`` (the extra arguments of ``--smoke``) defaults to a few steps for ``fit`` phases and a
few problems for ``eval`` phases.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from lapo_lightning.cli.phases import COMMANDS, EVAL_SMOKE, RL_SMOKE, Phase, marker, run_phases, stay_offline

_TOP_KEYS = ("title", "report_dir", "notes", "phases")
_PHASE_KEYS = ("name", "command", "config", "what", "smoke")


class CompareConfigError(ValueError):
    """A comparison config with problems; ``problems`` holds one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class CompareConfig:
    title: str
    report_dir: Path
    phases: list[Phase]
    notes: str = ""

    @property
    def reports(self) -> list[Path]:
        """The report folders of the evaluation phases, in order: the rows of the comparison."""
        return [p.output() for p in self.phases if p.command == "eval"]


def _phase(path: Path, i: int, spec, names: set[str], problems: list[str]) -> Phase | None:
    where = f"{path}: phases[{i}]"
    if not isinstance(spec, dict):
        problems.append(f"{where}: expected a mapping with name and config, got {spec!r}")
        return None
    for key in sorted(set(spec) - set(_PHASE_KEYS)):
        problems.append(f"{where}: unknown key {key!r} (allowed: {', '.join(_PHASE_KEYS)})")
    name, command, config = spec.get("name"), spec.get("command", "fit"), spec.get("config")
    if not isinstance(name, str) or not name:
        problems.append(f"{where}.name: expected a non-empty string, got {name!r}")
    elif name in names:
        problems.append(f"{where}.name: {name!r} is used by an earlier phase")
    names.add(name)
    if command not in COMMANDS:
        problems.append(f"{where}.command: expected one of {', '.join(COMMANDS)}, got {command!r}")
    if not isinstance(config, str) or not Path(config).is_file():
        problems.append(f"{where}.config: no such file {config!r} (paths are relative to the folder you run "
                        "lapo compare from, normally the repository root)")
        return None
    smoke = spec.get("smoke", RL_SMOKE if command == "fit" else EVAL_SMOKE)
    if not isinstance(smoke, (list, tuple)) or not all(isinstance(a, str) for a in smoke):
        problems.append(f"{where}.smoke: expected a list of command-line arguments (strings), got {smoke!r}")
        return None
    phase = Phase(str(name), command, Path(config), str(spec.get("what") or f"lapo {command} {config}"), tuple(smoke))
    if command in COMMANDS:
        try:
            phase.output()
        except (ValueError, yaml.YAMLError) as error:
            problems.append(f"{where}.config: {error}")
            return None
    return phase


def load_config(path: str | Path) -> CompareConfig:
    """The checked comparison config; raises :class:`CompareConfigError` listing every problem."""
    path = Path(path)
    if not path.is_file():
        raise CompareConfigError([f"{path}: no such comparison config (run from the repository root, or pass "
                                  "--config)"])
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise CompareConfigError([f"{path}: not valid YAML: {error}"]) from None
    if not isinstance(raw, dict):
        raise CompareConfigError([f"{path}: expected a mapping with report_dir and phases"])
    problems = [f"{path}: unknown key {key!r} (allowed: {', '.join(_TOP_KEYS)})"
                for key in sorted(set(raw) - set(_TOP_KEYS))]
    if not isinstance(raw.get("report_dir"), str):
        problems.append(f"{path}: report_dir: expected a folder path, got {raw.get('report_dir')!r}")
    specs = raw.get("phases")
    if not isinstance(specs, list) or not specs:
        problems.append(f"{path}: phases: expected a non-empty list of phases")
        specs = []
    names: set[str] = set()
    phases = [_phase(path, i, spec, names, problems) for i, spec in enumerate(specs)]
    if specs and not any(isinstance(s, dict) and s.get("command") == "eval" for s in specs):
        problems.append(f"{path}: phases: no phase has command: eval, so there would be nothing to compare")
    if problems:
        raise CompareConfigError(problems)
    return CompareConfig(str(raw.get("title") or path.stem), Path(raw["report_dir"]), phases,
                         str(raw.get("notes") or ""))


def run_compare(config: CompareConfig, smoke: bool = False, log=print) -> dict:
    """Run (or resume) every phase, then write and print the report; returns write_report's dict."""
    from lapo_lightning.compare.report import write_report

    start = time.perf_counter()
    ran = run_phases(config.phases, smoke, log)
    timings = {}
    for phase in config.phases:
        done = marker(phase.output()) or {}
        timings[phase.name] = {"seconds": float(ran.get(phase.name, done.get("seconds", 0.0))),
                               "this_run": phase.name in ran, "smoke": bool(done.get("smoke", smoke))}
    report = write_report(config.report_dir, config.reports, timings, config.title, config.notes)
    log("\n" + report["markdown"] + f"\nThis run took {(time.perf_counter() - start) / 60:.1f} min. "
        f"Report: {config.report_dir / 'report.md'}")
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lapo compare", description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/compare/demo.yaml", help="the comparison YAML")
    parser.add_argument("--smoke", action="store_true",
                        help="a few steps per phase (checks the plumbing, not the methods)")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
    except CompareConfigError as error:
        print("lapo compare: the config has problems:", *error.problems, sep="\n  ", file=sys.stderr)
        return 2
    stay_offline()
    run_compare(config, args.smoke)
    return 0
