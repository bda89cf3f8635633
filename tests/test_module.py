"""GRPOModule wiring through short CLI fits: inner epochs, the reference pass only when KL
is on, aggregation modes, stop strings, and merged export.

Run: pytest tests/test_module.py -q
"""

from __future__ import annotations

import pytest
import torch

from clitools import ROOT, config_in, fit
from lapo_lightning.module import GRPOModule
from lapo_lightning.policy import PolicyConfig, export_merged, load_policy
from lapo_lightning.reference import NoReference
from lapo_lightning.rollout import GenerationConfig, HFGenerate
from lapo_lightning.types import ProblemBatch

pytestmark = pytest.mark.slow


@pytest.fixture
def pass_counter(monkeypatch):
    """Counts no-grad log-prob passes, split by reference / policy."""
    calls = {"reference": 0, "policy": 0}
    original = GRPOModule.logprobs_no_grad

    def counting(self, rollouts, reference=False):
        calls["reference" if reference else "policy"] += 1
        return original(self, rollouts, reference=reference)

    monkeypatch.setattr(GRPOModule, "logprobs_no_grad", counting)
    monkeypatch.chdir(ROOT)
    return calls


@pytest.mark.parametrize(("sampler", "policy_passes"), [("HFGenerate", 2), ("CompactDecode", 0)])
def test_inner_epochs_make_optimizer_steps_and_old_logprobs_are_not_recomputed(tmp_path, pass_counter, sampler,
                                                                                 policy_passes):
    cli = fit(config_in(tmp_path, "debug/grpo.yaml"), "--model.grpo.num_iterations", "2", "--model.sampler", sampler,
              "--trainer.max_steps", "4", "--trainer.limit_val_batches", "0")
    assert cli.trainer.global_step == 4  # 2 batches x 2 optimizer steps
    # One reference pass per batch; an old-log-prob pass only when the sampler did not
    # return the sampled tokens' log-probs (CompactDecode does).
    assert pass_counter == {"reference": 2, "policy": policy_passes}


@pytest.mark.parametrize("aggregation", ["sequence_mean", "constant"])
def test_kl_off_means_no_reference_forward(tmp_path, pass_counter, aggregation):
    config = config_in(tmp_path, "debug/grpo.yaml", **{"kl_coef: 1.0e-3": "kl_coef: 0.0"})
    cli = fit(config, "--model.reference", "NoReference", "--model.grpo.token_aggregation", aggregation,
              "--trainer.max_steps", "2", "--trainer.limit_val_batches", "0")
    assert cli.trainer.global_step == 2
    assert pass_counter == {"reference": 0, "policy": 0}  # mu = 1: old log-probs are not recomputed


def test_kl_on_with_no_reference_is_rejected():
    with pytest.raises(ValueError, match="model.grpo.kl_coef"):
        GRPOModule(reference=NoReference())


def test_stop_strings_end_a_completion():
    model, tokenizer = load_policy(PolicyConfig(model="tiny:llama"))
    # A random model emits arbitrary bytes; make greedy decoding pick lowercase letters.
    letters = {tokenizer.convert_tokens_to_ids(c) for c in "abcdefghijklmnopqrstuvwxyz"}
    with torch.no_grad():
        head = model.get_output_embeddings().weight
        for i in range(head.shape[0]):
            head[i] *= 10.0 if i in letters else 0.0
    problems = ProblemBatch(["a"], ["q"], ["1"])
    greedy = GenerationConfig(max_new_tokens=12, temperature=0)
    full = HFGenerate().sample(model, tokenizer, ["What is 1+1?"], problems, 1, greedy).texts[0]
    stop = full[3]  # a character greedy decoding emits
    cut = HFGenerate().sample(model, tokenizer, ["What is 1+1?"], problems, 1,
                              GenerationConfig(max_new_tokens=12, temperature=0, stop_strings=[stop]))
    assert cut.texts[0].endswith(stop) and len(cut.texts[0]) < len(full)
    assert not cut.truncated[0]


def test_export_merged_equals_base_plus_adapter(tmp_path):
    cfg = PolicyConfig(model="tiny:qwen2")
    model, _ = load_policy(cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.add_(0.05)
    model.save_pretrained(tmp_path / "adapter")
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        expected = model(input_ids=ids).logits
    merged_dir = export_merged(cfg, tmp_path / "adapter", tmp_path / "merged")
    from transformers import AutoModelForCausalLM

    merged = AutoModelForCausalLM.from_pretrained(merged_dir)
    with torch.no_grad():
        torch.testing.assert_close(merged(input_ids=ids).logits, expected, rtol=1e-4, atol=1e-4)
