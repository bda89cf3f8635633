"""Every YAML in configs/ parses and instantiates through the CLI without loading weights.

Run: pytest tests/test_configs.py -q
"""

from __future__ import annotations

from pathlib import Path

import pytest

from lapo_lightning.cli import build_cli
from lapo_lightning.module import GRPOModule
from lapo_lightning.sft import SFTDataModule, SFTModule

ROOT = Path(__file__).resolve().parents[1]
# eval*.yaml files configure `lapo eval` (EvalModule), not training: tests/evaluation/test_eval_configs.py
CONFIGS = sorted(p for p in (ROOT / "configs").rglob("*.yaml") if not p.name.startswith("eval"))


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: str(p.relative_to(ROOT / "configs")))
def test_config_instantiates_without_weights(config, monkeypatch):
    monkeypatch.chdir(ROOT)
    cli = build_cli(["--config", str(config)], run=False)
    assert cli.model.policy is None  # nothing loaded yet
    if config.name == "sft.yaml":
        assert isinstance(cli.model, SFTModule) and isinstance(cli.datamodule, SFTDataModule)
    else:
        assert isinstance(cli.model, GRPOModule) and cli.model.rewards, "every RL config names its rewards"
    assert cli.trainer is not None
