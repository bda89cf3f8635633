"""``lapo check``: every shipped training config fits the card its header claims; what does not
fit says so with changes that work; bad input is one line and exit 2; ``auto`` sizes.
Nothing here loads weights or reaches a hub (HF_HUB_OFFLINE=1, as in CI).

Run: pytest tests/test_check_cli.py -q
"""

from __future__ import annotations

import re
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from clitools import ROOT, config_in, training_configs
from lapo_lightning.models import shape as model_shape
from lapo_lightning.safety import cost, cost_advice
from lapo_lightning.safety.auto_sizes import AutoSizeError, resolve_auto
from lapo_lightning.cli.check import main as check
from lapo_lightning.config import GRPOConfig
from lapo_lightning.models.known import offline_config
from lapo_lightning.policy import LoraSettings, PolicyConfig
from lapo_lightning.rollout import GenerationConfig

CLAIM = re.compile(r"^# Memory: .*--device-memory (\d+(?:\.\d+)?)\)", re.M)
NOT_GRPO = {"configs/demo/sft.yaml"}  # supervised fine-tuning: no rollouts to estimate
SFT_MODEL = "tiny:llama-h128-l4-n"  # what configs/demo/sft.yaml trains and writes to runs/demo/sft/model


@pytest.fixture(autouse=True)
def no_weights(monkeypatch):
    import lapo_lightning.policy as policy

    def refuse(*args, **kwargs):
        raise AssertionError("lapo check must not load weights")

    # Only the function load_policy looks up at call time: a module imported during the test
    # binds `load_policy` by name, and would keep a patched one after the test.
    monkeypatch.setattr(policy, "load_base_model", refuse)
    monkeypatch.chdir(ROOT)


def in_tmp(tmp_path: Path, config: Path) -> Path:
    """The config with its runs/ outputs under tmp_path, and the SFT model that the demo's RL phases
    start from (an earlier phase's output) built there, so the check can read its config.json."""
    copy = config_in(tmp_path, str(config.relative_to(ROOT / "configs")))
    sft = tmp_path / "runs" / "demo" / "sft" / "model"
    if str(sft) in copy.read_text() and not sft.exists():
        from lapo_lightning.models.tiny import resolve_model

        shutil.copytree(resolve_model(SFT_MODEL), sft)
    return copy


def run_check(capsys, *args: str) -> tuple[int, str]:
    """(exit status, stdout then stderr); the verdict is stdout's last line."""
    code = check(list(args))
    out = capsys.readouterr()
    return code, out.out + "\n" + out.err if out.err else out.out


def verdict(out: str) -> str:
    return out.split("\n\n")[0].rstrip().splitlines()[-1] if out.strip() else ""


@pytest.mark.parametrize("config", [c for c in training_configs() if str(c.relative_to(ROOT)) not in NOT_GRPO],
                         ids=lambda c: str(c.relative_to(ROOT / "configs")))
def test_every_training_config_fits_the_card_its_header_claims(config, tmp_path, capsys):
    claim = CLAIM.search(config.read_text())
    assert claim, f"{config.name}: no '# Memory: ... (lapo check --config ... --device-memory N)' line in its header"
    code, out = run_check(capsys, "--config", str(in_tmp(tmp_path, config)), "--device-memory", claim[1])
    assert code == 0 and verdict(out).endswith(": fits"), out[-3000:]


def test_a_run_that_does_not_fit_says_what_would(capsys):
    code, out = run_check(capsys, "--config", "configs/stage1.yaml", "--device-memory", "8")
    assert code == 1 and verdict(out).endswith("GB of 8.0 GB: does not fit"), out
    assert "Each of these lowers the peak: model.generation.max_new_tokens 4096 -> 2048" in out
    combination = re.search(r"Together these fit: (.*)", out)[1]
    assert "max_new_tokens" not in combination, combination  # memory-only keys suffice here: the cap stays
    overrides = [part for item in combination.split(", ") for part in (f"--{item.split()[0]}", item.split()[1])]
    code, out = run_check(capsys, "--config", "configs/stage1.yaml", "--device-memory", "8", *overrides)
    assert code == 0 and verdict(out).endswith(": fits"), out  # the combination it offered does fit


