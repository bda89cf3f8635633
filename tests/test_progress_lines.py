"""Progress a log file can show (lapo_lightning/callbacks/progress_lines.py): when stderr is not
a terminal, ``lapo fit`` prints plain lines during training instead of a redrawn bar."""

from __future__ import annotations

import re

import pytest

from clitools import config_in, fit
from lapo_lightning.callbacks.progress_lines import LineBar, ProgressLines, clock


@pytest.mark.slow
def test_a_fit_writing_to_a_file_prints_progress_lines(tmp_path, capsys):
    config = config_in(tmp_path, "debug/grpo.yaml")
    fit(config, "--trainer.max_steps", "4", "--trainer.limit_val_batches", "0",
        "--trainer.callbacks+=ProgressLines", "--trainer.callbacks.every_n_steps", "2")
    err = capsys.readouterr().err  # pytest's capture is not a terminal, as a log file is not
    lines = [line for line in err.splitlines() if line.startswith("step ")]
    assert [line.split(" | ")[0] for line in lines] == ["step 2/4", "step 4/4"], err[-3000:]
    assert re.fullmatch(r"step 4/4 \| reward -?\d\.\d{3} \| acc \d\.\d{3} \| len \d+ \| \d+\.\d s/step \| 0:00 left",
                        lines[-1]), lines[-1]
    assert "Epoch 0/" not in err and "━" not in err  # no progress bar drawn into the file


def test_a_line_is_due_every_n_steps_or_every_s_seconds():
    lines = ProgressLines(every_n_steps=5, every_s=30.0)
    lines.start, lines.first_step = 100.0, 0
    assert lines.line(10, 40, {"accuracy": 0.25, "length/mean": 812.4}, now=150.0) == \
        "step 10/40 | acc 0.250 | len 812 | 5.0 s/step | 2:30 left"
    assert lines.line(3, None, {}, now=103.0) == "step 3 | 1.0 s/step"
    assert clock(3 * 3600 + 61) == "3:01:01"
    with pytest.raises(ValueError, match="every_n_steps must be >= 1"):
        ProgressLines(every_n_steps=0)


def test_a_line_bar_writes_plain_lines_where_a_bar_would_redraw(capsys, monkeypatch):
    import lapo_lightning.callbacks.progress_lines as progress

    now = [100.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: now[0])
    bar = LineBar(total=40, initial=10, desc="eval base", unit="sample", every_s=30.0)
    now[0] = 110.0
    bar.update(5)  # 10 s: not due yet
    now[0] = 130.0
    bar.update(5)  # 30 s: due
    now[0] = 140.0
    bar.update(20)
    bar.close()
    assert capsys.readouterr().err.splitlines() == [
        "eval base: 20/40 samples | 0.3 samples/s | 1:00 left",
        "eval base: 40/40 samples | 0.8 samples/s | 0:00 left"]
    LineBar(total=5, initial=5, desc="eval done", unit="sample").close()  # finished earlier: one line saying so
    assert capsys.readouterr().err == "eval done: 5/5 samples\n"
