"""Training curves as pictures: ``lapo plot RUN_DIR``, and beside every finished ``lapo fit``.

Flow: reads the run's own ``metrics.csv`` (the ``CSVLogger`` every shipped config uses; the
newest one under RUN_DIR when RUN_DIR is a logger's folder of versions) and writes
``training_curves.png`` next to it: reward, accuracy, mean length and the spread of lengths
within groups (mean over groups of the std of their lengths) against the optimizer step.
When the metrics' folder, or a folder above it within RUN_DIR's parent, holds a stage-1 ``length_table.json``,
``length_table.png`` shows the distribution of its per-problem median lengths.
``cli.fit.LapoCLI.after_fit`` calls :func:`plot_run` at the end of a fit, and hands each figure
to every configured logger that takes figures (TensorBoard's ``add_figure``), at the run's last step.
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from collections.abc import Callable
from pathlib import Path

# (panel title, metric), drawn when the run logged it.
CURVES = (("reward (total)", "reward/total"), ("accuracy", "accuracy"), ("mean length (tokens)", "length/mean"),
          ("length spread within groups (std, tokens)", "length/group_std"))


class PlotError(ValueError):
    """Nothing to plot at the given path; the message says what is missing."""


def metrics_file(run_dir: Path) -> Path:
    """``RUN_DIR/metrics.csv``, else the newest ``metrics.csv`` below RUN_DIR."""
    direct = run_dir / "metrics.csv"
    if direct.is_file():
        return direct
    found = sorted(run_dir.rglob("metrics.csv"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise PlotError(f"{run_dir}: no metrics.csv in it or below it (lapo fit writes one per run with the CSVLogger)")
    return found[-1]


def read_curves(path: Path) -> dict[str, tuple[list[int], list[float]]]:
    """Metric -> (steps, values) for every :data:`CURVES` metric the file holds (blank cells skipped)."""
    curves: dict[str, tuple[list[int], list[float]]] = {}
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            for _, key in CURVES:
                value = row.get(key)
                if value not in (None, "") and math.isfinite(float(value)):
                    steps, values = curves.setdefault(key, ([], []))
                    steps.append(int(float(row.get("step") or len(steps))))
                    values.append(float(value))
    return curves


def plot_run(run_dir: str | Path, on_figure: Callable[[str, object], None] | None = None) -> list[Path]:
    """Write the run's pictures beside its metrics; returns the files written. ``on_figure(name,
    figure)`` sees each matplotlib figure before it is closed (name: its file's stem)."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise PlotError(f"{run_dir}: not a folder (give a run's log folder, e.g. runs/stage1)")
    path = metrics_file(run_dir)
    curves = read_curves(path)
    if not curves:
        raise PlotError(f"{path}: none of {', '.join(k for _, k in CURVES)} was logged (no training step yet?)")
    shown = [(title, key) for title, key in CURVES if key in curves]
    fig, axes = plt.subplots(1, len(shown), figsize=(4 * len(shown), 3.4), squeeze=False)
    for ax, (title, key) in zip(axes[0], shown):
        steps, values = curves[key]
        ax.plot(steps, values, marker="." if len(steps) < 50 else None, linewidth=1.2)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("optimizer step")
        ax.grid(alpha=0.3)
    fig.suptitle(f"{path.parent}", fontsize=9)
    written = [_save(fig, path.parent / "training_curves.png", on_figure)]
    table = next((folder / "length_table.json" for folder in [path.parent, *path.parent.parents]
                  if (folder / "length_table.json").is_file() and folder.is_relative_to(run_dir.parent)), None)
    if table is not None and (drawn := plot_table(table, path.parent / "length_table.png", on_figure)) is not None:
        written.append(drawn)
    return written


def plot_table(table: Path, out: Path, on_figure: Callable[[str, object], None] | None = None) -> Path | None:
    """Histogram of a length table's per-problem median correct lengths (None: no solved problem)."""
    import matplotlib.pyplot as plt

    from lapo_lightning.length_table import LengthTable

    entries = LengthTable.load(table).entries
    medians = [e.median for e in entries.values() if e.median is not None]
    if not medians:
        return None
    fig, ax = plt.subplots(figsize=(6, 3.4))
    ax.hist(medians, bins=min(30, max(5, len(medians) // 3)))
    ax.set_xlabel("median correct length (tokens)")
    ax.set_ylabel("problems")
    ax.set_title(f"{table}: {len(medians)} of {len(entries)} problems solved", fontsize=9)
    ax.grid(alpha=0.3)
    return _save(fig, out, on_figure)


def _save(fig, path: Path, on_figure: Callable[[str, object], None] | None = None) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    if on_figure is not None:
        on_figure(path.stem, fig)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lapo plot", description="Training curves of a lapo fit run, as PNGs.")
    parser.add_argument("run_dir", help="the run's log folder (runs/stage1, or one of its version_<k> folders)")
    args = parser.parse_args(argv)
    try:
        for path in plot_run(args.run_dir):
            print(path)
    except PlotError as e:
        print(f"lapo plot: {e}", file=sys.stderr)
        return 2
    return 0


def figure_sink(loggers, step: int) -> Callable[[str, object], None] | None:
    """``on_figure`` for :func:`plot_run` that logs each figure as ``lapo/<name>`` at ``step`` to every
    logger whose ``experiment`` has ``add_figure`` (TensorBoard's); None when no logger takes figures."""
    writers = [writer for logger in loggers
               if callable(getattr(writer := getattr(logger, "experiment", None), "add_figure", None))]
    if not writers:
        return None

    def log(name: str, fig) -> None:
        for writer in writers:
            writer.add_figure(f"lapo/{name}", fig, global_step=step, close=False)

    return log
