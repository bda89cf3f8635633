"""PNG plots of the report (matplotlib, Agg backend: no display needed).

Flow: :func:`lapo_lightning.evaluation.report.write_report` calls :func:`draw_all`, which
draws what the data supports and returns name -> path for each file written:
``tokens_by_level.png`` (mean tokens per MATH level, one line per model; LAPO's claim is
that this rises with difficulty), ``accuracy_vs_tokens.png`` (one point per model per
benchmark, paper Fig. 1 style), ``length_histograms.png`` (correct vs incorrect lengths,
models x benchmarks) and, for two or more fixed budgets, ``budget_sweep.png`` (mean tokens,
|L - n| and Pass@1 against the stated budget n).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # before pyplot: headless servers and CI have no display
import matplotlib.pyplot as plt  # noqa: E402

from lapo_lightning.evaluation.records import SampleRecord  # noqa: E402

COLORS = plt.rcParams["axes.prop_cycle"].by_key()["color"]
MARKERS = "osD^vP*X"


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _color(models: list[str], model: str) -> str:
    return COLORS[models.index(model) % len(COLORS)]


def draw_all(folder: Path, rows: list[dict], records: list[SampleRecord], settings: dict,
             condition: str) -> dict[str, Path]:
    models = [m["name"] for m in settings["models"]]
    benchmarks = [b["name"] for b in settings["benchmarks"]]
    main = [r for r in rows if r["condition"] == condition]
    files = {}
    if path := tokens_by_level(main, models, folder / "tokens_by_level.png"):
        files["tokens_by_level"] = path
    if main:
        files["accuracy_vs_tokens"] = accuracy_vs_tokens(main, models, benchmarks, folder / "accuracy_vs_tokens.png")
    shown = [r for r in records if r.condition == condition]
    if shown:
        files["length_histograms"] = length_histograms(shown, models, benchmarks, settings["generation"][
            "max_new_tokens"], folder / "length_histograms.png")
    if path := budget_sweep(rows, models, benchmarks, folder / "budget_sweep.png"):
        files["budget_sweep"] = path
    return files


def tokens_by_level(rows: list[dict], models: list[str], path: Path) -> Path | None:
    """Mean tokens per difficulty level, a line per model, a panel per benchmark with levels."""
    by_bench: dict[str, list[dict]] = {}
    for r in rows:
        if any(level != "0" for level in r["by_level"]):
            by_bench.setdefault(r["benchmark"], []).append(r)
    if not by_bench:
        return None
    fig, axes = plt.subplots(1, len(by_bench), figsize=(5.5 * len(by_bench), 4), squeeze=False)
    for ax, (bench, bench_rows) in zip(axes[0], by_bench.items()):
        for r in bench_rows:
            levels = sorted(int(lv) for lv in r["by_level"] if lv != "0")
            tokens = [r["by_level"][str(lv)]["tokens_mean"] for lv in levels]
            ax.plot(levels, tokens, marker="o", color=_color(models, r["model"]), label=r["model"])
        ax.set(title=f"{bench}: tokens by difficulty", xlabel="level", ylabel="mean generated tokens")
        ax.set_xticks(sorted({int(lv) for r in bench_rows for lv in r["by_level"] if lv != "0"}))
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return _save(fig, path)


def accuracy_vs_tokens(rows: list[dict], models: list[str], benchmarks: list[str], path: Path) -> Path:
    """Pass@1 against mean tokens, a point per model, a panel per benchmark (up-left is better)."""
    shown = [b for b in benchmarks if any(r["benchmark"] == b for r in rows)]
    cols = min(len(shown), 4)
    nrows = -(-len(shown) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.2 * cols, 3.8 * nrows), squeeze=False)
    for ax in axes.flat[len(shown):]:
        ax.set_visible(False)
    for ax, bench in zip(axes.flat, shown):
        for r in (r for r in rows if r["benchmark"] == bench and r["pass@1"] is not None):
            x, y = r["tokens_mean"], 100 * r["pass@1"]
            marker = MARKERS[models.index(r["model"]) % len(MARKERS)] if r["model"] in models else "o"
            ax.scatter([x], [y], s=60, color=_color(models, r["model"]), marker=marker, label=r["model"], zorder=3)
        ax.set(title=bench, xlabel="mean generated tokens", ylabel="Pass@1 (%)")
        _pad_limits(ax)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("Accuracy vs tokens (one point per model)")
    return _save(fig, path)


def length_histograms(records: list[SampleRecord], models: list[str], benchmarks: list[str], cap: int,
                      path: Path) -> Path:
    """Lengths of correct (green) and incorrect (red) samples; rows = models, columns = benchmarks."""
    models = [m for m in models if any(r.model == m for r in records)]
    benchmarks = [b for b in benchmarks if any(r.benchmark == b for r in records)]
    fig, axes = plt.subplots(len(models), len(benchmarks), figsize=(3.8 * len(benchmarks), 2.8 * len(models)),
                             squeeze=False)
    bins = [cap * i / 30 for i in range(31)]
    for i, model in enumerate(models):
        for j, bench in enumerate(benchmarks):
            ax = axes[i][j]
            cell = [r for r in records if r.model == model and r.benchmark == bench]
            right = [r.length for r in cell if r.correct]
            wrong = [r.length for r in cell if not r.correct]
            ax.hist(wrong, bins=bins, histtype="stepfilled", color="tab:red", alpha=0.5,
                    label=f"incorrect ({len(wrong)})")
            ax.hist(right, bins=bins, histtype="stepfilled", color="tab:green", alpha=0.5,
                    label=f"correct ({len(right)})")
            ax.set_title(f"{model} · {bench}", fontsize=9)
            ax.set_xlabel("generated tokens", fontsize=8)
            ax.tick_params(labelsize=7)
            ax.legend(fontsize=7)
    fig.suptitle("Length of correct vs incorrect samples")
    return _save(fig, path)


def budget_sweep(rows: list[dict], models: list[str], benchmarks: list[str], path: Path) -> Path | None:
    """Tokens, |L - n| and Pass@1 against the fixed budget n; needs two or more budgets."""
    fixed = [r for r in rows if r["budget"] is not None]
    if len({r["budget"] for r in fixed}) < 2:
        return None
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    top = max(r["budget"] for r in fixed)
    axes[0].plot([0, top], [0, top], ls=":", color="gray", label="L = n")
    for model in models:
        for k, bench in enumerate(benchmarks):
            line = sorted((r for r in fixed if r["model"] == model and r["benchmark"] == bench),
                          key=lambda r: r["budget"])
            if not line:
                continue
            n = [r["budget"] for r in line]
            style = dict(color=_color(models, model), marker=MARKERS[k % len(MARKERS)], label=f"{model} · {bench}")
            axes[0].plot(n, [r["tokens_mean"] for r in line], **style)
            axes[1].plot(n, [r["budget_abs_error"] for r in line], **style)
            axes[2].plot(n, [100 * r["pass@1"] for r in line], **style)
    for ax, ylabel, title in zip(axes, ("mean generated tokens L", "mean |L − n|", "Pass@1 (%)"),
                                 ("Tokens vs budget", "Adherence", "Accuracy vs budget")):
        ax.set(xlabel="stated budget n (tokens)", ylabel=ylabel, title=title)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    for ax in axes[:2]:
        ax.set_ylim(0, max(ax.dataLim.ymax, 1.0) * 1.1)  # from 0: token counts and distances
    best = max((100 * r["pass@1"] for r in fixed if r["pass@1"] is not None), default=0.0)
    axes[2].set_ylim(0, min(102, max(10, 1.15 * best)))
    return _save(fig, path)


def _pad_limits(ax) -> None:
    """Axes from 0 with room around the points (a point on the frame is easy to miss)."""
    xs = [x for line in ax.lines for x in line.get_xdata()] + [
        x for c in ax.collections for x, _ in c.get_offsets()]
    ys = [y for line in ax.lines for y in line.get_ydata()] + [
        y for c in ax.collections for _, y in c.get_offsets()]
    if xs:
        ax.set_xlim(left=min(0, min(xs)), right=max(xs) * 1.15 + 1)
    if ys:
        ax.set_ylim(bottom=-2, top=min(102, max(10, max(ys) * 1.15)))
