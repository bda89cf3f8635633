"""The debug LAPO chain end to end: ``lapo fit`` stage 1, then stage 2 from its outputs.

One stage-1 run and one stage-2 run are shared by the module (each fit is ~10-30 s on CPU).
Checks that stage 2 consumed the stage-1 table, that the budget sentence is in the token ids
sent to ``generate``, that resume keeps the refined targets, and the ``lapo answer`` helper.
Run: pytest tests/test_stage2_e2e.py -q
"""

from __future__ import annotations

import json

import pytest
import torch

from clitools import ROOT, config_in, fit
from lapo_lightning import inference
from lapo_lightning.callbacks.budgets import BudgetTargets
from lapo_lightning.length_table import LengthTable
from lapo_lightning.module import GRPOModule
from lapo_lightning.prompts import ChatPrompt, PlainPrompt, parse_budget, render_budget
from lapo_lightning.rollout import HFGenerate

pytestmark = pytest.mark.slow


class SampleSpy:
    """Records each prompt as decoded from the token ids handed to the decoder.

    ``fit=True`` wraps ``GRPOModule.sample`` (whatever sampler the module uses), otherwise
    ``HFGenerate.sample`` (what the inference helper calls).
    """

    def __init__(self, monkeypatch, fit: bool = True) -> None:
        self.calls: list[dict] = []
        if fit:
            original_fit = GRPOModule.sample

            def sample_fit(module, batch, group_size, gen):
                return self.record(module.tokenizer, original_fit(module, batch, group_size, gen))

            monkeypatch.setattr(GRPOModule, "sample", sample_fit)
        else:
            original = HFGenerate.sample

            def sample(sampler, model, tokenizer, prompts, problems, group_size, gen):
                return self.record(tokenizer, original(sampler, model, tokenizer, prompts, problems, group_size, gen))

            monkeypatch.setattr(HFGenerate, "sample", sample)

    def record(self, tokenizer, out):
        for i, g in enumerate(out.group_index.tolist()):
            self.calls.append({
                "prompt": tokenizer.decode(out.prompt_ids[i][out.prompt_mask[i]]),
                "budget": out.problems.budgets[g],
                "problem_id": out.problems.problem_ids[g],
                "completion_ids": out.completion_ids[i].cpu(),
                "length": int(out.lengths[i]),
            })
        return out


def budget_state(checkpoint: dict) -> dict:
    (key,) = [k for k in checkpoint["callbacks"] if k.startswith("BudgetTargets")]
    return checkpoint["callbacks"][key]


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """Debug stage 1 then debug stage 2, all outputs under one temp folder."""
    tmp = tmp_path_factory.mktemp("chain")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(ROOT)  # configs name data/... relative to the checkout
        fit(config_in(tmp, "debug/stage1.yaml"))
        spy = SampleSpy(mp)
        cli = fit(config_in(tmp, "debug/stage2.yaml"))
    return {"tmp": tmp, "runs": tmp / "runs", "cli": cli, "calls": spy.calls}


def test_stage2_consumes_the_stage1_table_and_exports(chain):
    runs = chain["runs"]
    stage1 = LengthTable.load(runs / "debug_stage1/length_table.json")
    refined = LengthTable.load(runs / "debug_stage2/length_table_refined.json")
    assert set(refined.entries) == set(stage1.entries) == set(chain["cli"].datamodule.problem_ids)
    assert refined.metadata["source_table"] == str(runs / "debug_stage1/length_table.json")
    assert refined.metadata["step"] == chain["cli"].trainer.global_step == 6
    # Eq. 8 never raises a target.
    for pid, old in stage1.entries.items():
        if old.solved:
            assert refined.entries[pid].median <= old.median
    assert (runs / "debug_stage2/adapter/adapter_config.json").is_file()
    assert (runs / "debug_stage2/checkpoints/epoch=0-step=3.ckpt").is_file()
    with open(chain["cli"].trainer.log_dir + "/metrics.csv") as f:
        header = f.readline()
    for key in ("budget/abs_error", "budget/signed_error", "budget/within_sigma", "budget/targets_shrunk"):
        assert key in header


def test_budget_sentence_is_in_the_token_ids_sent_to_generate(chain):
    stage1 = LengthTable.load(chain["runs"] / "debug_stage1/length_table.json")
    calls = chain["calls"]
    assert len(calls) == 6 * 4 * 8  # 6 steps x 4 problems x G=8
    for call in calls:
        assert isinstance(call["budget"], int)
        assert parse_budget(call["prompt"]) == call["budget"]
        assert call["prompt"].endswith("<think>" + render_budget(call["budget"]))  # placement "think"
    # Every problem is sampled once in these 6 steps, so each states its stage-1 budget.
    for call in calls:
        expected = stage1.target(call["problem_id"])
        assert call["budget"] == (32 if expected is None else expected)  # fallback: the 32-token cap


