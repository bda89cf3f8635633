"""The demo's closing table and its checks against the demo's targets.

Flow: ``lapo demo`` (:mod:`lapo_lightning.demo.run`) calls :func:`summarize` with the two
evaluation report folders (sampled at temperature 1, and greedy). It reads their
``results.json`` and returns one markdown table in the paper's ``Pass@1 / #Tok`` format
(overall, then per difficulty level from the sampled run) plus the target checks:

- LAPO stage 1 uses at least 30% fewer tokens than the SFT base (sampled);
- LAPO stage 2 uses at most as many tokens as stage 1;
- each LAPO model's accuracy is at most 2 points below the base;
- mean tokens rise with difficulty level for every model.
"""

from __future__ import annotations

import json
from pathlib import Path

BASE, STAGE1, STAGE2 = "sft-base", "lapo-stage1", "lapo-stage2"
MIN_TOKEN_CUT, MAX_ACC_DROP = 0.30, 0.02


def _rows(report_dir: Path) -> dict[str, dict]:
    """model -> its no-budget result row (the demo evaluates one benchmark)."""
    results = json.loads((Path(report_dir) / "results.json").read_text(encoding="utf-8"))["results"]
    return {r["model"]: r for r in results if r["condition"] == "none"}


def _cell(stats: dict | None) -> str:
    if stats is None or stats.get("pass@1") is None:
        return "–"
    return f"{100 * stats['pass@1']:.1f} / {stats['tokens_mean']:.1f}"


def target_checks(sampled: dict[str, dict]) -> list[tuple[str, bool]]:
    """(description with the measured numbers, met?) for each target that the rows allow checking."""
    checks = []
    base = sampled.get(BASE)
    if base is None:
        return checks
    for name in (STAGE1, STAGE2):
        row = sampled.get(name)
        if row is None:
            continue
        drop = base["pass@1"] - row["pass@1"]
        checks.append((f"{name}: Pass@1 {-100 * drop:+.1f} points vs the base (target: at most "
                       f"{100 * MAX_ACC_DROP:.0f} below)", drop <= MAX_ACC_DROP + 1e-12))
    if STAGE1 in sampled:
        cut = 1 - sampled[STAGE1]["tokens_mean"] / base["tokens_mean"]
        checks.append((f"{STAGE1}: {100 * cut:.1f}% fewer tokens than the base (target: at least "
                       f"{100 * MIN_TOKEN_CUT:.0f}%)", cut >= MIN_TOKEN_CUT))
    if STAGE1 in sampled and STAGE2 in sampled:
        s1, s2 = sampled[STAGE1]["tokens_mean"], sampled[STAGE2]["tokens_mean"]
        checks.append((f"{STAGE2}: {s2:.1f} tokens vs stage 1's {s1:.1f} (target: at most as many)", s2 <= s1))
    for name, row in sampled.items():
        levels = sorted(row["by_level"], key=int)
        tokens = [row["by_level"][lv]["tokens_mean"] for lv in levels]
        rising = all(a < b for a, b in zip(tokens, tokens[1:]))
        checks.append((f"{name}: tokens by level " + " < ".join(f"{t:.0f}" for t in tokens)
                       + ("" if rising else " (not rising)"), rising))
    return checks


def summarize(sampled_dir: str | Path, greedy_dir: str | Path) -> dict:
    """The demo table and target checks as markdown, plus the numbers behind them."""
    sampled, greedy = _rows(Path(sampled_dir)), _rows(Path(greedy_dir))
    models = list(dict.fromkeys([*sampled, *greedy]))
    levels = sorted({lv for r in sampled.values() for lv in r["by_level"]}, key=int)
    header = ["Model", "Greedy", "Sampled (T=1)", *(f"Level {lv} (T=1)" for lv in levels)]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for name in models:
        row = sampled.get(name, {})
        lines.append("| " + " | ".join([f"`{name}`", _cell(greedy.get(name)), _cell(row),
                                        *(_cell(row.get("by_level", {}).get(lv)) for lv in levels)]) + " |")
    problems = next(iter(sampled.values()))["problems"] if sampled else 0
    checks = target_checks(sampled)
    markdown = "\n".join([
        f"Pass@1 (%) / #Tok (mean generated tokens) on {problems} held-out problems; level = number of terms - 1.",
        "", *lines, "", "Targets:", *(f"- [{'x' if ok else ' '}] {text}" for text, ok in checks), ""])
    return {"markdown": markdown, "checks": checks, "sampled": sampled, "greedy": greedy}
