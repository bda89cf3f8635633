"""Every YAML in configs/ parses and instantiates through the CLI without loading weights.

Run: pytest tests/test_configs.py -q
"""

from __future__ import annotations

from pathlib import Path

import pytest

from lapo_lightning.cli import LapoCLI
from lapo_lightning.data import LapoDataModule
from lapo_lightning.module import GRPOModule

ROOT = Path(__file__).resolve().parents[1]
# eval.yaml files configure `lapo eval` (EvalModule), not training: tests/evaluation/test_eval_configs.py
CONFIGS = sorted(p for p in (ROOT / "configs").rglob("*.yaml") if p.name != "eval.yaml")


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: str(p.relative_to(ROOT / "configs")))
def test_config_instantiates_without_weights(config, monkeypatch):
    monkeypatch.chdir(ROOT)
    cli = LapoCLI(GRPOModule, LapoDataModule, args=["--config", str(config)], run=False)
    assert isinstance(cli.model, GRPOModule) and cli.model.policy is None  # nothing loaded yet
    assert cli.model.rewards, "every config names its rewards"
    assert cli.trainer is not None
