"""examples/shrinking_budget: a user's own length method (a callback that states budgets and a
reward that uses them), trained by the ``lapo`` console script started in the method's folder,
as docs/plugins.md describes."""

from __future__ import annotations

import csv
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from clitools import ROOT
from lapo_lightning.types import StepSummary

EXAMPLE = ROOT / "examples" / "shrinking_budget"


@pytest.fixture
def method(monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLE))
    import shrinking_budget

    return shrinking_budget


def test_the_reward_follows_its_docstring(method):
    reward = method.under_budget_reward(torch.tensor([10, 15, 30, 10]), torch.tensor([True, True, True, False]),
                                        torch.tensor([10.0, 10.0, 10.0, 10.0]))
    assert reward.tolist() == [1.0, 0.5, 0.0, 0.0]
    unstated = method.under_budget_reward(torch.tensor([5]), torch.tensor([True]), torch.tensor([math.nan]))
    assert unstated.tolist() == [0.0]


def test_budgets_shrink_to_the_shortest_correct_answer_and_survive_a_checkpoint(method):
    callback = method.ShrinkingBudget(start=24, slack=1.5)
    summary = StepSummary(step=0, problem_ids=["a", "b"], group_index=torch.tensor([0, 0, 1, 1]),
                          lengths=torch.tensor([12, 8, 5, 30]), correct=torch.tensor([True, True, False, False]),
                          truncated=torch.zeros(4, dtype=torch.bool), budgets=torch.full((4,), 24.0),
                          targets=torch.full((4,), 24.0), rewards={})
    callback.update(summary)
    assert callback.budget("a") == 12 and callback.budget("b") == 24  # 1.5 x 8; b unsolved keeps the start
    restored = method.ShrinkingBudget(start=24, slack=1.5)
    restored.load_state_dict(callback.state_dict())
    assert restored.budgets == {"a": 12}


@pytest.mark.slow
def test_lapo_fit_trains_the_method_from_its_own_folder(tmp_path):
    lapo = Path(sys.executable).with_name("lapo")
    if not lapo.is_file():
        pytest.skip("the lapo console script is not installed beside this Python (pip install -e .)")
    folder = tmp_path / "my_method"
    shutil.copytree(EXAMPLE, folder, ignore=shutil.ignore_patterns("runs", "__pycache__"))
    config = folder / "config.yaml"
    config.write_text(config.read_text().replace("../../data/math_train.jsonl", str(ROOT / "data" / "math_train.jsonl")))
    env = os.environ | {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PYTHONPATH": ""}
    out = subprocess.run([str(lapo), "fit", "--config", "config.yaml", "--trainer.max_steps", "2"], cwd=folder,
                         env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    with open(folder / "runs" / "shrinking_budget" / "version_0" / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("reward/under_budget")]
    assert len(rows) == 2 and all(0 < float(r["shrinking/mean_budget"]) <= 24 for r in rows)
    assert (folder / "runs" / "shrinking_budget" / "version_0" / "adapter" / "adapter_config.json").is_file()
