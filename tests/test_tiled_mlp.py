"""Decoder MLPs tiled over positions while gradients are on (lapo_lightning/tiled_mlp.py): the
same loss and LoRA gradients as the whole MLP to 1e-5, with and without gradient checkpointing,
and no MLP intermediate wider than one chunk of positions in the training pass."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close
from torch.utils._python_dispatch import TorchDispatchMode

from lapo_lightning.policy import LoraSettings, PolicyConfig, load_policy
from lapo_lightning.tiled_mlp import tile_mlps
from lapo_lightning.models.tiny import save_tiny

CHUNK = 7  # positions per chunk: 2 rows x 20 tokens = 40 positions -> 6 chunks, the last one short


class WidestMlpRows(TorchDispatchMode):
    """Records the most positions any activation of the MLP's intermediate width held (weights
    and their gradients, which have a parameter's shape, do not count)."""

    def __init__(self, model) -> None:
        super().__init__()
        self.width, self.rows = model.config.intermediate_size, 0
        self.weights = {tuple(p.shape) for p in model.parameters()}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(t, torch.Tensor) and t.dim() >= 2 and t.shape[-1] == self.width \
                    and tuple(t.shape) not in self.weights:
                self.rows = max(self.rows, t.shape[:-1].numel())
        return out


def policy(tmp_path, arch: str, checkpointing: bool):
    folder = save_tiny(tmp_path / arch, arch, seed=5)
    model, _ = load_policy(PolicyConfig(model=str(folder), lora=LoraSettings(r=4), gradient_checkpointing=checkpointing))
    model.train()
    with torch.no_grad():  # LoRA B starts at 0: give every adapter a gradient to its A
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    return model


def loss_and_grads(model, ids):
    model.zero_grad()
    logits = model(input_ids=ids, use_cache=False).logits
    loss = logits.float().log_softmax(-1).gather(-1, ids[..., None]).mean()
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
@pytest.mark.parametrize("checkpointing", [False, True], ids=["plain", "checkpointed"])
def test_tiled_mlps_give_the_same_loss_and_gradients(tmp_path, arch, checkpointing):
    model = policy(tmp_path, arch, checkpointing)
    ids = torch.randint(0, model.config.vocab_size, (2, 20), generator=torch.Generator().manual_seed(0))
    want_loss, want = loss_and_grads(model, ids)
    with WidestMlpRows(model) as whole:
        loss_and_grads(model, ids)
    assert whole.rows == 40  # untiled: every position's intermediates at once

    assert tile_mlps(model, CHUNK) == model.config.num_hidden_layers
    assert tile_mlps(model, CHUNK) == 0  # idempotent
    with WidestMlpRows(model) as tiled:
        got_loss, got = loss_and_grads(model, ids)
    assert tiled.rows == CHUNK
    assert_close(got_loss, want_loss, rtol=1e-5, atol=1e-5)
    assert got.keys() == want.keys() and any("mlp" in n for n in got)
    for name in want:
        assert_close(got[name], want[name], rtol=1e-5, atol=1e-5, msg=name)
    with torch.no_grad(), WidestMlpRows(model) as no_grad:  # generation and reference passes: untouched
        model(input_ids=ids, use_cache=False)
    assert no_grad.rows == 40


def test_null_leaves_the_model_as_it_is(tmp_path):
    model = policy(tmp_path, "llama", False)
    assert tile_mlps(model, None) == 0
    assert not any(getattr(m, "lapo_tiled", False) for m in model.modules())
