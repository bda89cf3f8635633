"""ThinkPrune: capped-accuracy reward and the shrinking generation cap. Run: pytest tests/methods/test_thinkprune.py"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from lapo_lightning.methods.thinkprune import (CappedAccuracy, CapSchedule, TruncatedIsWrong, capped_accuracy,
                                               scheduled_cap)
from lapo_lightning.rewards import score
from lapo_lightning.rollout import GenerationConfig
from lapo_lightning.types import ProblemBatch, RolloutBatch


def rollouts(correct, truncated, group_size) -> RolloutBatch:
    n = len(correct)
    b = n // group_size
    problems = ProblemBatch([f"p{i}" for i in range(b)], ["q"] * b, ["1"] * b)
    return RolloutBatch(
        problems=problems, group_index=torch.arange(b).repeat_interleave(group_size),
        prompt_ids=torch.zeros(n, 1, dtype=torch.long), prompt_mask=torch.ones(n, 1, dtype=torch.bool),
        completion_ids=torch.zeros(n, 4, dtype=torch.long), completion_mask=torch.ones(n, 4, dtype=torch.bool),
        texts=[""] * n, truncated=torch.tensor(truncated), correct=torch.tensor(correct),
    )


def test_capped_accuracy_by_hand():
    """1[correct and not truncated]; G = 3.

    p0 no correct (one truncated):        0, 0, 0.
    p1 single correct, finished:          1, 0, 0.
    p2 ties: all correct, all finished:   1, 1, 1.
    p3 all truncated, two "correct" (the verifier found a boxed answer in the cut text): 0, 0, 0.
    p4 correct but truncated vs finished: 0, 1, 0.
    """
    correct = [False, False, False, True, False, False, True, True, True, True, True, False, True, True, False]
    truncated = [False, True, False, False, False, False, False, False, False, True, True, True, True, False, False]
    batch = rollouts(correct, truncated, 3)
    expected = [0.0, 0, 0, 1, 0, 0, 1, 1, 1, 0, 0, 0, 0, 1, 0]
    assert CappedAccuracy()(batch).tolist() == expected
    assert TruncatedIsWrong is CappedAccuracy
    assert score([CappedAccuracy(weight=2.0)], batch)["total"].tolist() == [2 * v for v in expected]


def test_truncated_score_option():
    """truncated_score = -1: correct/finished 1, wrong/finished 0, truncated -1 whether "correct" or not."""
    got = capped_accuracy(torch.tensor([True, False, True, False]), torch.tensor([False, False, True, True]), -1.0)
    assert got.tolist() == [1.0, 0.0, -1.0, -1.0]
    with pytest.raises(ValueError, match="CappedAccuracy: truncated_score must be a finite number"):
        CappedAccuracy(truncated_score=float("nan"))


def test_schedule_step_boundaries():
    """caps [4096, 3072, 2048], 10 steps per round: 0-9 -> 4096, 10-19 -> 3072, 20 onwards -> 2048."""
    caps = [4096, 3072, 2048]
    got = {s: scheduled_cap(caps, 10, s) for s in (0, 9, 10, 19, 20, 21, 1000)}
    assert got == {0: 4096, 9: 4096, 10: 3072, 19: 3072, 20: 2048, 21: 2048, 1000: 2048}
    assert [scheduled_cap([64], 1, s) for s in range(3)] == [64, 64, 64]


def test_callback_sets_the_module_cap_from_global_step():
    """A stand-in module holding a GenerationConfig and a stand-in trainer at given steps (as after a
    resume: no earlier batch ran); every_n_steps 5, caps [300, 200, 100]: step 7 -> 200, step 4 ->
    300, step 12 -> 100. Other generation settings are kept; the original config object is not
    mutated (a shared default must keep its cap)."""
    shared = GenerationConfig(max_new_tokens=512, temperature=0.7, top_p=0.9)
    module = SimpleNamespace(generation=shared)
    cb = CapSchedule(caps=[300, 200, 100], every_n_steps=5)
    for step, cap in [(7, 200), (4, 300), (12, 100), (5, 200), (10, 100)]:
        cb.on_train_batch_start(SimpleNamespace(global_step=step), module, None, 0)
        assert module.generation.max_new_tokens == cap, step
    assert (module.generation.temperature, module.generation.top_p) == (0.7, 0.9)
    assert shared.max_new_tokens == 512


def test_callback_defaults_and_bad_settings():
    assert CapSchedule().caps == [4096, 3072, 2048]
    with pytest.raises(ValueError, match=r"CapSchedule\]\.caps: need a non-empty list"):
        CapSchedule(caps=[])
    with pytest.raises(ValueError, match=r"CapSchedule\]\.caps"):
        CapSchedule(caps=[100, 0])
    with pytest.raises(ValueError, match=r"CapSchedule\]\.every_n_steps: must be an integer >= 1"):
        CapSchedule(caps=[100], every_n_steps=0)
