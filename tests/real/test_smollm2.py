"""A real pretrained chat model through every ``lapo`` verb, offline, on CPU.

SmolLM2-135M-Instruct (its own BPE tokenizer, chat template and end-of-turn EOS) runs the
user's path with tiny settings: stage 1 in full precision and in 4-bit, ``lapo table``,
stage 2 from the stage-1 adapter, ``lapo answer`` with and without a budget, ``lapo eval``.
Run: pytest tests/real -q   (a few minutes on 2 cores; see conftest.py for what it needs)
"""

from __future__ import annotations

import json

import pytest

from clitools import ROOT, config_in, fit
from lapo_lightning.cli.main import main
from lapo_lightning.cli.answer import main as answer_main
from lapo_lightning.length_table import LengthTable
from lapo_lightning.policy import PolicyConfig, load_tokenizer
from lapo_lightning.prompts import PROMPT_FILE, ChatPrompt, opens_think, parse_budget
from lapo_lightning.rollout import encode_prompts

MODEL = "gguf:smollm2-135m-instruct"

pytestmark = [pytest.mark.real, pytest.mark.slow]
# Small enough for 2 CPU cores: 2 problems x 4 completions of at most 24 tokens per step.
SMALL = ("--trainer.max_steps", "2", "--data.max_problems", "4", "--data.problems_per_step", "2",
         "--model.grpo.group_size", "4", "--model.grpo.micro_batch_size", "8",
         "--model.generation.max_new_tokens", "24")


@pytest.fixture(autouse=True)
def in_repo(monkeypatch):
    monkeypatch.chdir(ROOT)


def test_the_converted_model_is_an_ordinary_chat_model_folder(smollm2):
    from transformers import AutoConfig

    from lapo_lightning.models.source import resolve

    assert resolve(MODEL) == smollm2  # converted once, then cached
    assert AutoConfig.from_pretrained(smollm2).model_type == "llama"
    tokenizer = load_tokenizer(PolicyConfig(model=MODEL))
    assert tokenizer.chat_template and tokenizer.eos_token == "<|im_end|>"  # the end of the turn stops generation
    assert tokenizer.padding_side == "left"


def test_chat_prompt_token_ids_as_the_sampler_gets_them(smollm2):
    tokenizer = load_tokenizer(PolicyConfig(model=MODEL))
    prompt = ChatPrompt()
    assert not prompt.thinks(tokenizer), "SmolLM2 has no <think> token: nothing may be prefilled"
    stage1, stage2 = prompt.render("What is 2 + 3?", None, tokenizer), prompt.render("What is 2 + 3?", 40, tokenizer)
    ids, mask, _ = encode_prompts(tokenizer, [stage1, stage2], 1, "cpu")
    row1, row2 = (ids[i][mask[i].bool()].tolist() for i in range(2))
    im_start, im_end = tokenizer.convert_tokens_to_ids(["<|im_start|>", "<|im_end|>"])
    assert row1[0] == im_start and row1.count(im_start) == row1.count(im_end) + 1  # turns closed but the last
    assert row1[-len(assistant := tokenizer.encode("<|im_start|>assistant\n")):] == assistant
    assert row2[:len(row1)] == row1  # stage 2 = stage 1 + the sentence where the reply starts
    assert tokenizer.decode(row2[len(row1):]) == "I will answer the question with 40 tokens.\n"
    assert parse_budget(tokenizer.decode(row2)) == 40 and not opens_think(stage2)


@pytest.fixture(scope="module")
def stage1(smollm2, tmp_path_factory):
    """Stage 1 for two steps in full precision: the run folder."""
    folder = tmp_path_factory.mktemp("stage1")
    fit(config_in(folder, "real/smollm2_stage1.yaml"), *SMALL)
    return folder / "runs/real/stage1"


def test_stage1_writes_a_table_and_an_adapter_peft_loads(stage1, capsys):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    table = LengthTable.load(stage1 / "length_table.json")
    assert len(table.entries) == 4 and table.metadata["step"] == 2
    base = AutoModelForCausalLM.from_pretrained(load_model_folder())
    model = PeftModel.from_pretrained(base, str(stage1 / "adapter"))
    assert any("lora_B" in name for name, _ in model.named_parameters())
    recorded = json.loads((stage1 / "adapter" / PROMPT_FILE).read_text())
    assert recorded["class_path"].endswith("ChatPrompt")

    with pytest.raises(SystemExit) as done:
        main(["table", str(stage1 / "length_table.json")])
    assert done.value.code == 0 and "solved" in capsys.readouterr().out


def load_model_folder() -> str:
    from lapo_lightning.models.source import resolve

    return resolve(MODEL)


def test_stage1_in_4bit(smollm2, tmp_path):
    cli = fit(config_in(tmp_path, "real/smollm2_stage1.yaml"), *SMALL, "--model.policy.load_in_4bit", "true",
              "--model.policy.bnb_compute_dtype", "float32")  # as the config's float32 weights
    import bitsandbytes as bnb

    assert any(isinstance(m, bnb.nn.Linear4bit) for m in cli.model.policy.modules())
    assert (tmp_path / "runs/real/stage1/adapter/adapter_model.safetensors").is_file()


def test_stage2_from_the_stage1_adapter_then_answer_and_eval(stage1, tmp_path, capsys):
    import shutil

    shutil.copytree(stage1, tmp_path / "runs/real/stage1")
    fit(config_in(tmp_path, "real/smollm2_stage2.yaml"), *SMALL)
    refined = LengthTable.load(tmp_path / "runs/real/stage2/length_table_refined.json")
    assert refined.metadata["step"] == 2
    adapter = str(tmp_path / "runs/real/stage2/adapter")

    for budget in ([], ["--budget", "40"]):
        assert answer_main(["--adapter", adapter, "--max-new-tokens", "16", *budget, "What is 2 + 3?"]) == 0
        out = capsys.readouterr().out
        assert "tokens: " in out and "answer: " in out

    eval_config = config_in(tmp_path, "real/eval_smollm2.yaml")
    main(["eval", "--config", str(eval_config), "--data.max_problems", "2", "--model.generation.max_new_tokens", "16",
          "--data.benchmarks", '[{name: arithmetic, path: data/debug_arithmetic.jsonl, samples: 2}]'])
    report = tmp_path / "runs/real/eval"
    results = json.loads((report / "results.json").read_text())
    assert set(results["averages"]) == {"base", "lapo-stage1", "lapo-stage2"}
    assert all(row["samples"] == 4 and 0 < row["tokens_mean"] <= 16 for row in results["results"])  # 2 x 2 samples
    assert results["settings"]["prompt"]["class"] == "ChatPrompt"
    assert list(report.glob("*.png")) and "lapo-stage2" in (report / "report.md").read_text()