def test_offline_shape_comes_from_the_shipped_facts(capsys):
    code, out = run_check(capsys, "--config", "configs/gpu/stage1_12gb.yaml", "--device-memory", "12")
    assert code == 0
    assert "from the architecture facts shipped with lapo" in out and "not in the local Hugging Face cache" in out
    assert "1,777.1M parameters" in out  # untied head: 1,543.7M + 151,936 x 1,536


@pytest.mark.parametrize("args, says", [
    (["--device-memory", "1"], "the model's weights alone need 1.6 GB, more than the 1.0 GB"),
    (["--device-memory", "-3"], "--device-memory must be a positive number of GB, got -3.0"),
    (["--device-memory", "12", "--model.grpo.logprob_chunk_tokens", "0"], "model.grpo.logprob_chunk_tokens: must be >= 1"),
    (["--device-memory", "12", "--model.policy.model", "someone/not-a-known-model"],
     "model.policy.model: 'someone/not-a-known-model' is not a local folder"),
], ids=["smaller-than-weights", "negative", "chunk-0", "unknown-offline"])
def test_bad_input_is_one_line_and_exit_2(capsys, args, says):
    code, out = run_check(capsys, "--config", "configs/gpu/stage1_12gb.yaml", *args)
    assert code == 2 and says in out, out
    assert "Traceback" not in out and len(out.strip().splitlines()) <= 2, out


def test_a_model_unknown_offline_names_what_to_do():
    with pytest.raises(model_shape.UnknownOffline, match="lapo ships no architecture facts for it .*hf download someone/x"):
        model_shape.read_shape_and_source("someone/x")


def test_auto_that_cannot_fit_names_the_setting(capsys):
    code, out = run_check(capsys, "--config", "configs/gpu/stage1_12gb.yaml", "--device-memory", "3")
    assert code == 1 and verdict(out).endswith("does not fit"), out
    assert "model.grpo.micro_batch_size: auto found no size that fits" in out and "change model." in out


def stage1_run(max_new_tokens=4096, **grpo) -> cost_advice.RunSettings:
    shape = model_shape.ModelShape.from_config(offline_config("deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B"))
    policy = PolicyConfig(model="r1-1.5b", lora=LoraSettings(r=64, alpha=128), gradient_checkpointing=True)
    policy.dtype, policy.load_in_4bit = "bfloat16", True  # set after init: bitsandbytes need not be installed
    return cost_advice.RunSettings(shape, policy, GRPOConfig(group_size=8, **grpo),
                            GenerationConfig(max_new_tokens=max_new_tokens, max_rollouts_per_call="auto"), 16, 150)


@pytest.mark.parametrize("card_gb", [12, 16, 24])
def test_auto_picks_the_largest_sizes_that_fit(card_gb):
    total = int(card_gb * cost.GB)
    run, lines = resolve_auto(stage1_run(micro_batch_size="auto"), total)
    micro, rows = run.grpo.micro_batch_size, run.generation.max_rollouts_per_call
    assert 128 % micro == 0 and rows % 8 == 0 and len(lines) == 2
    assert run.estimate().peak_bytes <= 0.9 * total
    larger_micro = min(m for m in range(micro + 1, 129) if 128 % m == 0) if micro < 128 else None
    if larger_micro:  # the next divisor up would not fit
        assert replace(run, grpo=replace(run.grpo, micro_batch_size=larger_micro)).estimate().peak_bytes > 0.9 * total
    if rows < 128:
        bigger = replace(run, generation=replace(run.generation, max_rollouts_per_call=rows + 8))
        assert bigger.estimate().peak_bytes > 0.9 * total


def test_auto_needs_a_known_device():
    with pytest.raises(AutoSizeError, match="needs the device's total memory"):
        resolve_auto(stage1_run(micro_batch_size="auto"), None)
