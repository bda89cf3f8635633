"""A run killed anywhere resumes exactly; checkpoints, tables and adapters are whole or absent.

Kill-point tests: real ``python cli.py fit`` subprocesses on the debug configs, killed with
SIGKILL at chosen moments by ``kill_plugins.KillPoint`` (during sampling, inside the optimizer
step, while a checkpoint, the length table or the adapter is written), each resumed with the
documented command ``lapo fit --config X --ckpt_path last``; the final length table, refined
targets and adapter equal those of one uninterrupted run per stage (module-scoped fixtures).
In-process tests on those runs' checkpoints: a mismatched checkpoint (other base model, LoRA
rank, stage), a corrupt or non-checkpoint file. Unit tests without runs: tests/test_checkpointing.py. Run: pytest tests/test_resume.py -q (9 subprocess runs, about
four minutes on 2 busy cores).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from clitools import ROOT, config_in, fit
from lapo_lightning.safety.checkpointing import CheckpointError, load_checkpoint
from lapo_lightning.cli.fit import ConfigProblems
from lapo_lightning.length_table import LengthTable
from lapo_lightning.safety.run_identity import CheckpointMismatchError
from lapo_lightning.models.tiny import resolve_model

pytestmark = pytest.mark.slow
TESTS = Path(__file__).resolve().parent
PLUGIN = {"    - class_path: TrainingHealthMonitor\n":
          "    - class_path: TrainingHealthMonitor\n    - class_path: kill_plugins.KillPoint\n"}
STAGE1, STAGE2 = "runs/debug_stage1", "runs/debug_stage2"
# Stage 2 on replayed rollouts (the answer in 2 of 3 slots, from hash(id)): a random model
# solves too little in 6 steps for Eq. 8 to act, and the refined targets must differ from the table.
REPLAY = {"  reference:\n": "  sampler: {class_path: ddp_plugins.ReplaySampler}\n  reference:\n"}


def lapo_fit(config: Path, *extra: str, kill: str | None = None) -> subprocess.CompletedProcess:
    """``python cli.py fit --config <config> --ckpt_path last [extra...]`` in its own session,
    killed at ``kill`` (see kill_plugins) when given."""
    env = {**os.environ, "PYTHONPATH": str(TESTS), "OMP_NUM_THREADS": "1"}
    env.pop("LAPO_KILL", None)
    if kill:
        env["LAPO_KILL"] = kill
    proc = subprocess.run([sys.executable, "cli.py", "fit", "--config", str(config), "--ckpt_path", "last", *extra],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, start_new_session=True)
    expected = -9 if kill else 0
    assert proc.returncode == expected, f"rc {proc.returncode} (kill {kill}):\n{proc.stderr[-3000:]}"
    return proc


def killable(folder: Path, name: str, **replace: str) -> Path:
    return config_in(folder, name, **PLUGIN, **replace)


def temp_entries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if ".tmp-" in p.name or ".old-" in p.name)


def adapter_weights(folder: Path) -> dict:
    return load_file(folder / "adapter_model.safetensors")


def global_step(path: Path) -> int:
    return torch.load(path, map_location="cpu", weights_only=True)["global_step"]


@pytest.fixture(scope="module")
def stage1_reference(tmp_path_factory) -> Path:
    """One uninterrupted debug stage-1 run (24 problems, 6 steps, checkpoints at 3 and 6)."""
    resolve_model("tiny:llama")
    folder = tmp_path_factory.mktemp("stage1_reference")
    proc = lapo_fit(killable(folder, "debug/stage1.yaml"))
    # `--ckpt_path last` on a fresh folder: says so and starts from step 0.
    assert f"--ckpt_path last: no checkpoint in {folder / STAGE1 / 'checkpoints'}: starting from step 0" \
        in proc.stdout + proc.stderr
    return folder


@pytest.fixture(scope="module")
def stage2_reference(stage1_reference, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("stage2_reference")
    shutil.copytree(stage1_reference / STAGE1, folder / STAGE1)
    lapo_fit(killable(folder, "debug/stage2.yaml", **REPLAY))
    return folder


# ----------------------------------------------------------------------------- kill points
def test_stage1_killed_while_writing_each_artefact_then_resumed_equals_the_uninterrupted_run(stage1_reference, tmp_path):
    config, run = killable(tmp_path, "debug/stage1.yaml"), tmp_path / STAGE1
    checkpoints, table_path = run / "checkpoints", run / "length_table.json"

    lapo_fit(config, kill="write@epoch=0-step=6.ckpt")  # the step-6 checkpoint written, not yet renamed
    assert sorted(p.name for p in checkpoints.iterdir() if p.suffix == ".ckpt") == ["epoch=0-step=3.ckpt", "last.ckpt"]
    assert global_step(checkpoints / "last.ckpt") == 3
    assert temp_entries(checkpoints) and temp_entries(checkpoints)[0].startswith(".epoch=0-step=6.ckpt.tmp-")
    table = LengthTable.load(table_path)  # never ahead of the newest checkpoint, and marked unfinished
    assert (table.metadata["step"], table.complete, len(table.entries)) == (3, False, 12)

    lapo_fit(config, kill="write@length_table.json")  # resumed from 3; killed writing the final table
    assert global_step(checkpoints / "last.ckpt") == 6 and not temp_entries(checkpoints)  # leftover cleaned
    assert LengthTable.load(table_path).complete is False and temp_entries(run)  # old table whole, temp left

    lapo_fit(config, kill="write@adapter")  # resumed from 6: writes the table, killed publishing the adapter
    assert LengthTable.load(table_path).complete is True
    assert not (run / "adapter").exists() and temp_entries(run)[0].startswith(".adapter.tmp-")

    lapo_fit(config)  # resumed from 6: finishes
    reference = LengthTable.load(stage1_reference / STAGE1 / "length_table.json")
    resumed = LengthTable.load(table_path)
    assert len(reference.entries) == 24 and resumed.entries == reference.entries
    assert resumed.metadata["step"] == reference.metadata["step"] == 6 and resumed.complete is True
    assert temp_entries(run) == []
    expected, got = adapter_weights(stage1_reference / STAGE1 / "adapter"), adapter_weights(run / "adapter")
    assert expected.keys() == got.keys() and all(torch.equal(expected[k], got[k]) for k in expected)
    assert (run / "adapter/tokenizer_config.json").is_file() and (run / "adapter/lapo_prompt.json").is_file()


def test_stage2_killed_in_sampling_then_in_the_optimizer_step_resumes_to_the_same_refined_targets(
        stage2_reference, tmp_path):
    shutil.copytree(stage2_reference / STAGE1, tmp_path / STAGE1)
    config, last = killable(tmp_path, "debug/stage2.yaml", **REPLAY), tmp_path / STAGE2 / "checkpoints/last.ckpt"
    lapo_fit(config, kill="sampling@4")  # completions of step 4 sampled, then SIGKILL
    assert global_step(last) == 3
    lapo_fit(config, kill="optimizer@4")  # resumed from 3: step 4's weights changed in memory, then SIGKILL
    assert global_step(last) == 3
    lapo_fit(config)
    reference = LengthTable.load(stage2_reference / STAGE2 / "length_table_refined.json")
    resumed = LengthTable.load(tmp_path / STAGE2 / "length_table_refined.json")
    assert resumed.entries == reference.entries and resumed.complete is True
    for key in ("step", "targets_shrunk", "newly_solved"):
        assert resumed.metadata[key] == reference.metadata[key], key
    assert reference.metadata["targets_shrunk"] + reference.metadata["newly_solved"] > 0, "Eq. 8 must act"


def test_stage2_killed_between_two_updates_of_one_generation_resumes_to_the_uninterrupted_run(
        stage1_reference, tmp_path):
    """steps_per_generation 2 (3 generations of 8 problems, checkpoints between generations):
    killed after the first of generation 2's two updates, the resumed run samples that
    generation again, deals the same mini-batches and ends with the refined targets and the
    adapter of one uninterrupted k = 2 run."""
    k2, every2 = ("--model.grpo.steps_per_generation", "2"), {"every_n_train_steps: 3": "every_n_train_steps: 2"}
    runs = {}
    for name in ("uninterrupted", "killed"):
        folder = runs[name] = tmp_path / name
        shutil.copytree(stage1_reference / STAGE1, folder / STAGE1)
        config = killable(folder, "debug/stage2.yaml", **REPLAY, **every2)
        if name == "killed":
            lapo_fit(config, *k2, kill="optimizer@2")  # step 2 = generation 2's first update, in memory
            assert global_step(folder / STAGE2 / "checkpoints/last.ckpt") == 2
        lapo_fit(config, *k2)
    reference, resumed = (LengthTable.load(runs[n] / STAGE2 / "length_table_refined.json") for n in runs)
    assert resumed.entries == reference.entries and resumed.complete and resumed.metadata["step"] == 6
    assert reference.metadata["targets_shrunk"] + reference.metadata["newly_solved"] > 0, "Eq. 8 must act"
    expected, got = (adapter_weights(runs[n] / STAGE2 / "adapter") for n in runs)
    assert expected.keys() == got.keys() and all(torch.equal(expected[k], got[k]) for k in expected)


# ------------------------------------------------------------------ mismatched checkpoints
def refused(config: Path, *extra: str, capsys) -> list[str]:
    """``lapo fit`` refused before loading weights: exit status 2 and its one-line problems (also on stderr)."""
    with pytest.raises(ConfigProblems) as err:
        fit(config, *extra)
    assert err.value.code == 2
    assert capsys.readouterr().err.endswith("".join(f"  {line}\n" for line in err.value.problems))
    return err.value.problems


def test_checkpoint_with_another_lora_rank_is_refused_before_loading(stage1_reference, tmp_path, capsys):
    ckpt = stage1_reference / STAGE1 / "checkpoints/epoch=0-step=3.ckpt"
    problems = refused(config_in(tmp_path, "debug/stage1.yaml"), "--model.policy.lora.r", "4",
                       "--ckpt_path", str(ckpt), capsys=capsys)
    assert problems == [
        f"--ckpt_path {ckpt} was saved by another run; refusing to resume:",
        "lora r (model.policy.lora.r (or the adapter's r)): checkpoint 8, config 4",
        "resume with the config that wrote it, or start afresh without --ckpt_path",
    ]


def test_checkpoint_from_another_base_model_is_refused(stage1_reference, tmp_path, capsys):
    ckpt = stage1_reference / STAGE1 / "checkpoints/last.ckpt"
    problems = refused(config_in(tmp_path, "debug/stage1.yaml"), "--model.policy.model", "tiny:qwen2",
                       "--ckpt_path", str(ckpt), capsys=capsys)
    assert problems[1] == "base model (model.policy.model): checkpoint 'tiny:llama', config 'tiny:qwen2'"


def test_stage1_checkpoint_with_the_stage2_config_is_refused_saying_how_to_start_stage2(stage1_reference, tmp_path,
                                                                                         capsys):
    shutil.copytree(stage1_reference / STAGE1, tmp_path / STAGE1)
    ckpt = tmp_path / STAGE1 / "checkpoints/last.ckpt"
    problems = refused(config_in(tmp_path, "debug/stage2.yaml"), "--ckpt_path", str(ckpt), capsys=capsys)
    assert problems[1:] == [
        "rewards (model.rewards): checkpoint ['Accuracy', 'LengthBand'], config ['Accuracy', 'BudgetGaussian']",
        "budget targets (trainer.callbacks (BudgetTargets)): checkpoint False, config True",
        "it is a stage-1 checkpoint and this is a stage-2 config: stage 2 starts from the stage-1 adapter "
        "(model.policy.adapter, the folder stage 1 exported), not from a stage-1 checkpoint; run it without --ckpt_path",
    ]


def test_on_load_checkpoint_refuses_other_adapter_shapes_even_without_recorded_metadata(stage1_reference):
    from lapo_lightning.module import GRPOModule
    from lapo_lightning.policy import LoraSettings, PolicyConfig

    module = GRPOModule(policy=PolicyConfig(model="tiny:llama", lora=LoraSettings(r=4, alpha=8)))
    module.configure_model()
    checkpoint = torch.load(stage1_reference / STAGE1 / "checkpoints/last.ckpt", weights_only=True)
    del checkpoint["lapo_run"]  # as a checkpoint from before the metadata existed
    with pytest.raises(CheckpointMismatchError) as err:
        module.on_load_checkpoint(checkpoint)
    first = str(err.value).splitlines()[1]
    assert first.startswith("  adapter tensor policy.base_model.model.model.layers.0.") and "lora_A" in first
    assert first.endswith(": checkpoint [8, 128], model [4, 128]"), first


# ------------------------------------------------------- corrupt or non-checkpoint files
@pytest.fixture
def folder_with_a_good_checkpoint(stage1_reference, tmp_path) -> tuple[Path, Path]:
    good = tmp_path / "epoch=0-step=3.ckpt"
    shutil.copy(stage1_reference / STAGE1 / "checkpoints/epoch=0-step=3.ckpt", good)
    return tmp_path, good


def corrupt(kind: str, good: Path, target: Path) -> None:
    data = good.read_bytes()
    if kind == "truncated":
        target.write_bytes(data[: len(data) // 2])
    elif kind == "flipped":
        offset = data.index(b"data/0") + 200  # inside the first tensor's bytes
        target.write_bytes(data[:offset] + bytes([data[offset] ^ 0xFF]) + data[offset + 1:])
    elif kind == "empty":
        target.write_bytes(b"")
    elif kind == "json":
        target.write_text('{"format": "lapo-length-table"}')
    elif kind == "plain_dict":
        torch.save({"weights": torch.zeros(2)}, target)


@pytest.mark.parametrize("kind,why", [
    ("truncated", "not a checkpoint archive (truncated, or another kind of file)"),
    ("flipped", "corrupt archive (bad data in "),
    ("empty", "empty file (0 bytes)"),
    ("json", "not a checkpoint archive (truncated, or another kind of file)"),
    ("plain_dict", "not a Lightning checkpoint (no state_dict/global_step; found ['weights'])"),
])
def test_bad_checkpoint_file_names_itself_and_the_last_good_one(folder_with_a_good_checkpoint, kind, why):
    folder, good = folder_with_a_good_checkpoint
    bad = folder / "last.ckpt"
    corrupt(kind, good, bad)
    os.utime(bad, (good.stat().st_mtime + 10,) * 2)  # the newest file, as a crashed save would be
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(bad)
    text = str(err.value)
    assert text.startswith(f"--ckpt_path {bad}: {why}") and "\n" not in text
    assert text.endswith(f"; the last good checkpoint in {folder} is {good}: resume with --ckpt_path {good}")


def test_cli_refuses_a_non_checkpoint_file_before_loading_weights(folder_with_a_good_checkpoint, tmp_path, capsys):
    folder, good = folder_with_a_good_checkpoint
    bad = folder / "adapter_model.safetensors.ckpt"
    corrupt("json", good, bad)
    problems = refused(config_in(tmp_path / "run", "debug/stage1.yaml"), "--ckpt_path", str(bad), capsys=capsys)
    assert problems == [f"--ckpt_path {bad}: not a checkpoint archive (truncated, or another kind of file); "
                        f"the last good checkpoint in {folder} is {good}: resume with --ckpt_path {good}"]
    assert not (tmp_path / "run" / STAGE1 / "adapter").exists()


def test_resume_on_other_data_or_another_step_shape_is_refused_naming_each(stage1_reference, tmp_path, capsys,
                                                                          monkeypatch):
    """Same ids, one problem's text changed: still other data. G and the cap change what a step
    means. LAPO_ALLOW_RESUME_CHANGES=1 is the explicit way to continue anyway."""
    ckpt = stage1_reference / STAGE1 / "checkpoints/epoch=0-step=3.ckpt"
    rows = [json.loads(line) for line in (ROOT / "data/debug_arithmetic.jsonl").read_text().splitlines() if line]
    rows[0]["problem"] += " Show your work."
    other = tmp_path / "other.jsonl"
    other.write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = config_in(tmp_path, "debug/stage1.yaml")
    problems = refused(config, "--data.train_file", str(other), "--model.grpo.group_size", "4",
                       "--model.generation.max_new_tokens", "24", "--ckpt_path", str(ckpt), capsys=capsys)
    assert problems[1:4] == ["group size (model.grpo.group_size): checkpoint 8, config 4",
                             "max new tokens (model.generation.max_new_tokens): checkpoint 32, config 24",
                             problems[3]]
    assert problems[3].startswith("data (data.train_file (its problems' ids, text and answers)): checkpoint '")
    assert "set LAPO_ALLOW_RESUME_CHANGES=1" in problems[-1]
    monkeypatch.setenv("LAPO_ALLOW_RESUME_CHANGES", "1")
    cli = fit(config, "--data.train_file", str(other), "--ckpt_path", str(ckpt), "--trainer.max_steps", "4",
              "--trainer.limit_val_batches", "0")
    assert cli.trainer.global_step == 4
