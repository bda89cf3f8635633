"""The report folder: ``results.json`` (every number), ``report.md`` (paper Table 1 format), plots.

Flow: after each model's ``trainer.test``, ``run_evaluation`` (rank 0) calls
:func:`write_report` with the metric rows of ``EvalModule.results``, the records of the
folder (for the length histograms) and the run's settings, so an interrupted multi-model
run still leaves a report of the models it finished. Numbers: Pass@1 in percent, #Tok =
mean generated tokens per sample; "Average" is the unweighted mean over benchmarks, as in
the paper's Table 1.
"""

from __future__ import annotations

import json
import math
import re
import os
import tempfile
from pathlib import Path

from lapo_lightning.evaluation import plots
from lapo_lightning.evaluation.intervals import LEVEL, RESAMPLES, format_difference, format_interval, interval_fields
from lapo_lightning.evaluation.records import SampleRecord

FORMAT, VERSION = "lapo-eval-results", 1


def averages(rows: list[dict], benchmarks: list[str]) -> dict:
    """Mean Pass@1 and #Tok over benchmarks per (model, condition); None where a cell is missing."""
    out: dict = {}
    cells = {(r["model"], r["condition"], r["benchmark"]): r for r in rows}
    for model, condition in dict.fromkeys((r["model"], r["condition"]) for r in rows):
        found = [cells.get((model, condition, b)) for b in benchmarks]
        complete = all(c is not None and c["pass@1"] is not None for c in found)
        out.setdefault(model, {})[condition] = {
            "pass@1": sum(c["pass@1"] for c in found) / len(found) if complete else None,
            "tokens_mean": sum(c["tokens_mean"] for c in found) / len(found) if complete else None,
            "benchmarks": len(benchmarks),
        }
    return out


def order_rows(rows: list[dict], settings: dict) -> list[dict]:
    """Rows in the configured model, condition, benchmark order."""
    rank = {
        "model": {m["name"]: i for i, m in enumerate(settings["models"])},
        "condition": {c["label"]: i for i, c in enumerate(settings["conditions"])},
        "benchmark": {b["name"]: i for i, b in enumerate(settings["benchmarks"])},
    }
    return sorted(rows, key=lambda r: tuple(rank[k].get(r[k], math.inf) for k in ("model", "condition", "benchmark")))


