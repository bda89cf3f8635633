"""Tiny offline models: spec parsing, from_pretrained round trip, and the stop-rate knob.

Run: pytest tests/test_tiny.py -q
"""

from __future__ import annotations

import pytest
import torch

from lapo_lightning.fast_rollout import CompactDecode
from lapo_lightning.policy import PolicyConfig, load_policy
from lapo_lightning.rollout import GenerationConfig
from lapo_lightning.models.tiny import resolve_model
from lapo_lightning.types import ProblemBatch


def lengths(spec: str) -> torch.Tensor:
    model, tokenizer = load_policy(PolicyConfig(model=spec))
    prompts = ["What is 1 + 1?", "Add 3 and 4."]
    torch.manual_seed(0)
    batch = CompactDecode().sample(model, tokenizer, prompts, ProblemBatch(["a", "b"], prompts, ["2", "7"]), 8,
                                   GenerationConfig(max_new_tokens=32))
    assert not (batch.completion_ids[batch.completion_mask] == tokenizer.pad_token_id).any()
    return batch.lengths


def test_stop_rate_spreads_lengths_or_never_stops():
    varied = lengths("tiny:llama-e0.4")
    assert varied.min() < 8 and varied.max() > 24, varied.tolist()
    assert (lengths("tiny:llama-e-5") == 32).all()


def test_unknown_spec_names_the_key():
    with pytest.raises(ValueError, match="model.policy.model"):
        resolve_model("tiny:gpt9")


def test_specs_build_distinct_cached_folders():
    assert resolve_model("tiny:qwen2-h32-l1") != resolve_model("tiny:qwen2-h32-l1-e0.5")
    assert resolve_model("tiny:qwen2-h32-l1") == resolve_model("tiny:qwen2-h32-l1")  # built once, then reused


def test_building_a_model_leaves_the_callers_random_state_alone(tmp_path):
    # A run on an empty cache builds its model inside fit: it must start from the same
    # random state (LoRA init, sampling) as a run that finds the model cached.
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    resolve_model("tiny:llama-h32-l1", cache_dir=tmp_path)
    assert (tmp_path / "llama-h32-l1" / "config.json").is_file()
    assert torch.equal(torch.rand(3), expected)
