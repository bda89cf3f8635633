"""The Pareto front of (tokens, accuracy) points and its plot (lapo_lightning/compare/pareto.py)."""

from __future__ import annotations

import pytest

from lapo_lightning.compare.pareto import draw_pareto, pareto_front


def test_front_keeps_only_undominated_points():
    # (20, 0.6) loses to (20, 0.7) on accuracy; (30, 0.7) loses to (20, 0.7) on tokens;
    # (5, 0.1) is the cheapest, so it stays although it is the least accurate.
    points = [(10, 0.5), (20, 0.7), (20, 0.6), (30, 0.7), (5, 0.1), (40, 0.9)]
    assert pareto_front(points) == [True, True, False, False, True, True]


def test_equal_points_are_both_on_the_front_and_one_point_is_its_own_front():
    assert pareto_front([(10, 0.5), (10, 0.5), (11, 0.5)]) == [True, True, False]
    assert pareto_front([(3, 0.0)]) == [True]
    assert pareto_front([]) == []


def test_a_point_better_on_both_axes_dominates_all_others():
    assert pareto_front([(50, 0.4), (10, 0.9), (30, 0.8)]) == [False, True, False]


def test_plot_is_written(tmp_path):
    path = draw_pareto(tmp_path / "p.png", ["a", "b", "c"], [(10, 0.5), (20, 0.7), (30, 0.6)], "t")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000


def test_points_with_intervals_get_error_bars(tmp_path, monkeypatch):
    import matplotlib.axes

    bars = []
    real = matplotlib.axes.Axes.errorbar

    def recording(self, x, y, **kwargs):
        bars.append((x, y, kwargs["xerr"], kwargs["yerr"]))
        return real(self, x, y, **kwargs)

    monkeypatch.setattr(matplotlib.axes.Axes, "errorbar", recording)
    path = draw_pareto(tmp_path / "p.png", ["base", "lapo"], [(40.0, 0.5), (30.0, 0.6)], "t",
                       {"lapo": ([25.0, 36.0], [0.5, 0.7])})
    assert path.stat().st_size > 5000
    assert bars == [([30.0], [60.0], [[5.0], [6.0]], [[pytest.approx(10.0)], [pytest.approx(10.0)]])]  # lapo's only
