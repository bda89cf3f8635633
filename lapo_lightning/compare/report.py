"""The comparison report: one table per benchmark, the Pareto plot, and the time of every phase.

Flow: after ``lapo compare`` ran its phases (:mod:`lapo_lightning.compare.run`),
:func:`write_report` reads the ``results.json`` of each evaluation phase (written by ``lapo
eval``) and writes into the comparison's report folder:

- ``report.md``: per benchmark, one row per (model, budget condition): Pass@1 and mean generated
  tokens with their 95% intervals and paired differences to the evaluation's baseline (from
  each ``results.json``, ``evaluation/intervals.py``), mean tokens per difficulty level,
  truncation rate, the stated budget and the budget adherence mean |L - n| where the prompt
  stated one (or, without one, where the model stated its own), and whether the row is on the
  Pareto front; then the time each phase took;
- ``pareto_<benchmark>.png``: accuracy against tokens with the front marked and 95% error bars;
- ``compare.json``: the same numbers for scripts.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from lapo_lightning.safety.atomic import write_file
from lapo_lightning.compare.pareto import draw_pareto, pareto_front
from lapo_lightning.evaluation.intervals import format_difference, format_interval


def row_label(model: str, condition: str) -> str:
    """``acc-only`` for the no-budget condition; ``l1-max @ n=32`` for a stated budget of 32."""
    if condition == "none":
        return model
    return f"{model} @ n={condition}" if condition.isdigit() else f"{model} @ {condition}"


def collect_rows(report_dirs: list[Path]) -> list[dict]:
    """Every (model, condition, benchmark) result of the evaluation reports, in their order; a
    cell that two reports share is taken from the first."""
    rows, seen = [], set()
    for folder in report_dirs:
        path = Path(folder) / "results.json"
        if not path.is_file():
            raise FileNotFoundError(f"lapo compare: {path} is missing: its evaluation phase did not finish")
        data = json.loads(path.read_text(encoding="utf-8"))
        settings = data.get("settings", {}).get("generation", {})
        for r in data["results"]:
            key = (r["model"], r["condition"], r["benchmark"])
            if key in seen or r.get("pass@1") is None:
                continue
            seen.add(key)
            rows.append({**r, "label": row_label(r["model"], r["condition"]), "report": str(folder),
                         "temperature": settings.get("temperature")})
    return rows


def _num(value, fmt: str, scale: float = 1.0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return format(scale * value, fmt)


def _versus(row: dict, name: str, scale: float) -> str:
    """``+2.5 [-1.0, 6.0] * vs `base```: the row's paired difference to its evaluation's baseline."""
    versus = row.get("vs_baseline") or {}
    return "–" if not versus.get(name) else f"{format_difference(versus[name], scale)} vs `{versus['model']}`"


def budget_cells(row: dict) -> tuple[str, str]:
    """(Budget n, |L - n|): the budget the prompt stated; without one, the budget the model
    stated itself (LAPO stage 2 writes it after <think>) with the share of samples that did."""
    if row.get("budget_mean") is not None:
        error = _num(row.get("budget_abs_error"), ".1f")
        return _num(row["budget_mean"], ".0f"), error + (f" {format_interval(row['budget_abs_error_ci'])}"
                                                        if row.get("budget_abs_error_ci") else "")
    if row.get("own_budget_rate"):
        return f"own ({100 * row['own_budget_rate']:.0f}%)", _num(row.get("own_budget_abs_error"), ".1f")
    return "–", "–"


def benchmark_table(rows: list[dict]) -> list[str]:
    """Markdown lines of one benchmark's table (rows already marked with ``pareto``)."""
    levels = sorted({lv for r in rows for lv in r.get("by_level", {})}, key=lambda lv: (len(lv), lv))
    header = ["Method", "Pass@1 (%)", "95% interval", "#Tok", "95% interval", "Δ Pass@1 (paired)", "Δ #Tok (paired)",
              *(f"#Tok L{lv}" for lv in levels), "Truncated (%)", "Budget n", "\\|L - n\\|", "Pareto"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for r in rows:
        by_level = r.get("by_level", {})
        cells = [f"`{r['label']}`", _num(r["pass@1"], ".1f", 100), format_interval(r.get("pass@1_ci"), 100),
                 _num(r["tokens_mean"], ".1f"), format_interval(r.get("tokens_mean_ci")),
                 _versus(r, "pass@1", 100), _versus(r, "tokens_mean", 1),
                 *(_num(by_level.get(lv, {}).get("tokens_mean"), ".1f") for lv in levels),
                 _num(r.get("truncation_rate"), ".1f", 100), *budget_cells(r), "yes" if r["pareto"] else ""]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def timing_table(timings: dict[str, dict]) -> list[str]:
    """Markdown lines: each phase's seconds, and whether this run or an earlier one ran it."""
    lines = ["| Phase | Time (s) | Ran |", "|---|---|---|"]
    for name, t in timings.items():
        lines.append(f"| {name} | {t['seconds']:.0f} | {'this run' if t['this_run'] else 'earlier run'}"
                     f"{' (smoke)' if t.get('smoke') else ''} |")
    total = sum(t["seconds"] for t in timings.values())
    lines.append(f"| **total** | **{total:.0f}** ({total / 60:.1f} min) | |")
    return lines


def write_report(folder: Path, report_dirs: list[Path], timings: dict[str, dict], title: str,
                 notes: str = "") -> dict:
    """Write report.md, compare.json and one Pareto PNG per benchmark into ``folder``; returns
    ``{"markdown", "rows", "plots"}``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rows = collect_rows(report_dirs)
    benchmarks = list(dict.fromkeys(r["benchmark"] for r in rows))
    lines, plots = [f"# {title}", ""], {}
    if notes:
        lines += [notes.strip(), ""]
    for bench in benchmarks:
        group = [r for r in rows if r["benchmark"] == bench]
        for r, on in zip(group, pareto_front([(r["tokens_mean"], r["pass@1"]) for r in group])):
            r["pareto"] = on
        first = group[0]
        lines += [f"## {bench}: {first['problems']} problems, {first['samples_per_problem']} samples each, "
                  f"temperature {first['temperature']}", "",
                  "Pass@1 = mean accuracy over the samples; #Tok = mean generated tokens (L1-L4: per difficulty "
                  "level); 95% intervals: bootstrap over problems; Δ: the paired difference to the evaluation's "
                  "first model on the same problems, * where its interval excludes 0; Budget n and |L - n| where the "
                  "prompt stated a budget, or \"own\" where the model stated one itself (with the share of samples "
                  "that did); Pareto = no other row has fewer or equal tokens and higher or equal Pass@1 (error bars in "
                  "the plot: the 95% intervals).", "", *benchmark_table(group), "",
                  f"![accuracy vs tokens](pareto_{bench}.png)", ""]
        plots[bench] = draw_pareto(folder / f"pareto_{bench}.png", [r["label"] for r in group],
                                   [(r["tokens_mean"], r["pass@1"]) for r in group], f"{title}: {bench}",
                                   {r["label"]: (r.get("tokens_mean_ci"), r.get("pass@1_ci")) for r in group})
    lines += ["## Time per phase", "", *timing_table(timings), ""]
    markdown = "\n".join(lines)
    for name, text in (("report.md", markdown), ("compare.json", json.dumps({"rows": rows, "timings": timings},
                                                                             indent=1) + "\n")):
        write_file(folder / name, lambda f, text=text: f.write(text.encode("utf-8")), what="comparison report")
    return {"markdown": markdown, "rows": rows, "plots": plots}
