"""GRPOModule wiring through short CLI fits: inner epochs, the reference pass only when KL
is on, aggregation modes, stop strings, and merged export; and, on hand-built rollouts,
that ``verify`` tells the verifier which prompts left <think> open, and that a step whose
advantages are all 0 (KL off) skips the forward/backward yet trains exactly like the pass.

Run: pytest tests/test_module.py -q
"""

from __future__ import annotations

import pytest
import torch

from clitools import ROOT, config_in, fit
from lapo_lightning.algo import ratio_summary
from lapo_lightning.config import GRPOConfig, OptimConfig
from lapo_lightning.module import GRPOModule
from lapo_lightning.policy import PolicyConfig, export_merged, load_policy
from lapo_lightning.prompts import PlainPrompt
from lapo_lightning.reference import NoReference
from lapo_lightning.rollout import GenerationConfig, HFGenerate
from lapo_lightning.types import ProblemBatch, RolloutBatch
from lapo_lightning.verify import MathVerifier

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


def hand_rollouts(texts: list[str]) -> RolloutBatch:
    """Two problems (answers 5 and 7), two rollouts each; only what ``verify`` reads is real."""
    n = len(texts)
    ones, zeros = torch.ones(n, 1, dtype=torch.bool), torch.zeros(n, 1, dtype=torch.long)
    return RolloutBatch(problems=ProblemBatch(["a", "b"], ["2+3", "3+4"], ["5", "7"]),
                        group_index=torch.tensor([0, 0, 1, 1]), prompt_ids=zeros, prompt_mask=ones,
                        completion_ids=zeros, completion_mask=ones, texts=texts,
                        truncated=torch.tensor([True, False, True, False]))


# Per problem: cut off mid-thought with the right box, then closed with the right box after.
TEXTS = [r" 2+3=5 so \boxed{5} and", r" 2+3=5 </think> \boxed{5}",
         r" 3+4=7 \boxed{7}", r" \boxed{5} </think> \boxed{7}"]


def test_verify_grades_only_after_the_reasoning_the_prompt_opened():
    out = GRPOModule().verify(hand_rollouts(TEXTS))  # the paper's prompt ends "Assistant: <think>"
    assert out.correct.tolist() == [False, True, False, True]
    assert out.unclosed.tolist() == [True, False, True, False]
    assert out.parsed.tolist() == [False, True, False, True]


def test_verify_after_a_prompt_that_opens_nothing_or_with_think_tags_off_grades_the_whole_text():
    no_think = GRPOModule(prompt=PlainPrompt(template="{problem} =", placement="none"))
    whole_text = GRPOModule(verifier=MathVerifier(think_tags=False))
    for module in (no_think, whole_text):
        out = module.verify(hand_rollouts(TEXTS))
        assert out.correct.tolist() == [True, True, True, True] and not out.unclosed.any()


# ------------------------------------------------------- steps with nothing to learn
def bare_module(kl_coef: float = 0.0, num_iterations: int = 1, weight_decay: float = 0.0,
                steps_per_generation: int = 1):
    """A GRPOModule with the tiny policy and its own AdamW, driven without a Trainer."""
    grpo = GRPOConfig(group_size=2, kl_coef=kl_coef, micro_batch_size=4, max_grad_norm=None,
                      num_iterations=num_iterations, steps_per_generation=steps_per_generation)
    torch.manual_seed(0)
    module = GRPOModule(grpo=grpo, reference=None if kl_coef else NoReference())
    module.policy, module.tokenizer = load_policy(PolicyConfig(model="tiny:llama"))
    module.reference.setup(module.policy)
    opt, sched = OptimConfig(lr=1e-2, weight_decay=weight_decay).build(
        [p for p in module.parameters() if p.requires_grad], total_steps=10)
    module.optimizers, module.lr_schedulers = (lambda: opt), (lambda: sched)
    module.manual_backward = lambda loss: loss.backward()
    return module, opt, sched


def token_rollouts() -> RolloutBatch:
    """Two problems x two completions of random tokens (rows of a group share the prompt)."""
    g = torch.Generator().manual_seed(0)
    prompts = torch.randint(3, 100, (2, 3), generator=g).repeat_interleave(2, dim=0)  # [4, 3]
    ones = torch.ones(4, 5, dtype=torch.bool)
    return RolloutBatch(problems=ProblemBatch(["a", "b"], ["q", "r"], ["1", "2"]), group_index=torch.tensor([0, 0, 1, 1]),
                        prompt_ids=prompts, prompt_mask=torch.ones(4, 3, dtype=torch.bool),
                        completion_ids=torch.randint(3, 100, (4, 5), generator=g), completion_mask=ones,
                        texts=[""] * 4, truncated=torch.zeros(4, dtype=torch.bool))


