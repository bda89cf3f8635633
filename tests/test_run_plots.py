"""Training curves as pictures (lapo_lightning/run_plots.py): drawn at the end of a fit, and by
``lapo plot RUN_DIR`` from the run's own metrics.csv."""

from __future__ import annotations

import matplotlib.image
import pytest

from clitools import config_in, fit
from lapo_lightning.cli.main import main
from lapo_lightning.run_plots import read_curves


@pytest.mark.slow
def test_a_stage1_fit_draws_its_curves_and_lapo_plot_redraws_them(tmp_path, capsys):
    config = config_in(tmp_path, "debug/stage1.yaml")
    fit(config, "--trainer.max_steps", "3", "--trainer.limit_val_batches", "0")
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
