"""Finished results are never replaced by less (lapo_lightning/safety/finished_results.py): a fresh run
over a completed stage-1 folder, a run that stops at fewer steps than the export it would
replace, and ``max_steps 0`` are refused at start-up, before weights load, with one line each;
resuming to more steps and ``export.overwrite: true`` go ahead.

Run: pytest tests/test_finished_results.py -q
"""

from __future__ import annotations

import json

import pytest

from clitools import config_in, fit
from lapo_lightning.callbacks.export import RECORD


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A completed 3-step debug stage-1 run: its config, adapter folder and table."""
    tmp = tmp_path_factory.mktemp("finished")
    config = config_in(tmp, "debug/stage1.yaml")
    fit(config, "--trainer.max_steps", "3", "--trainer.limit_val_batches", "0")
    out = tmp / "runs" / "debug_stage1"
    return config, out / "adapter", out / "length_table.json"


def snapshot(adapter, table) -> tuple[bytes, bytes]:
    return (adapter / "adapter_model.safetensors").read_bytes(), table.read_bytes()


def refused(capsys, config, *args) -> str:
    with pytest.raises(SystemExit) as err:
        fit(config, *args, "--trainer.limit_val_batches", "0")
    assert err.value.code == 2
    return capsys.readouterr().err


def test_the_export_records_its_step_and_completion(finished):
    _, adapter, table = finished
    assert json.loads((adapter / RECORD).read_text()) == {"step": 3, "complete": True}
    assert json.loads(table.read_text())["metadata"]["complete"] is True


def test_a_fresh_run_over_a_completed_folder_is_refused(finished, capsys):
    config, adapter, table = finished
    before = snapshot(adapter, table)
    err = refused(capsys, config, "--trainer.max_steps", "5")
    assert "export.dirpath" in err and "holds the adapter of a completed run (step 3)" in err
    assert "length table of a completed run" in err and "--ckpt_path last" in err
    assert snapshot(adapter, table) == before


def test_a_run_that_stops_earlier_would_replace_it_with_less(finished, capsys):
    config, adapter, table = finished
    before = snapshot(adapter, table)
    err = refused(capsys, config, "--trainer.max_steps", "1", "--ckpt_path", "last")
    assert "holds an adapter from step 3, and this run stops at trainer.max_steps 1" in err
    assert snapshot(adapter, table) == before


def test_max_steps_0_is_refused_up_front(finished, capsys):
    config, adapter, table = finished
    before = snapshot(adapter, table)
    err = refused(capsys, config, "--trainer.max_steps", "0")
    assert "trainer.max_steps: 0 trains nothing" in err and len(err.strip().splitlines()) == 2
    assert snapshot(adapter, table) == before
    assert "trainer.max_steps: must be > 0, or -1" in refused(capsys, config, "--trainer.max_steps", "-5")


def test_resuming_to_more_steps_and_overwrite_go_ahead(tmp_path):
    config = config_in(tmp_path, "debug/stage1.yaml")
    adapter = tmp_path / "runs" / "debug_stage1" / "adapter"
    fit(config, "--trainer.max_steps", "3", "--trainer.limit_val_batches", "0")
    fit(config, "--trainer.max_steps", "4", "--trainer.limit_val_batches", "0", "--ckpt_path", "last")
    assert json.loads((adapter / RECORD).read_text())["step"] == 4
    fit(config, "--trainer.max_steps", "1", "--trainer.limit_val_batches", "0", "--export.overwrite", "true")
    assert json.loads((adapter / RECORD).read_text())["step"] == 1


@pytest.mark.slow
def test_a_second_run_in_a_fixed_log_version_keeps_the_first_runs_metrics(tmp_path, recwarn):
    """Lightning's CSVLogger deletes metrics.csv in a log folder that already has files; with
    `version: 0` fixed, a second run (or a resume) would lose the first run's metrics."""
    config = config_in(tmp_path, "debug/grpo.yaml",
                       **{"init_args: {save_dir: ": "init_args: {version: 0, save_dir: "})
    args = ("--trainer.max_steps", "2", "--trainer.limit_val_batches", "0", "--export.overwrite", "true")
    fit(config, *args)
    log = tmp_path / "runs" / "debug_grpo" / "version_0"
    first = (log / "metrics.csv").read_text()
    fit(config, *args)
    assert (log / "metrics.0.csv").read_text() == first and (log / "metrics.csv").is_file()
    assert not [w for w in recwarn if "will be deleted" in str(w.message)]
