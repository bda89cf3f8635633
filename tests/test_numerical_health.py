"""Numerical health: NaN/inf never reaches the optimizer, a checkpoint or an adapter.

Covers the non-finite bad inputs: a reward plugin returning NaN, a list
or the wrong number of values is stopped at its first call naming its class; a step with a
NaN/inf loss or gradient is skipped (weights untouched, counted) and a run of them stops with
an error naming the last checkpoint; a checkpoint is never written with NaN weights; a
``max_steps 1`` run with a forced NaN exports a finite adapter; per-step counts of groups
without signal are logged. Unit checks on ``lapo_lightning/safety/health.py`` first, then short fits
of the debug config (tiny model, a few seconds each).

Run: pytest tests/test_numerical_health.py -q
"""

from __future__ import annotations

import csv
import os
import re
import time
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from clitools import ROOT, config_in, fit
from lapo_lightning.safety.health import (NonFiniteTrainingError, NonFiniteWeightsError, all_finite, group_health,
                                   newest_checkpoint, nonfinite_parameters, nonfinite_stop_message)
from lapo_lightning.module import GRPOModule
from lapo_lightning.rewards import Accuracy, Reward, score
from lapo_lightning.safety.run_lock import LOCK_NAME
from lapo_lightning.types import ProblemBatch, RolloutBatch
from test_module import bare_module, token_rollouts, trainable

NAN, INF = float("nan"), float("inf")


# ----------------------------------------------------------------- health.py
def test_all_finite_and_nonfinite_parameters_name_the_bad_tensors():
    good, big_half = torch.ones(3), torch.full((4,), 6e4, dtype=torch.float16)  # 2-norm overflows fp16
    assert all_finite([good, big_half]) and all_finite([])
    assert not all_finite([good, torch.tensor([1.0, NAN])]) and not all_finite([torch.tensor([-INF])])
    named = [("a", good), ("b", torch.tensor([INF])), ("c", big_half), ("d", torch.tensor([[NAN]])),
             ("ids", torch.tensor([1, 2]))]  # integer tensors (quantized storage) are not weights
    assert nonfinite_parameters(named) == ["b", "d"]
    assert nonfinite_parameters([("a", good)]) == [] and nonfinite_parameters([]) == []


def test_group_health_counts_groups_without_signal():
    counts = group_health(torch.tensor([False, False, True, True, True, False]),
                          torch.tensor([True, True, False, True, False, False]),
                          torch.tensor([0.0, 0.0, 1.0, 1.0, 1.0, 0.5]), torch.tensor([0, 0, 1, 1, 2, 2]), 3)
    assert counts == {"all_truncated": 1, "all_wrong": 1, "all_correct": 1, "zero_spread": 2}


def test_newest_checkpoint_is_the_latest_whole_file_of_any_checkpoint_callback(tmp_path):
    assert newest_checkpoint(SimpleNamespace(checkpoint_callbacks=[])) is None
    old, new, cut = tmp_path / "step=1.ckpt", tmp_path / "step=2.ckpt", tmp_path / "step=3.ckpt"
    for i, path in enumerate((old, new, cut)):
        torch.save({"step": i}, path)
        os.utime(path, ns=(time.time_ns(), time.time_ns() + i * 10**9))
    callback = SimpleNamespace(last_model_path="", best_model_path=str(old), dirpath=str(tmp_path))
    assert newest_checkpoint(SimpleNamespace(checkpoint_callbacks=[callback])) == str(cut)
    stamp = cut.stat().st_mtime_ns
    cut.write_bytes(cut.read_bytes()[:40])  # killed mid-write: the newest file is not a whole archive
    os.utime(cut, ns=(stamp, stamp))
    assert newest_checkpoint(SimpleNamespace(checkpoint_callbacks=[callback])) == str(new)
    gone = SimpleNamespace(last_model_path=str(tmp_path / "missing.ckpt"), best_model_path="", dirpath=None)
    assert newest_checkpoint(SimpleNamespace(checkpoint_callbacks=[gone])) is None