def test_resume_mid_stage2_keeps_the_refined_targets(chain, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    runs = chain["runs"]
    ckpt_path = runs / "debug_stage2/checkpoints/epoch=0-step=3.ckpt"
    checkpoint = torch.load(ckpt_path, weights_only=False)
    saved = budget_state(checkpoint)

    # Make the saved targets distinguishable from the stage-1 file: every target 5 tokens.
    for raw in saved["entries"].values():
        raw.update(median=5.0, low=5.0, high=5.0, count=max(raw["count"], 1), solved=True)
    tampered = tmp_path / "tampered.ckpt"
    torch.save(checkpoint, tampered)

    seen: list[dict] = []
    monkeypatch.setattr(BudgetTargets, "on_train_start", lambda self, trainer, module: seen.append(self.state_dict()),
                        raising=False)
    spy = SampleSpy(monkeypatch)
    # Same stage-1 inputs, outputs in a fresh folder.
    stage1 = str(runs / "debug_stage1")
    inputs = {str(tmp_path / "resumed/runs/debug_stage1"): stage1}
    config = config_in(tmp_path / "resumed", "debug/stage2.yaml", **inputs)
    cli = fit(config, "--ckpt_path", str(tampered))
    assert seen == [saved]  # restored state, not re-read from the table file
    assert cli.trainer.global_step == 6
    assert spy.calls and all(call["budget"] == 5 for call in spy.calls)  # the next prompts carry it


def test_resume_gives_the_same_refined_table_as_the_uninterrupted_run(chain, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    runs = chain["runs"]
    stage1 = str(runs / "debug_stage1")
    config = config_in(tmp_path, "debug/stage2.yaml", **{str(tmp_path / "runs/debug_stage1"): stage1})
    fit(config, "--ckpt_path", str(runs / "debug_stage2/checkpoints/epoch=0-step=3.ckpt"))
    resumed = LengthTable.load(tmp_path / "runs/debug_stage2/length_table_refined.json")
    uninterrupted = LengthTable.load(runs / "debug_stage2/length_table_refined.json")
    assert resumed.entries == uninterrupted.entries
    assert resumed.metadata["step"] == 6


def test_answer_with_and_without_a_budget(chain, monkeypatch):
    adapter = str(chain["runs"] / "debug_stage2/adapter")
    spy = SampleSpy(monkeypatch, fit=False)
    plain = inference.answer(adapter, "What is 2 + 3?", max_new_tokens=8)
    budgeted = inference.answer(adapter, "What is 2 + 3?", budget=17, max_new_tokens=8)
    without, with_budget = spy.calls
    assert parse_budget(without["prompt"]) is None and without["prompt"].endswith("Assistant: <think>")
    assert parse_budget(with_budget["prompt"]) == 17
    model_config = json.loads((chain["runs"] / "debug_stage2/adapter/adapter_config.json").read_text())
    assert model_config["base_model_name_or_path"]  # the base came from here: no --base given
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(adapter)  # ExportAdapter saves it beside the adapter
    for result, call in ((plain, without), (budgeted, with_budget)):
        generated = []
        for token in call["completion_ids"].tolist():  # up to and including EOS, never padding
            if token == tokenizer.pad_token_id:
                break
            generated.append(token)
            if token == tokenizer.eos_token_id:
                break
        assert result.tokens == len(generated) and 1 <= result.tokens <= 8
        assert result.text == tokenizer.decode(generated, skip_special_tokens=True)
        # Graded as training grades: the prompt opened <think>, so only text after </think> counts.
        final = inference.after_reasoning(result.text, prompt_opened=True)
        assert result.answer == (None if final is None else inference.extract_answer(final))


def test_answer_uses_the_prompt_recorded_with_the_adapter(chain):
    adapter = str(chain["runs"] / "debug_stage2/adapter")
    recorded = inference.choose_prompt(None, adapter)
    assert isinstance(recorded, PlainPrompt) and recorded.placement == "think"
    assert isinstance(inference.choose_prompt("chat", adapter), ChatPrompt)  # --prompt wins


def test_lapo_answer_command(chain, capsys):
    from lapo_lightning.cli.main import main

    adapter = str(chain["runs"] / "debug_stage2/adapter")
    with pytest.raises(SystemExit) as done:
        main(["answer", "--adapter", adapter, "--budget", "9", "--max-new-tokens", "4", "What is 1 + 1?"])
    assert done.value.code == 0 and "tokens: " in capsys.readouterr().out
    with pytest.raises(SystemExit) as missing:
        main(["answer", "--adapter", str(chain["tmp"] / "nope"), "What is 1 + 1?"])
    assert missing.value.code == 2 and "no PEFT adapter" in capsys.readouterr().err
