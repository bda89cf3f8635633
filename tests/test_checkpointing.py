"""The checkpoint plumbing of ``lapo fit`` without a model: ``--ckpt_path last`` resolution,
atomic saves under a full disk or a read-only folder, and ``prepare_fit`` (the default
checkpoint plugin, stale temp files, the warning on a fresh start over old checkpoints).
The kill-point and mismatch tests on real runs are in tests/test_resume.py.

Run: pytest tests/test_checkpointing.py -q (seconds, mostly imports).
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import warnings
from types import SimpleNamespace

import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

from lapo_lightning.safety import atomic
from lapo_lightning.safety.checkpointing import AtomicCheckpointIO, CheckpointError, prepare_fit, resolve_last


# ------------------------------------------------------------------------- --ckpt_path last
def test_last_without_last_checkpoint_refuses_naming_the_newest(tmp_path):
    for step in (3, 6):
        path = tmp_path / f"epoch=0-step={step}.ckpt"
        path.write_bytes(b"x")
        os.utime(path, (1000 + step,) * 2)
    with pytest.raises(CheckpointError) as err:
        resolve_last([tmp_path])
    newest = tmp_path / "epoch=0-step=6.ckpt"
    assert str(err.value) == (
        f"--ckpt_path last: {tmp_path} holds 2 checkpoints but no last.ckpt (they were saved without "
        f"save_last: true); the newest is {newest}: resume from it with --ckpt_path {newest}")


def test_last_picks_the_newest_last_checkpoint_and_none_in_an_empty_folder(tmp_path):
    assert resolve_last([tmp_path / "missing"]) is None and resolve_last([tmp_path]) is None
    for name, mtime in (("last.ckpt", 1000), ("last-v1.ckpt", 2000), ("epoch=0-step=9.ckpt", 3000)):
        (tmp_path / name).write_bytes(b"x")
        os.utime(tmp_path / name, (mtime, mtime))
    assert resolve_last([tmp_path]) == tmp_path / "last-v1.ckpt"


# -------------------------------------------------------------- full disk, read-only folder
def test_disk_full_during_a_checkpoint_save_keeps_the_old_file_and_names_the_folder(tmp_path, monkeypatch):
    path = tmp_path / "ckpt" / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"global_step": 1}, path)
    before = path.read_bytes()

    def half_then_full(obj, f):
        f.write(b"PK\x03\x04 half a checkpoint")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", half_then_full)
    with pytest.raises(atomic.ArtefactWriteError) as err:
        AtomicCheckpointIO().save_checkpoint({"global_step": 2}, path)
    assert str(err.value) == (f"cannot write the checkpoint {path}: No space left on device; the disk holding "
                              f"{path.parent} is full: free space, then resume with --ckpt_path last")
    assert err.value.errno == errno.ENOSPC
    assert path.read_bytes() == before and sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt"]


def test_read_only_folder_during_a_save_names_the_folder(tmp_path, monkeypatch):
    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(atomic, "open", read_only, raising=False)
    path = tmp_path / "epoch=0-step=3.ckpt"
    with pytest.raises(atomic.ArtefactWriteError, match=rf"^cannot write the checkpoint {path}: Read-only file system; "
                                                        rf"{tmp_path} is not writable: fix its permissions"):
        AtomicCheckpointIO().save_checkpoint({"global_step": 3}, path)
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------ prepare_fit
def fake_trainer(folder, checkpoint_io=None):
    return SimpleNamespace(strategy=SimpleNamespace(checkpoint_io=checkpoint_io or TorchCheckpointIO()),
                           checkpoint_callbacks=[ModelCheckpoint(dirpath=str(folder), save_last=True)], callbacks=[])


def test_prepare_fit_makes_saves_atomic_unless_the_user_chose_a_plugin(tmp_path):
    trainer = fake_trainer(tmp_path)
    assert prepare_fit(trainer, object(), None) is None
    assert type(trainer.strategy.checkpoint_io) is AtomicCheckpointIO

    class Mine(TorchCheckpointIO):
        pass

    trainer = fake_trainer(tmp_path, Mine())
    prepare_fit(trainer, object(), None)
    assert type(trainer.strategy.checkpoint_io) is Mine


def test_prepare_fit_cleans_dead_writers_temps_and_warns_on_a_fresh_start_over_checkpoints(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    (tmp_path / f".epoch=0-step=6.ckpt.tmp-{proc.pid}").write_bytes(b"half")
    (tmp_path / "epoch=0-step=3.ckpt").write_bytes(b"x")
    with pytest.warns(UserWarning, match=rf"starting from step 0, but {tmp_path} already holds 1 checkpoints: "
                                         "to continue that run instead, pass --ckpt_path last"):
        prepare_fit(fake_trainer(tmp_path), object(), None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epoch=0-step=3.ckpt"]


def test_prepare_fit_resolves_last_and_checks_the_file(tmp_path):
    last = tmp_path / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"state_dict": {}, "global_step": 3}, last)
    assert prepare_fit(fake_trainer(tmp_path), object(), "last") == str(last)
    last.write_bytes(last.read_bytes()[:100])  # damaged afterwards (a disk fault)
    with pytest.raises(CheckpointError, match=rf"--ckpt_path {last}: not a checkpoint archive .*; "
                                              rf"no other good checkpoint in {tmp_path}$"):
        prepare_fit(fake_trainer(tmp_path), object(), "last")


# ------------------------------------------------------------------------------ run identity
def policy(**kw):
    lora = SimpleNamespace(r=8, alpha=16, target_modules="all-linear")
    return SimpleNamespace(model="tiny:llama", dtype="float32", load_in_4bit=False, lora=lora, adapter=None, **kw)


def test_identity_takes_the_lora_settings_of_a_starting_adapter(tmp_path):
    from lapo_lightning.safety.run_identity import identity

    (tmp_path / "adapter_config.json").write_text('{"r": 4, "lora_alpha": 8, "target_modules": ["v_proj", "q_proj"]}')
    module = SimpleNamespace(policy_config=policy(), rewards=[])
    module.policy_config.adapter = str(tmp_path)
    found = identity(module, [])
    assert (found["lora_r"], found["lora_alpha"], found["lora_target_modules"]) == (4, 8, ["q_proj", "v_proj"])


def test_differences_name_each_changed_field_and_leave_all_linear_to_the_shapes():
    from lapo_lightning.safety.run_identity import differences

    base = {"base_model": "a", "lora_r": 8, "lora_target_modules": "all-linear", "rewards": ["Accuracy"]}
    assert differences(base, dict(base)) == []
    assert differences(base, {**base, "lora_target_modules": ["q_proj"]}) == []  # expanded by peft: shapes decide
    assert differences({**base, "lora_target_modules": ["k_proj"]}, {**base, "lora_target_modules": ["q_proj"]}) == [
        "lora target modules (model.policy.lora.target_modules (or the adapter's)): checkpoint ['k_proj'], "
        "config ['q_proj']"]
    assert differences(base, {**base, "base_model": "b", "lora_r": 4}) == [
        "base model (model.policy.model): checkpoint 'a', config 'b'",
        "lora r (model.policy.lora.r (or the adapter's r)): checkpoint 8, config 4"]
    assert differences({"lora_r": 8}, {**base, "lora_r": 8}) == []  # fields an older checkpoint lacks are not compared


# --------------------------------------------------------------------------- shipped configs
def test_every_shipped_training_config_saves_a_last_checkpoint():
    """So that ``lapo fit --config X --ckpt_path last`` resumes any of them (the demo's SFT phase
    is exempt: it runs in minutes and `lapo demo` redoes it)."""
    import yaml

    from clitools import ROOT, training_configs

    configs = [p for p in training_configs() if p != ROOT / "configs/demo/sft.yaml"]
    assert len(configs) >= 9
    for path in configs:
        callbacks = yaml.safe_load(path.read_text())["trainer"].get("callbacks") or []
        savers = [c for c in callbacks if c["class_path"].endswith("ModelCheckpoint")]
        assert savers and all(c["init_args"].get("save_last") is True for c in savers), path


def test_checkpoint_cadence_off_the_steps_per_batch_is_warned_with_the_cadence_it_gets():
    from lapo_lightning.safety.checkpointing import unaligned_checkpoint_warning

    with pytest.warns(UserWarning, match="every_n_train_steps=50 is not a multiple of the 8 .* only every 200 steps"):
        unaligned_checkpoint_warning([ModelCheckpoint(every_n_train_steps=50)], 8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        unaligned_checkpoint_warning([ModelCheckpoint(every_n_train_steps=48), ModelCheckpoint()], 8)
        unaligned_checkpoint_warning([ModelCheckpoint(every_n_train_steps=3)], 1)
