"""DAPO soft overlong punishment on hand-built rollout batches. Run: pytest tests/methods/test_dapo.py -q"""

from __future__ import annotations

import pytest
import torch

from lapo_lightning.methods.dapo import OverlongPenalty, overlong_penalty
from method_batches import rollouts


def test_three_pieces_of_the_formula():
    """L_max 100, L_cache 20 -> free up to 80.
    L = 10, 80 -> 0; L = 85 -> (80 - 85)/20 = -0.25; L = 90 -> -0.5; L = 99 -> -0.95;
    L = 100 -> -1; L = 130 (> L_max) -> -1."""
    lengths = torch.tensor([10, 80, 85, 90, 99, 100, 130])
    got = overlong_penalty(lengths, max_length=100, cache_length=20)
    assert got.tolist() == pytest.approx([0.0, 0.0, -0.25, -0.5, -0.95, -1.0, -1.0])


def test_reward_ignores_correctness_and_groups():
    """Same length, same penalty, whatever the verdict or group: L_max 100, L_cache 20,
    lengths [90, 90, 70] -> [-0.5, -0.5, 0]; no rollout truncated."""
    batch = rollouts([90, 90, 70], [True, False, False], [0, 1, 1])
    assert OverlongPenalty(max_length=100, cache_length=20)(batch).tolist() == pytest.approx([-0.5, -0.5, 0.0])


def test_truncated_rollouts_get_minus_one_unless_switched_off():
    """A chunk limit cut row 0 at 60 tokens (free region: 60 <= 80) and row 1 at 90.
    penalize_truncated (default): [-1, -1, 0]; off: the length alone -> [0, -0.5, 0]."""
    batch = rollouts([60, 90, 50], [False, False, True], [0, 0, 0], truncated=[True, True, False])
    assert OverlongPenalty(max_length=100, cache_length=20)(batch).tolist() == [-1.0, -1.0, 0.0]
    off = OverlongPenalty(max_length=100, cache_length=20, penalize_truncated=False)
    assert off(batch).tolist() == pytest.approx([0.0, -0.5, 0.0])


def test_all_truncated_group_and_ties():
    """Group 0: all three truncated at the cap 100 -> -1 each (also what the formula gives at
    L = L_max). Group 1: ties at 90, not truncated -> -0.5 each, no group effect."""
    batch = rollouts([100, 100, 100, 90, 90], [False] * 5, [0, 0, 0, 1, 1],
                     truncated=[True, True, True, False, False])
    got = OverlongPenalty(max_length=100, cache_length=20, penalize_truncated=False)(batch)
    assert got.tolist() == pytest.approx([-1.0, -1.0, -1.0, -0.5, -0.5])
    assert OverlongPenalty(max_length=100, cache_length=20)(batch).tolist() == pytest.approx(got.tolist())


def test_default_cache_is_a_fifth_of_max_length():
    """cache_length None -> max_length // 5 (paper: 4096 of 20480): 20480 -> 4096, 1024 -> 204.
    With L_max 1000 (cache 200): L 900 -> (800 - 900)/200 = -0.5."""
    assert OverlongPenalty(max_length=20480).cache_length == 4096
    assert OverlongPenalty(max_length=1024).cache_length == 204
    batch = rollouts([900], [True], [0])
    assert OverlongPenalty(max_length=1000)(batch).tolist() == [-0.5]


def test_bad_settings_name_the_key():
    with pytest.raises(TypeError):
        OverlongPenalty()  # max_length is required: it must match model.generation.max_new_tokens
    with pytest.raises(ValueError, match="max_length must be a whole number .*max_new_tokens"):
        OverlongPenalty(max_length=0)
    with pytest.raises(ValueError, match=r"cache_length must be .*\[1, max_length=100\], got 200"):
        OverlongPenalty(max_length=100, cache_length=200)
    with pytest.raises(ValueError, match="cache_length"):
        OverlongPenalty(max_length=100, cache_length=0)
