"""Resumable phase chains (lapo_lightning/cli/phases.py): skip what finished, continue what was cut off."""

from __future__ import annotations

import json

import pytest

from lapo_lightning.cli import phases
from lapo_lightning.cli.phases import MARKER, STARTED, Phase, run_phases


@pytest.fixture
def chain(tmp_path):
    """Two fit phases and one eval phase whose configs only name their output folders."""
    made = []
    for name, command, body in (("a", "fit", "export: {dirpath: %s}"), ("b", "fit", "export: {dirpath: %s}"),
                                ("e", "eval", "model: {report_dir: %s}")):
        config = tmp_path / f"{name}.yaml"
        config.write_text(body % (tmp_path / "out" / name) + "\n")
        made.append(Phase(name, command, config, f"phase {name}", ("--smoke-arg",)))
    return made


class Kill(Exception):
    pass


def test_an_interrupted_fit_phase_continues_from_its_last_checkpoint(chain, tmp_path):
    calls = []

    def killed_in_b(phase, smoke, resume):
        calls.append((phase.name, resume))
        if phase.name == "b" and not resume:
            raise Kill  # the process dies during phase b

    with pytest.raises(Kill):
        run_phases(chain, log=lambda line: None, runner=killed_in_b)
    out = tmp_path / "out"
    assert (out / "a" / MARKER).is_file() and not (out / "a" / STARTED).exists()
    assert (out / "b" / STARTED).is_file() and not (out / "b" / MARKER).exists()
    lines = []
    run_phases(chain, log=lines.append, runner=killed_in_b)
    assert calls == [("a", False), ("b", False), ("b", True), ("e", False)]
    assert any("continuing from its last checkpoint" in line and "--ckpt_path last" in line for line in lines)
    assert all((out / p / MARKER).is_file() and not (out / p / STARTED).exists() for p in "abe")


def test_a_smoke_start_is_never_continued_by_a_full_run_nor_the_reverse(chain, tmp_path):
    started = tmp_path / "out" / "a" / STARTED
    started.parent.mkdir(parents=True)
    started.write_text(json.dumps({"phase": "a", "smoke": True}))
    calls = []
    run_phases(chain[:1], smoke=False, log=lambda line: None, runner=lambda p, s, r: calls.append(r))
    started.parent.mkdir(parents=True, exist_ok=True)
    (started.parent / MARKER).unlink()
    started.write_text(json.dumps({"phase": "a", "smoke": False}))
    run_phases(chain[:1], smoke=True, log=lambda line: None, runner=lambda p, s, r: calls.append(r))
    assert calls == [False, False]


def test_an_interrupted_eval_phase_is_rerun_without_a_checkpoint_flag(chain, tmp_path):
    started = tmp_path / "out" / "e" / STARTED
    started.parent.mkdir(parents=True)
    started.write_text(json.dumps({"phase": "e", "smoke": False}))
    calls = []
    run_phases(chain[2:], log=lambda line: None, runner=lambda p, s, r: calls.append(r))
    assert calls == [False]  # lapo eval resumes from its own samples.jsonl


def test_run_phase_passes_smoke_arguments_and_ckpt_path_last(chain, monkeypatch):
    import lapo_lightning.evaluation.run
    import lapo_lightning.cli.fit

    seen = []
    monkeypatch.setattr(lapo_lightning.cli.fit, "build_cli", seen.append)
    monkeypatch.setattr(lapo_lightning.evaluation.run, "main", lambda args: seen.append(["eval", *args]))
    phases.run_phase(chain[0], smoke=True, resume=True)
    phases.run_phase(chain[0], smoke=False)
    assert seen == [["fit", "--config", str(chain[0].config), "--smoke-arg", "--ckpt_path", "last"],
                    ["fit", "--config", str(chain[0].config), "--export.overwrite", "true"]]
    evaluation = next(phase for phase in chain if phase.command == "eval")
    phases.run_phase(evaluation, smoke=False)
    assert seen[-1][:3] == ["eval", "--config", str(evaluation.config)]
