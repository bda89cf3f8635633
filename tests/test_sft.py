"""SFT warm start: batch encoding (loss only on the completion, budgets that state real lengths),
the data module's field check, and a short `lapo fit` on configs/demo/sft.yaml that learns."""

from __future__ import annotations

import csv

import pytest
import torch
from transformers import AutoModelForCausalLM

from lapo_lightning.problem_sets.files import DataError
from lapo_lightning.policy import PolicyConfig, load_tokenizer
from lapo_lightning.prompts import PlainPrompt, parse_budget
from lapo_lightning.sft import SFTBatch, SFTDataModule, SFTModule
from tests.clitools import ROOT, config_in, fit

DEMO_PROMPT = PlainPrompt(system="", instruction="", template="{problem} <think>")


def module(budget_fraction: float) -> SFTModule:
    m = SFTModule(PolicyConfig(model="tiny:llama-n"), full_finetune=True, prompt=DEMO_PROMPT,
                  budget_fraction=budget_fraction)
    m.tokenizer = load_tokenizer(m.policy_config)
    return m


BATCH = SFTBatch(["a", "b"], ["3+5", "1+2+3+4"], [" 3+5=8 </think> \\boxed{8}", " 1+2=3 3+3=6 6+4=10 </think> \\boxed{10}"])


@pytest.mark.parametrize("fraction", [0.0, 1.0])
def test_encode_labels_only_the_completion_and_eos(fraction):
    m = module(fraction)
    tok = m.tokenizer
    enc = m.encode(BATCH)
    for i, completion in enumerate(BATCH.completions):
        real = enc["attention_mask"][i].bool()
        labelled = enc["labels"][i] != -100
        ids = enc["input_ids"][i]
        assert tok.decode(ids[labelled]) == completion + tok.eos_token
        prompt = tok.decode(ids[real & ~labelled])
        assert prompt.startswith(BATCH.problems[i] + " <think>")
        budget = parse_budget(prompt)
        if fraction == 0.0:
            assert budget is None
        else:  # the stated budget is the completion's real length as RL counts it (tokens + EOS)
            assert budget == int(labelled.sum())
        assert (enc["labels"][i][~real] == -100).all()


def test_budget_fraction_is_a_share_of_the_prompts_reproducible_per_step():
    m = module(0.5)
    batch = SFTBatch([str(i) for i in range(400)], ["1+2"] * 400, [" 1+2=3 </think> \\boxed{3}"] * 400)
    first = m.encode(batch)["input_ids"]
    stated = sum(parse_budget(m.tokenizer.decode(row)) is not None for row in first)
    assert 150 < stated < 250
    assert torch.equal(first, m.encode(batch)["input_ids"])  # same step, same choice


def test_data_module_names_the_missing_completion_field(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"id": "x", "problem": "1+1", "answer": "2"}\n')
    with pytest.raises(DataError, match=r"data.completion_field.*'solution'.*'x'"):
        SFTDataModule(train_file=str(path)).setup()


def test_fit_on_the_demo_sft_config_learns_and_exports_a_loadable_model(tmp_path):
    config = config_in(tmp_path, "demo/sft.yaml", **{"tiny:llama-h128-l4-n": "tiny:llama-h64-l2-n"})
    fit(config, "--trainer.max_steps", "25", "--trainer.log_every_n_steps", "1",
        "--data.problems_per_step", "16", "--model.optim.warmup_steps", "5")
    metrics = list(csv.DictReader((tmp_path / "runs" / "demo" / "sft" / "version_0" / "metrics.csv").open()))
    losses = [float(r["loss"]) for r in metrics if r.get("loss")]
    assert len(losses) == 25 and sum(losses[-5:]) / 5 < 0.6 * sum(losses[:5]) / 5
    out = tmp_path / "runs" / "demo" / "sft" / "model"
    model = AutoModelForCausalLM.from_pretrained(out)  # a whole model, not an adapter
    assert not (out / "adapter_config.json").exists() and model.config.hidden_size == 64
    assert (ROOT / "configs" / "demo" / "sft.yaml").is_file()
