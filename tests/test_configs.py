"""Every YAML in configs/ parses and instantiates through the CLI without loading weights.

Run: pytest tests/test_configs.py -q
"""

from __future__ import annotations

from pathlib import Path

import pytest

from lapo_lightning.cli.main import build_cli
from lapo_lightning.module import GRPOModule
from lapo_lightning.sft import SFTDataModule, SFTModule
from tests.clitools import training_configs

ROOT = Path(__file__).resolve().parents[1]
# eval*.yaml files configure `lapo eval` (EvalModule), not training: tests/evaluation/test_eval_configs.py;
# configs/compare/*.yaml configure `lapo compare` (a list of phases): tests/compare/test_compare_config.py.
CONFIGS = training_configs()


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


@pytest.mark.parametrize("name", ["stage1.yaml", "stage2.yaml"])
def test_paper_configs_use_the_official_optimisation_choices(name, monkeypatch):
    # docs/faithfulness.md lists these; a departure must be a documented option, not a default.
    monkeypatch.chdir(ROOT)
    model = build_cli(["--config", str(ROOT / "configs" / name)], run=False).model
    assert model.grpo.token_aggregation == "token_mean"
    assert (model.grpo.group_size, model.grpo.kl_coef, model.grpo.clip_low, model.grpo.clip_high) == (8, 1e-4, 0.2, 0.2)
    assert model.optim.warmup_ratio == 0.03 and model.optim.warmup_steps == 0
    assert tuple(model.optim.betas) == (0.9, 0.95)
    assert model.generation.max_new_tokens == 4096