def trainable(module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in module.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_zero_advantage_step_skips_the_pass_and_trains_exactly_like_it(monkeypatch, weight_decay):
    rollouts, signal, nothing = token_rollouts(), torch.tensor([1.0, -1.0, 0.5, -0.5]), torch.zeros(4)
    after = {}
    for skip in (True, False):
        module, opt, sched = bare_module(num_iterations=2, weight_decay=weight_decay)
        module.update(rollouts, signal)  # builds AdamW momentum, as an earlier step would
        before = trainable(module)
        forwards = []
        original = GRPOModule.completion_logprobs
        monkeypatch.setattr(GRPOModule, "completion_logprobs", lambda self, r, i: forwards.append(1) or original(self, r, i))
        if not skip:
            monkeypatch.setattr(GRPOModule, "nothing_to_learn", lambda self, a: False)
        losses = module.update(rollouts, nothing)
        monkeypatch.undo()
        assert losses["train/skipped_zero_advantage"] == (2.0 if skip else 0.0)
        assert losses["loss/total"] == 0.0 and (len(forwards) == 0) == skip
        assert sched.last_epoch == 4  # the schedule advanced 2 steps per update either way
        after[skip] = trainable(module)
        # Momentum (and weight decay) still move the weights on zero gradients, as the full pass does.
        assert any(not torch.equal(after[skip][n], before[n]) for n in before)
    for name in after[True]:
        torch.testing.assert_close(after[True][name], after[False][name], rtol=0, atol=0)


def test_kl_on_keeps_the_pass_even_with_zero_advantages():
    module, _, _ = bare_module(kl_coef=0.1)
    assert not module.nothing_to_learn(torch.zeros(4))
    assert module.update(token_rollouts(), torch.zeros(4))["train/skipped_zero_advantage"] == 0.0
    plain, _, _ = bare_module()
    assert plain.nothing_to_learn(torch.zeros(4)) and not plain.nothing_to_learn(torch.tensor([0.0, 0.0, 1e-6, 0.0]))


# ------------------------------------------------- one generation, several updates
def test_steps_per_generation_steps_once_per_mini_batch_with_old_logprobs_fixed_once(monkeypatch):
    """k = 2 over 2 problems x G 2: two optimizer steps, each on one rollout of each problem;
    one old-log-prob pass for the generation; the first step's ratio is 1 (nothing has moved
    yet), the second's is not (the first step moved the policy)."""
    module, opt, sched = bare_module(steps_per_generation=2)
    rollouts, advantages = token_rollouts(), torch.tensor([1.0, -1.0, 0.5, -0.5])
    old_passes, steps = [], []
    original_no_grad, original_backward = GRPOModule.logprobs_no_grad, GRPOModule.backward_mini_batch
    monkeypatch.setattr(GRPOModule, "logprobs_no_grad",
                        lambda self, r, reference=False: old_passes.append(reference) or original_no_grad(self, r, reference))

    def recording(self, r, rows, *args):
        out = original_backward(self, r, rows, *args)
        steps.append((sorted(r.group_index[rows].tolist()), out[1]))
        return out

    monkeypatch.setattr(GRPOModule, "backward_mini_batch", recording)
    module.update(rollouts, advantages)
    assert old_passes == [False] and sched.last_epoch == 2
    assert [groups for groups, _ in steps] == [[0, 1], [0, 1]]
    first, second = (ratio_summary(ratios) for _, ratios in steps)
    assert first["ratio_mean"] == pytest.approx(1.0, abs=1e-5) and first["ratio_std"] < 1e-5
    assert abs(second["ratio_mean"] - 1.0) > 1e-4 or second["ratio_std"] > 1e-4


def test_steps_per_generation_must_divide_the_group():
    with pytest.raises(ValueError, match="model.grpo.steps_per_generation: must divide model.grpo.group_size"):
        GRPOConfig(group_size=8, steps_per_generation=3)


def test_a_generation_feeds_k_steps_and_is_sampled_scored_and_summarised_once(tmp_path, pass_counter):
    """A fit with k = 2: each batch holds 2 x problems_per_step problems, sampled in one call,
    scored once, summarised once for the callbacks; 2 optimizer steps per batch, each logged
    with its importance ratio (1 at a generation's first step, moved at its second)."""
    import csv

    cli = fit(config_in(tmp_path, "debug/grpo.yaml"), "--model.grpo.steps_per_generation", "2",
              "--model.sampler", "HFGenerate", "--trainer.max_steps", "4", "--trainer.limit_val_batches", "0")
    module = cli.trainer.lightning_module
    assert cli.trainer.global_step == 4 and cli.datamodule.problems_per_batch == 8
    assert pass_counter == {"reference": 2, "policy": 2}  # once per generation each
    rows = list(csv.DictReader(open(next((tmp_path / "runs/debug_grpo").rglob("metrics.csv")))))
    updates = {int(r["step"]): r for r in rows if r.get("update/ratio_mean")}
    assert sorted(updates) == [1, 2, 3, 4]
    for first, second in ((1, 2), (3, 4)):
        assert float(updates[first]["update/ratio_mean"]) == pytest.approx(1.0, abs=1e-4)
        assert float(updates[first]["update/clip_frac"]) == 0.0
        assert float(updates[second]["update/ratio_std"]) > float(updates[first]["update/ratio_std"])
    summaries = [r for r in rows if r.get("groups/total")]
    assert [float(r["groups/total"]) for r in summaries] == [8.0, 8.0]  # two generations of 8 problems
    assert module.grpo.updates_per_batch == 2