def test_stop_message_says_what_happened_and_where_to_resume():
    text = nonfinite_stop_message(3, 5, 7, "ck/step=5.ckpt")
    assert text.startswith("3 optimizer steps in a row (trainer.global_step 5 to 7) had a NaN/inf loss or gradient")
    assert "weights were not updated by them and are still finite" in text
    assert "last good checkpoint is ck/step=5.ckpt (resume with --ckpt_path ck/step=5.ckpt)" in text
    assert "no checkpoint was written yet" in nonfinite_stop_message(1, 0, 0, None)
    assert "'lora.w' already holds NaN/inf" in nonfinite_stop_message(2, 0, 1, None, ["lora.w"])


# ------------------------------------------------------------------ rewards
def reward_batch() -> RolloutBatch:
    """Two problems x two rollouts; rewards below read only its size."""
    n = 4
    return RolloutBatch(problems=ProblemBatch(["p0", "p1"], ["q", "r"], ["1", "2"]),
                        group_index=torch.tensor([0, 0, 1, 1]), prompt_ids=torch.zeros(n, 1, dtype=torch.long),
                        prompt_mask=torch.ones(n, 1, dtype=torch.bool), completion_ids=torch.zeros(n, 2, dtype=torch.long),
                        completion_mask=torch.ones(n, 2, dtype=torch.bool), texts=[""] * n,
                        truncated=torch.zeros(n, dtype=torch.bool), correct=torch.tensor([True, False, True, True]))


class ReturnsThis(Reward):
    """A user plugin returning whatever the test hands it."""

    def __init__(self, value=None, weight: float = 1.0, name: str | None = None) -> None:
        super().__init__(weight, name)
        self.value = value

    def __call__(self, batch):
        return self.value


class NaNForOneRollout(Reward):
    """Returns NaN for the third rollout, 1 elsewhere (a plugin with a 0/0 in it)."""

    def __call__(self, batch):
        value = torch.ones(len(batch))
        value[2] = NAN
        return value


@pytest.mark.parametrize(("value", "error", "match"), [
    (torch.tensor([1.0, 0.0, INF, 1.0]), ValueError, r"reward ReturnsThis \(name 'returns_this'\) returned inf for 1 of 4"
                                                     r" rollouts \(first: rollout 2, problem 'p1'\)"),
    ([1.0, 0.0, 1.0, 1.0], TypeError, r"reward ReturnsThis \(name 'returns_this'\) returned a list, expected a "
                                      r"torch.Tensor of 4 floats"),
    (torch.ones(3), ValueError, r"reward ReturnsThis .* returned shape \(3,\), expected \(4,\): one value per rollout"),
    (torch.ones(4, 1), ValueError, r"returned shape \(4, 1\), expected \(4,\)"),
    (torch.ones(4, dtype=torch.complex64), TypeError, r"dtype torch.complex64, expected real numbers"),
])
def test_a_reward_returning_the_wrong_thing_is_stopped_naming_its_class(value, error, match):
    with pytest.raises(error, match=match):
        score([Accuracy(), ReturnsThis(value)], reward_batch())


def test_a_nan_reward_for_one_rollout_stops_the_first_call():
    with pytest.raises(ValueError, match=r"reward NaNForOneRollout \(name 'na_n_for_one_rollout'\) returned nan "
                                         r"for 1 of 4 rollouts \(first: rollout 2, problem 'p1'\)"):
        score([Accuracy(), NaNForOneRollout()], reward_batch())
    # Integer and bool rewards are fine and come back as float.
    assert score([ReturnsThis(torch.tensor([1, 0, 1, 1]))], reward_batch())["total"].dtype == torch.float32


# --------------------------------------------------- the step guard, no Trainer
@pytest.fixture
def poison(monkeypatch):
    """``poison(kind, calls)``: make the listed training forwards (0-based, counted from now;
    no-grad passes are not counted) give a NaN loss (``kind="loss"``) or a finite loss with an
    inf gradient (``kind="grad"``)."""
    original = GRPOModule.completion_logprobs

    def arm(kind: str, calls: set[int]):
        count = iter(range(10**6))

        def poisoned(self, rollouts, idx):
            logprobs = original(self, rollouts, idx)
            if not torch.is_grad_enabled() or next(count) not in calls:
                return logprobs
            return logprobs * NAN if kind == "loss" else _inf_grad(logprobs)

        monkeypatch.setattr(GRPOModule, "completion_logprobs", poisoned)
    return arm


