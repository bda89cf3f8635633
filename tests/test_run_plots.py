"""Training curves as pictures (lapo_lightning/run_plots.py): drawn at the end of a fit, and by
``lapo plot RUN_DIR`` from the run's own metrics.csv."""

from __future__ import annotations

import matplotlib.image
import pytest
from lightning.pytorch.loggers import Logger

from clitools import config_in, fit
from lapo_lightning.cli.main import main
from lapo_lightning.run_plots import read_curves


class FigureRecorder(Logger):
    """A logger that takes figures the way TensorBoard's does (``experiment.add_figure``)."""

    seen: list[tuple[str, int, str]] = []

    @property
    def name(self) -> str:
        return "figures"

    @property
    def version(self) -> int:
        return 0

    @property
    def experiment(self):
        return self

    def log_hyperparams(self, params, *args, **kwargs) -> None:
        pass

    def log_metrics(self, metrics, step=None) -> None:
        pass

    def add_figure(self, tag, figure, global_step=None, close=True) -> None:
        FigureRecorder.seen.append((tag, global_step, type(figure).__name__))


@pytest.mark.slow
def test_a_stage1_fit_draws_its_curves_and_lapo_plot_redraws_them(tmp_path, capsys):
    """Beside the CSV log, and as figures to a second logger that takes them (as TensorBoard does)."""
    config = config_in(tmp_path, "debug/stage1.yaml", **{
        "  logger:\n    class_path: lightning.pytorch.loggers.CSVLogger\n    init_args:":
            "  logger:\n    - class_path: lightning.pytorch.loggers.CSVLogger\n      init_args:",
        "  callbacks:\n": "    - class_path: test_run_plots.FigureRecorder\n  callbacks:\n"})
    FigureRecorder.seen.clear()
    fit(config, "--trainer.max_steps", "3", "--trainer.limit_val_batches", "0")
    assert FigureRecorder.seen == [("lapo/training_curves", 3, "Figure"), ("lapo/length_table", 3, "Figure")]
    run = tmp_path / "runs" / "debug_stage1"
    log = run / "version_0"
    curves = read_curves(log / "metrics.csv")
    assert set(curves) == {"reward/total", "accuracy", "length/mean", "length/group_std"}
    assert curves["length/mean"][0] == [0, 1, 2] and all(v >= 0 for v in curves["length/group_std"][1])
    image = matplotlib.image.imread(log / "training_curves.png")
    assert image.shape[1] > 4 * image.shape[0] / 2  # four panels side by side
    (log / "training_curves.png").unlink()
    capsys.readouterr()
    with pytest.raises(SystemExit) as done:
        main(["plot", str(run)])
    assert done.value.code == 0
    printed = capsys.readouterr().out.split()
    assert str(log / "training_curves.png") in printed and (log / "training_curves.png").is_file()
    assert all(p.endswith(".png") for p in printed)


def test_lapo_plot_on_a_folder_without_metrics_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as done:
        main(["plot", str(tmp_path)])
    assert done.value.code == 2
    assert capsys.readouterr().err.strip() == (f"lapo plot: {tmp_path}: no metrics.csv in it or below it (lapo fit "
                                               "writes one per run with the CSVLogger)")
