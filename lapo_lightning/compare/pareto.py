"""The Pareto front of (mean tokens, accuracy) points, and the accuracy-versus-tokens plot.

Flow: :func:`lapo_lightning.compare.report.write_report` marks each table row with
:func:`pareto_front` and draws :func:`draw_pareto` beside the table. Fewer tokens and higher
accuracy are both better; a point is on the front when no other point is at least as good on
both and strictly better on one.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # before pyplot: headless servers and CI have no display
import matplotlib.pyplot as plt  # noqa: E402

COLORS = plt.rcParams["axes.prop_cycle"].by_key()["color"]  # 10 colours; tab20 beyond that
MARKERS = "osD^vP*X"


def pareto_front(points: list[tuple[float, float]]) -> list[bool]:
    """For each (tokens, accuracy) point: True when no other point dominates it.

    Example: [(10, 0.5), (20, 0.7), (20, 0.6), (30, 0.7)] -> [True, True, False, False]:
    (20, 0.6) loses to (20, 0.7) on accuracy, (30, 0.7) to (20, 0.7) on tokens. Two equal
    points are both on the front.
    """
    def dominates(a, b):
        return a[0] <= b[0] and a[1] >= b[1] and a != b

    return [not any(dominates(other, p) for other in points) for p in points]


def draw_pareto(path: Path, labels: list[str], points: list[tuple[float, float]], title: str,
                intervals: dict[str, tuple[list[float] | None, list[float] | None]] | None = None) -> Path:
    """Scatter of accuracy (%) against mean tokens, one point per row, named in the legend
    (colour: the model before any "@ ...", marker: the budget condition); points on the front
    are filled and joined by a staircase, dominated points are hollow. ``intervals``: by label,
    the (tokens, accuracy) 95% intervals, drawn as error bars (None where unknown)."""
    front = pareto_front(points)
    models = list(dict.fromkeys(label.split(" @ ")[0] for label in labels))
    conditions = list(dict.fromkeys(label.partition(" @ ")[2] for label in labels))
    colors = COLORS if len(models) <= len(COLORS) else list(plt.get_cmap("tab20").colors)
    fig, ax = plt.subplots(figsize=(9, 5))
    for (tokens, acc), label, best in zip(points, labels, front):
        model, _, condition = label.partition(" @ ")
        color = colors[models.index(model) % len(colors)]
        ax.scatter([tokens], [100 * acc], s=56, marker=MARKERS[conditions.index(condition) % len(MARKERS)],
                   facecolors=color if best else "none", edgecolors=color, linewidths=1.5, zorder=3,
                   label=label + (" (front)" if best else ""))
        tok_ci, acc_ci = (intervals or {}).get(label, (None, None))
        if tok_ci or acc_ci:
            ax.errorbar([tokens], [100 * acc], fmt="none", ecolor=color, elinewidth=1, capsize=3, alpha=0.7, zorder=2,
                        xerr=[[tokens - tok_ci[0]], [tok_ci[1] - tokens]] if tok_ci else None,
                        yerr=[[100 * (acc - acc_ci[0])], [100 * (acc_ci[1] - acc)]] if acc_ci else None)
    best = sorted(p for p, on in zip(points, front) if on)
    if best:
        ax.step([t for t, _ in best], [100 * a for _, a in best], where="post", color="0.4", linewidth=1,
                linestyle="--", zorder=2, label="Pareto front")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    ax.set_xlabel("mean generated tokens (fewer is better)")
    ax.set_ylabel("Pass@1 (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