class _InfGrad(torch.autograd.Function):
    """Identity forward; an inf gradient backward (the loss stays finite)."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return torch.full_like(grad, INF)


def _inf_grad(x: torch.Tensor) -> torch.Tensor:
    return _InfGrad.apply(x)


def adam_state(opt) -> list[torch.Tensor]:
    return [t.clone() for state in opt.state.values() for t in state.values()]


@pytest.mark.parametrize("kind", ["loss", "grad"])
def test_a_nonfinite_step_is_skipped_counted_and_leaves_the_weights_alone(poison, kind):
    module, opt, sched = bare_module(num_iterations=2)
    rollouts, signal = token_rollouts(), torch.tensor([1.0, -1.0, 0.5, -0.5])
    module.update(rollouts, signal)  # a healthy step first: AdamW has momentum to keep
    before, moments = trainable(module), adam_state(opt)
    poison(kind, {0})  # first inner epoch bad, second healthy
    losses = module.update(rollouts, signal)
    assert losses["train/skipped_nonfinite"] == 1.0 and losses["train/skipped_nonfinite_total"] == 1.0
    assert sched.last_epoch == 4  # the schedule advanced for the skipped step too (global_step does)
    after = trainable(module)
    assert all(t.isfinite().all() for t in after.values())
    assert any(not torch.equal(after[n], before[n]) for n in before)  # the healthy inner epoch trained
    assert module.nonfinite_streak == 0 and module.nonfinite_total == 1

    # The skipped step alone: the weights and AdamW's state are exactly as before it.
    module, opt, sched = bare_module(num_iterations=1)
    module.update(rollouts, signal)
    before, moments = trainable(module), adam_state(opt)
    poison(kind, {0})  # re-armed: counted afresh from here
    assert module.update(rollouts, signal)["train/skipped_nonfinite"] == 1.0
    for name, value in trainable(module).items():
        torch.testing.assert_close(value, before[name], rtol=0, atol=0)
    for got, want in zip(adam_state(opt), moments):
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert all(p.grad is None for p in module.parameters())


def test_a_run_of_nonfinite_steps_stops_with_an_error(poison):
    module, opt, sched = bare_module(num_iterations=1)
    module.max_nonfinite_steps = 2
    rollouts, signal = token_rollouts(), torch.tensor([1.0, -1.0, 0.5, -0.5])
    poison("loss", set(range(10)))
    module.update(rollouts, signal)  # first bad step: skipped
    before = trainable(module)
    with pytest.raises(NonFiniteTrainingError, match=r"2 optimizer steps in a row .* weights were not updated by "
                                                     r"them and are still finite; no checkpoint was written yet"):
        module.update(rollouts, signal)
    assert module.nonfinite_total == 2
    for name, value in trainable(module).items():
        torch.testing.assert_close(value, before[name], rtol=0, atol=0)
    with pytest.raises(ValueError, match="model.max_nonfinite_steps must be >= 1"):
        GRPOModule(max_nonfinite_steps=0)


def test_with_a_grad_scaler_an_inf_gradient_is_left_to_the_scaler_but_a_nan_loss_is_not():
    module, opt, _ = bare_module()
    for p in module.parameters():
        if p.requires_grad:
            p.grad = torch.full_like(p, INF)  # what a 16-mixed overflow looks like before unscaling
    assert not module.gradients_finite(opt, loss_finite=True)  # no scaler: skipped here
    scaler = SimpleNamespace(scaler=object())
    module._trainer = SimpleNamespace(precision_plugin=scaler, world_size=1)
    try:
        assert module.gradients_finite(opt, loss_finite=True)  # the scaler skips it and lowers its scale
        assert not module.gradients_finite(opt, loss_finite=False)
    finally:
        module._trainer = None


def test_the_skipped_step_counts_travel_in_the_checkpoint():
    module, _, _ = bare_module()
    module.nonfinite_total, module.nonfinite_streak, module.nonfinite_since = 5, 2, 40
    checkpoint = {"state_dict": module.state_dict(), "global_step": 42}
    module.on_save_checkpoint(checkpoint)
    assert checkpoint["numerical_health"] == {"skipped_nonfinite": 5, "nonfinite_streak": 2, "nonfinite_since": 40}
    resumed, _, _ = bare_module()
    resumed.on_load_checkpoint(checkpoint)
    assert (resumed.nonfinite_total, resumed.nonfinite_streak, resumed.nonfinite_since) == (5, 2, 40)
    resumed.restore_numerical_health({"state_dict": {}})  # a checkpoint from before the counts: all clear
    assert (resumed.nonfinite_total, resumed.nonfinite_streak, resumed.nonfinite_since) == (0, 0, -1)


@pytest.mark.parametrize("poisoned", ["lora", "base"])
def test_sampling_nan_probabilities_say_whether_weights_or_the_forward_are_to_blame(poisoned):
    module, _, _ = bare_module()
    target = next(p for n, p in module.named_parameters()
                  if (p.requires_grad and "lora_A" in n) or (poisoned == "base" and "embed_tokens" in n))
    name = next(n for n, p in module.named_parameters() if p is target)
    with torch.no_grad():
        target.fill_(NAN if poisoned == "lora" else INF)
    problems = ProblemBatch(["p0"], ["What is 1+1?"], ["2"])
    with pytest.raises(NonFiniteTrainingError) as err:
        module.sample(problems, 2, module.generation)
    message = str(err.value)
    assert message.startswith("sampling at trainer.global_step 0 met NaN/inf next-token probabilities; ")
    if poisoned == "lora":
        assert f"trainable weight {name!r}" in message and "holds NaN/inf" in message
    else:
        assert "the trainable weights are finite, so the forward pass overflows in model.policy.dtype=float32 on cpu" \
            in message
    assert message.endswith("no checkpoint was written yet")
    assert "probability tensor contains" in str(err.value.__cause__)


# ------------------------------------------------------------- short fits
SMALL = ("--data.problems_per_step", "2", "--model.generation.max_new_tokens", "8",
         "--trainer.limit_val_batches", "0")


def with_checkpoints(tmp_path, **replace):
    """The debug config with a checkpoint after every optimizer step in ``tmp_path/ckpt``."""
    callback = ("    - class_path: TrainingHealthMonitor\n"
                "    - class_path: lightning.pytorch.callbacks.ModelCheckpoint\n"
                f"      init_args: {{dirpath: {tmp_path / 'ckpt'}, every_n_train_steps: 1, save_top_k: -1}}")
    return config_in(tmp_path, "debug/grpo.yaml", **{"    - class_path: TrainingHealthMonitor": callback}, **replace)


def poison_from(monkeypatch, first_step: int) -> None:
    """From optimizer step ``first_step`` on, every training forward gives NaN log-probs."""
    original = GRPOModule.completion_logprobs

    def poisoned(self, rollouts, idx):
        logprobs = original(self, rollouts, idx)
        return logprobs * NAN if torch.is_grad_enabled() and self.global_step >= first_step else logprobs

    monkeypatch.setattr(GRPOModule, "completion_logprobs", poisoned)


@pytest.mark.slow
def test_a_run_of_nan_steps_stops_naming_the_last_checkpoint(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    poison_from(monkeypatch, 1)
    with pytest.raises(NonFiniteTrainingError) as err:
        fit(with_checkpoints(tmp_path), *SMALL, "--trainer.max_steps", "6", "--model.max_nonfinite_steps", "2")
    message = str(err.value)
    assert message.startswith("2 optimizer steps in a row (trainer.global_step 1 to 2) had a NaN/inf loss")
    # The newest checkpoint, written after the first skipped step (this one, or a `last.ckpt` of the same step).
    named = re.search(r"the last good checkpoint is (\S+) \(resume with --ckpt_path \1\)", message).group(1)
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir() if p.name != LOCK_NAME) == ["epoch=0-step=1.ckpt",
                                                                                             "epoch=0-step=2.ckpt"]
    good, skipped = torch.load(tmp_path / "ckpt" / "epoch=0-step=1.ckpt", weights_only=False), \
        torch.load(named, weights_only=False)
    assert skipped["global_step"] == 2
    assert skipped["numerical_health"] == {"skipped_nonfinite": 1, "nonfinite_streak": 1, "nonfinite_since": 1}
    for name, value in skipped["state_dict"].items():  # the skipped step left every weight as it was
        assert value.isfinite().all()
        torch.testing.assert_close(value, good["state_dict"][name], rtol=0, atol=0)


class NaNForOneRolloutPlugin(NaNForOneRollout):
    """The same bad plugin, loaded from YAML by class_path."""


@pytest.mark.slow
def test_a_nan_reward_plugin_stops_the_first_step_before_anything_is_written(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    config = with_checkpoints(tmp_path, **{"    - class_path: Accuracy\n": "    - class_path: Accuracy\n"
                                           f"    - class_path: {__name__}.NaNForOneRolloutPlugin\n"})
    with pytest.raises(ValueError, match=r"reward NaNForOneRolloutPlugin \(name 'na_n_for_one_rollout_plugin'\) "
                                         r"returned nan for 1 of 8 rollouts"):
        fit(config, *SMALL, "--trainer.max_steps", "2")
    # The run's folder lock is all that is there: no checkpoint, no adapter.
    assert [p.name for p in (tmp_path / "ckpt").iterdir()] == [LOCK_NAME] and not list((tmp_path / "runs").rglob("adapter*"))


@pytest.fixture(scope="module")
def poisoned_one_step_run(tmp_path_factory):
    """``max_steps 1`` with every training forward NaN and only the accuracy reward (a random
    model is never right: every group all wrong); KL stays on, so the pass does run."""
    tmp_path = tmp_path_factory.mktemp("poisoned")
    config = with_checkpoints(tmp_path, **{"    - class_path: RegexMatch\n"
                                           "      init_args: {pattern: \"[0-9]\", weight: 0.5, name: has_digit}\n": ""})
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.chdir(ROOT)
        poison_from(monkeypatch, 0)
        cli = fit(config, *SMALL, "--trainer.max_steps", "1")
    return SimpleNamespace(cli=cli, tmp_path=tmp_path, log_dir=cli.trainer.log_dir)


@pytest.mark.slow
def test_max_steps_1_with_a_nan_step_saves_and_exports_only_finite_untouched_weights(poisoned_one_step_run):
    run = poisoned_one_step_run
    assert run.cli.trainer.global_step == 1 and run.cli.model.nonfinite_total == 1
    adapter = load_file(f"{run.log_dir}/adapter/adapter_model.safetensors")
    assert adapter and all(t.isfinite().all() for t in adapter.values())
    assert all(t.abs().sum() == 0 for name, t in adapter.items() if "lora_B" in name)  # LoRA B still its init 0
    checkpoint = torch.load(run.tmp_path / "ckpt" / "epoch=0-step=1.ckpt", weights_only=False)
    assert all(t.isfinite().all() for t in checkpoint["state_dict"].values())
    rows = list(csv.DictReader(open(f"{run.log_dir}/metrics.csv")))
    assert [float(r["train/skipped_nonfinite"]) for r in rows if r.get("train/skipped_nonfinite")] == [1.0]


@pytest.mark.slow
def test_a_checkpoint_with_nan_weights_is_refused_and_not_written(poisoned_one_step_run, tmp_path):
    trainer, module = poisoned_one_step_run.cli.trainer, poisoned_one_step_run.cli.model
    name, weight = next((n, p) for n, p in module.named_parameters() if p.requires_grad and "lora_A" in n)
    with torch.no_grad():
        weight[0, 0] = NAN
    target = tmp_path / "nan.ckpt"
    with pytest.raises(NonFiniteWeightsError, match=rf"refusing to write the checkpoint at step 1: trainable weight "
                                                    rf"'{name}' holds NaN/inf, so nothing was written"):
        trainer.save_checkpoint(target)
    assert not target.exists()


@pytest.mark.slow
def test_groups_without_signal_are_logged_and_the_monitor_names_the_cause(poisoned_one_step_run):
    rows = list(csv.DictReader(open(f"{poisoned_one_step_run.log_dir}/metrics.csv")))
    step = next(r for r in rows if r.get("groups/total"))
    assert float(step["groups/total"]) == 2.0
    assert float(step["groups/all_wrong"]) == 2.0 and float(step["groups/zero_spread"]) == 2.0
    assert float(step["groups/all_correct"]) == 0.0 and "groups/all_truncated" in step
    monitor = next(c for c in poisoned_one_step_run.cli.trainer.callbacks if type(c).__name__ == "TrainingHealthMonitor")
    zero = [w for w in monitor.warnings if w.startswith("zero_spread")]
    assert len(zero) == 1 and "100% of groups all wrong" in zero[0] and "the task is too hard" in zero[0]
