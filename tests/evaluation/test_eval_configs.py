"""The evaluation configs (configs/**/eval*.yaml) parse and instantiate without loading weights.

tests/test_configs.py skips them (they configure ``lapo eval``, not training). Their data
settings are checked against the real files; the debug config's models are checked too
(the real one names a hub model that is not available offline).
Run: pytest tests/evaluation/test_eval_configs.py -q
"""

from __future__ import annotations

from pathlib import Path

import pytest

from lapo_lightning.evaluation import EvalModule
from lapo_lightning.evaluation.run import EvalCLI

ROOT = Path(__file__).resolve().parents[2]
EVAL_CONFIGS = sorted((ROOT / "configs").rglob("eval*.yaml"))


def test_every_eval_config_is_found():
    assert [p.relative_to(ROOT / "configs").as_posix() for p in EVAL_CONFIGS] == [
        "compare/demo/eval.yaml", "compare/demo/eval_all.yaml", "compare/demo/eval_all_budgets.yaml",
        "compare/demo/eval_budgets.yaml", "compare/real/eval.yaml", "compare/real/eval_budgets.yaml",
        "compare/smollm2/eval.yaml", "compare/smollm2/eval_budgets.yaml", "debug/eval.yaml",
        "demo/eval_greedy.yaml", "demo/eval_sampled.yaml", "eval.yaml", "real/eval_smollm2.yaml"]


@pytest.mark.parametrize("config", EVAL_CONFIGS, ids=lambda p: str(p.relative_to(ROOT / "configs")))
def test_eval_config_instantiates_without_weights(config, monkeypatch):
    monkeypatch.chdir(ROOT)
    cli = EvalCLI(args=["--config", str(config)])
    assert isinstance(cli.model, EvalModule) and cli.model.policy is None  # nothing loaded yet
    assert len(cli.model.models) >= 2, "an evaluation compares models"
    assert cli.datamodule.check() == []  # benchmark files exist and have the configured fields
    if "debug" in config.parts:
        assert cli.model.check() == []


def test_paper_protocol_in_the_real_config(monkeypatch):
    monkeypatch.chdir(ROOT)
    cli = EvalCLI(args=["--config", "configs/eval.yaml"])
    gen = cli.model.generation
    assert (gen.temperature, gen.top_p) == (0.6, 0.95)
    assert {b.name: b.samples for b in cli.datamodule.benchmarks} == {
        "math500": 4, "aime24": 32, "amc23": 32, "olympiadbench": 4}
    assert cli.datamodule.budgets == ["none"]
    assert [m.adapter for m in cli.model.models] == [None, "runs/stage1/adapter", "runs/stage2/adapter"]