def write_report(folder: str | Path, rows: list[dict], records: list[SampleRecord], settings: dict,
                 plots_too: bool = True) -> dict[str, Path]:
    """Write results.json, report.md and (``plots_too``) the plots into ``folder``; returns name -> path.

    Each row gains its 95% intervals and its paired difference to the baseline (the first
    model), from ``records`` (``intervals.py``)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    baseline = settings["models"][0]["name"]
    extra = interval_fields(records, baseline)
    rows = [r | extra.get((r["model"], r["condition"], r["benchmark"]), {}) for r in order_rows(rows, settings)]
    benchmarks = [b["name"] for b in settings["benchmarks"]]
    primary = settings["conditions"][0]["label"]  # plots show the first budget condition
    files = {"results": folder / "results.json", "report": folder / "report.md"}
    if plots_too:
        files.update(plots.draw_all(folder, rows, records, settings, primary))
    payload = {"format": FORMAT, "version": VERSION, "settings": settings, "baseline": baseline, "results": rows,
               "averages": averages(rows, benchmarks), "files": {k: p.name for k, p in files.items()}}
    _atomic_write(files["results"], json.dumps(payload, indent=1, ensure_ascii=False, allow_nan=False, default=str) + "\n")
    _atomic_write(files["report"], render_markdown(rows, settings, files))
    return files


def _atomic_write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a report is meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# ------------------------------------------------------------------- markdown
def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}"


def _tok(value: float | None) -> str:
    return "–" if value is None else f"{value:,.0f}"


def _table(header: list[str], body: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(row) + " |" for row in body] + [""]


def _condition_title(condition: dict) -> str:
    if condition["table"]:
        return "budget from the length table (per problem)"
    if condition["fixed"] is None:
        return "no budget (paper protocol)"
    named = f"{condition['label']}, " if condition["label"] != str(condition["fixed"]) else ""
    return f"budget {named}n = {condition['fixed']} tokens"


def render_markdown(rows: list[dict], settings: dict, files: dict[str, Path]) -> str:
    benchmarks = [b["name"] for b in settings["benchmarks"]]
    models = [m["name"] for m in settings["models"]]
    cells = {(r["model"], r["condition"], r["benchmark"]): r for r in rows}
    avg = averages(rows, benchmarks)
    gen = settings["generation"]
    lines = ["# Evaluation report", "",
             f"Sampling: temperature {gen['temperature']}, top-p {gen['top_p']}, at most {gen['max_new_tokens']} new "
             f"tokens. Samples per problem: " + ", ".join(f"{b['name']} {b['samples']}" for b in settings["benchmarks"])
             + ". Cells: Pass@1 (%) / #Tok (mean generated tokens per sample). Average: unweighted mean over "
             "benchmarks.", "",
             "Models: " + "; ".join(f"`{m['name']}` = {m['model']}" + (f" + {m['adapter']}" if m["adapter"] else "")
                                    for m in settings["models"]) + ".", ""]
    for condition in settings["conditions"]:
        label = condition["label"]
        body = []
        for model in models:
            row = [f"`{model}`"]
            for bench in benchmarks:
                c = cells.get((model, label, bench))
                row.append("–" if c is None else f"{_pct(c['pass@1'])} / {_tok(c['tokens_mean'])}")
            a = avg.get(model, {}).get(label)
            row.append("–" if a is None else f"{_pct(a['pass@1'])} / {_tok(a['tokens_mean'])}")
            body.append(row)
        lines += [f"## Pass@1 / #Tok: {_condition_title(condition)}", ""]
        lines += _table(["Model", *benchmarks, "Average"], body)

    lines += interval_section(rows)
    ks = sorted({k for r in rows for k in r if re.fullmatch(r"pass@\d+", k) and k != "pass@1"}, key=lambda k: int(k[5:]))
    lines += ["## Details", "",
              "Truncated: hit the token cap. Unparseable: no answer could be extracted (counted incorrect). "
              "\\|L − n\\|: mean distance of the length from the stated budget.", ""]
    detail = [[f"`{r['model']}`", r["condition"], r["benchmark"], str(r["problems"]), str(r["samples"]),
               _pct(r["pass@1"]), *(_pct(r.get(k)) for k in ks), _tok(r["tokens_mean"]),
               _tok(r["tokens_correct_mean"]), _pct(r["truncation_rate"]), _pct(r["unparseable_rate"]),
               _tok(r["budget_abs_error"])] for r in rows]
    lines += _table(["Model", "Budget", "Benchmark", "Problems", "Samples", "Pass@1", *ks, "#Tok",
                     "#Tok correct", "Truncated %", "Unparseable %", "\\|L − n\\|"], detail)

    level_rows = [r for r in rows if any(lv != "0" for lv in r["by_level"]) and r["condition"] == settings[
        "conditions"][0]["label"]]
    if level_rows:
        levels = sorted({int(lv) for r in level_rows for lv in r["by_level"] if lv != "0"})
        lines += ["## By difficulty level: Pass@1 (%) / #Tok", ""]
        lines += _table(["Model", "Benchmark", *(f"Level {lv}" for lv in levels)], [
            [f"`{r['model']}`", r["benchmark"], *(
                f"{_pct(c['pass@1'])} / {_tok(c['tokens_mean'])}" if (c := r["by_level"].get(str(lv))) else "–"
                for lv in levels)] for r in level_rows])
        lines += level_interval_section(level_rows)

    sweep = [r for r in rows if r["budget"] is not None]
    if sweep:
        lines += ["## Budget adherence", ""]
        lines += _table(["Model", "Benchmark", "Budget n", "#Tok", "\\|L − n\\|", "Pass@1"], [
            [f"`{r['model']}`", r["benchmark"], str(r["budget"]), _tok(r["tokens_mean"]),
             _tok(r["budget_abs_error"]), _pct(r["pass@1"])]
            for r in sorted(sweep, key=lambda r: (models.index(r["model"]) if r["model"] in models else 0,
                                                  r["benchmark"], r["budget"]))])

    pictures = [(k, p) for k, p in files.items() if p.suffix == ".png"]
    if pictures:
        lines += ["## Plots", ""] + [f"![{k}]({p.name})" for k, p in pictures] + [""]
    lines += ["Every number is in `results.json`; every sample in `samples.jsonl`.", ""]
    return "\n".join(lines)


def interval_section(rows: list[dict]) -> list[str]:
    """Markdown lines: each cell's 95% intervals and its paired difference to the baseline."""
    if not any(r.get("pass@1_ci") for r in rows):
        return []
    baseline = next((r["vs_baseline"]["model"] for r in rows if r.get("vs_baseline")), None)
    lines = [f"## {LEVEL:.0%} intervals", "",
             f"Bootstrap over problems ({RESAMPLES:,} resamples, a problem's samples kept together, fixed seed)."
             + (f" Difference: each model minus `{baseline}` on the same problems, paired; * where its interval "
                "excludes 0." if baseline else ""), ""]
    body = [[f"`{r['model']}`", r["condition"], r["benchmark"], _pct(r["pass@1"]),
             format_interval(r.get("pass@1_ci"), 100), _tok(r["tokens_mean"]),
             format_interval(r.get("tokens_mean_ci"), 1, ",.0f"),
             format_difference((r.get("vs_baseline") or {}).get("pass@1"), 100),
             format_difference((r.get("vs_baseline") or {}).get("tokens_mean"), 1, ",.0f")] for r in rows]
    return lines + _table(["Model", "Budget", "Benchmark", "Pass@1", "95% interval", "#Tok", "95% interval",
                           "Δ Pass@1", "Δ #Tok"], body)


def level_interval_section(rows: list[dict]) -> list[str]:
    """Markdown lines: each level's 95% intervals and paired difference to the baseline (rows
    whose ``by_level_ci`` came from :func:`interval_fields`)."""
    body = [[f"`{r['model']}`", r["benchmark"], lv, str(r["by_level"][lv]["samples"]),
             _pct(r["by_level"][lv]["pass@1"]), format_interval(ci.get("pass@1_ci"), 100),
             _tok(r["by_level"][lv]["tokens_mean"]), format_interval(ci.get("tokens_mean_ci"), 1, ",.0f"),
             format_difference((ci.get("vs_baseline") or {}).get("pass@1"), 100),
             format_difference((ci.get("vs_baseline") or {}).get("tokens_mean"), 1, ",.0f")]
            for r in rows for lv, ci in (r.get("by_level_ci") or {}).items() if lv in r["by_level"]]
    if not body:
        return []
    return [f"Per level, {LEVEL:.0%} intervals (bootstrap over that level's problems; Δ paired as above):", "",
            *_table(["Model", "Benchmark", "Level", "Samples", "Pass@1", "95% interval", "#Tok", "95% interval",
                     "Δ Pass@1", "Δ #Tok"], body)]
