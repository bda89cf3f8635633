"""End-to-end runs of ``lapo fit`` on the debug configs, resume, and start-up errors.

Run: pytest tests/test_cli.py -q   (about a minute: a few short CPU fits)
"""

from __future__ import annotations

import csv
import logging
import subprocess
import sys
import warnings

import pytest
import torch
from safetensors.torch import load_file

from clitools import ROOT, config_in, fit
from lapo_lightning.length_table import LengthTable

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def in_repo(monkeypatch):
    monkeypatch.chdir(ROOT)  # configs name data/... relative to the checkout


def test_debug_fit_trains_lora_logs_metrics_and_exports(tmp_path):
    from lightning.pytorch.callbacks import ModelSummary

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        cli = fit(config_in(tmp_path, "debug/grpo.yaml"))
    log_dir = cli.trainer.log_dir
    assert cli.trainer.global_step == 4
    # In-process args= while sys.argv holds pytest's (as in `lapo demo`) is how the CLI is meant to run.
    assert not [w for w in seen if "args parameter" in str(w.message)]
    # Lightning's summary (FLOPs 0 columns) is replaced by the one-line parameter summary.
    assert [type(c).__name__ for c in cli.trainer.callbacks if isinstance(c, ModelSummary)] == ["ParameterSummary"]

    adapter = load_file(f"{log_dir}/adapter/adapter_model.safetensors")
    lora_b = [t for name, t in adapter.items() if "lora_B" in name]
    assert lora_b and any(t.abs().sum() > 0 for t in lora_b), "LoRA B starts at 0: training must move it"

    with open(f"{log_dir}/metrics.csv") as f:
        rows = list(csv.DictReader(f))
    columns = set(rows[0])
    for key in ("reward/total", "reward/accuracy", "reward/has_digit", "accuracy", "length/mean",
                "length/truncation_rate", "adv/frac_zero_std", "loss/kl", "loss/policy", "train/clip_frac",
                "perf/gen_tokens_per_s", "perf/train_tokens_per_s", "perf/step_time_s", "val/accuracy",
                "verify/unclosed_think_rate", "train/skipped_zero_advantage"):
        assert key in columns, key
    unclosed = [float(r["verify/unclosed_think_rate"]) for r in rows if r.get("verify/unclosed_think_rate")]
    assert unclosed and all(0.0 <= u <= 1.0 for u in unclosed)
    kl = [float(r["loss/kl"]) for r in rows if r.get("loss/kl")]
    assert kl[0] == 0.0 and max(kl) > 0, "policy starts at the reference and drifts from it"
    assert (tmp_path / "runs/debug_grpo/version_0/samples.jsonl").exists() or any(
        p.name == "samples.jsonl" for p in (tmp_path / "runs").rglob("*"))


def test_steps_with_nothing_to_learn_skip_the_backward_and_still_count(tmp_path):
    # KL off and rewards no random model can earn (it never closes the prompt's <think>): every advantage is 0.
    config = config_in(tmp_path, "debug/grpo.yaml", **{"kl_coef: 1.0e-3": "kl_coef: 0.0", 'pattern: "[0-9]"': 'pattern: "x{99}"'})
    cli = fit(config, "--model.reference", "NoReference", "--trainer.max_steps", "2", "--trainer.limit_val_batches", "0")
    assert cli.trainer.global_step == 2  # skipped updates still count as optimizer steps
    with open(f"{cli.trainer.log_dir}/metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("train/skipped_zero_advantage")]
    assert [float(r["train/skipped_zero_advantage"]) for r in rows] == [1.0, 1.0]
    assert [float(r["adv/frac_zero_std"]) for r in rows] == [1.0, 1.0]


def test_checkpoint_holds_only_trainable_tensors(tmp_path):
    cli = fit(config_in(tmp_path, "debug/stage1.yaml"), "--trainer.max_steps", "3")
    ckpt = torch.load(tmp_path / "runs/debug_stage1/checkpoints/epoch=0-step=3.ckpt", weights_only=False)
    names = list(ckpt["state_dict"])
    assert names and all("lora_" in n for n in names)
    assert any("LengthStatsCollector" in key for key in ckpt["callbacks"])
    assert cli.trainer.global_step == 3


def test_stage1_resume_gives_the_same_table_as_an_uninterrupted_run(tmp_path):
    full_dir, part_dir = tmp_path / "full", tmp_path / "part"
    fit(config_in(full_dir, "debug/stage1.yaml"))
    uninterrupted = LengthTable.load(full_dir / "runs/debug_stage1/length_table.json")

    fit(config_in(part_dir, "debug/stage1.yaml"), "--trainer.max_steps", "3")
    ckpt = part_dir / "runs/debug_stage1/checkpoints/epoch=0-step=3.ckpt"
    fit(config_in(part_dir, "debug/stage1.yaml"), "--ckpt_path", str(ckpt))
    resumed = LengthTable.load(part_dir / "runs/debug_stage1/length_table.json")

    assert uninterrupted.entries == resumed.entries
    assert len(resumed.entries) == 24  # every training problem was sampled once
    assert resumed.metadata["step"] == uninterrupted.metadata["step"] == 6


def test_library_future_warnings_and_lightning_tips_are_silenced(caplog):
    from lightning.pytorch.utilities import rank_zero_info

    from lapo_lightning.cli.main import quiet

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        quiet()
        for module in ("transformers.modeling_utils", "lightning.pytorch.utilities._pytree", "lapo_lightning.module"):
            warnings.warn_explicit(f"deprecated in {module}", FutureWarning, "x.py", 1, module=module)
    assert [str(w.message) for w in seen] == ["deprecated in lapo_lightning.module"]  # ours stays visible
    caplog.set_level(logging.INFO)
    rank_zero_info("💡 Tip: For seamless cloud logging, try installing litlogger")
    rank_zero_info("samples at step 0:")
    assert "litlogger" not in caplog.text and "samples at step 0:" in caplog.text


def test_parameter_summary_has_no_flops(caplog):
    from lapo_lightning.callbacks.summary import ParameterSummary

    caplog.set_level(logging.INFO)
    data = [(" ", ["0"]), ("Name", ["policy"]), ("Type", ["PeftModelForCausalLM"]), ("Params", ["124 K"]),
            ("Mode", ["train"]), ("FLOPs", ["0"])]
    ParameterSummary.summarize(data, 124_000, 16_400, 0.496, {"train": 175, "eval": 0}, total_flops=0)
    assert "model: policy (PeftModelForCausalLM, 124 K); 16.4 K of 124 K parameters trainable" in caplog.text
    assert "FLOPs" not in caplog.text


@pytest.mark.parametrize(("threads", "cores", "load", "hinted"), [
    (2, 2, 4.0, "already busy (load average 4.0)"),  # the 2-core machine with a benchmark beside it
    (32, 2, 0.0, "only 2 cores are available"),  # a container's CPU quota, or taskset
    (8, 8, 0.5, None),  # an idle laptop: the default is fine
    (1, 2, 9.0, None),  # already one thread
])
def test_cpu_thread_hint(threads, cores, load, hinted):
    from lapo_lightning.cli.setup import available_cores, cpu_thread_hint

    hint = cpu_thread_hint(threads, cores, load)
    assert hint is None if hinted is None else (hinted in hint and "OMP_NUM_THREADS=1" in hint)
    assert available_cores() >= 1


def test_cli_shim_and_help(tmp_path):
    out = subprocess.run([sys.executable, "cli.py", "fit", "--help"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0 and "GRPOModule" in out.stdout  # the default module class
    out = subprocess.run([sys.executable, "cli.py", "fit", "--model.help", "GRPOModule"], capture_output=True,
                         text=True, cwd=ROOT)
    assert out.returncode == 0 and "--model.grpo.group_size" in out.stdout


@pytest.mark.parametrize(
    ("args", "replace", "key"),
    [
        ([], {"group_size: 4": "group_size: 1"}, "model.grpo.group_size"),
        ([], {"max_new_tokens: 24": "max_new_tokens: 0"}, "model.generation.max_new_tokens"),
        ([], {"micro_batch_size: 8": "micro_batch_size: 5"}, "model.grpo.micro_batch_size"),
        ([], {"class_path: Accuracy": "class_path: NoSuchReward"}, "NoSuchReward"),
        ([], {"train_file: data/math_train.jsonl": "train_file: data/nope.jsonl"}, "data.train_file"),
        (["--data.fields.answer", "solution_text"], {}, "solution_text"),
    ],
    ids=["group_size", "max_new_tokens", "indivisible", "unknown_plugin", "missing_file", "missing_field"],
)
def test_bad_input_fails_at_start_up_naming_the_key(tmp_path, capsys, monkeypatch, args, replace, key):
    import lapo_lightning.policy as policy

    def no_weights(*a, **k):
        raise AssertionError("weights must not load before the config is validated")

    monkeypatch.setattr(policy, "load_base_model", no_weights)
    config = config_in(tmp_path, "debug/grpo.yaml", **replace)
    with pytest.raises((SystemExit, ValueError, FileNotFoundError)) as err:
        fit(config, *args)
    message = str(err.value) + capsys.readouterr().err
    assert key in message, message[-2000:]


def test_empty_dataset_fails_naming_the_file(tmp_path, capsys):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    config = config_in(tmp_path, "debug/grpo.yaml", **{"train_file: data/math_train.jsonl": f"train_file: {empty}"})
    with pytest.raises((SystemExit, ValueError)) as err:
        fit(config)
    assert "empty.jsonl" in str(err.value) + capsys.readouterr().err


def test_unwritable_length_table_path_fails_before_training(tmp_path, monkeypatch, capsys):
    import lapo_lightning.policy as policy

    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    monkeypatch.setattr(policy, "load_base_model", lambda *a, **k: pytest.fail("weights loaded before the check"))
    config = config_in(tmp_path, "debug/stage1.yaml", **{
        f"path: {tmp_path}/runs/debug_stage1/length_table.json": f"path: {blocker}/table.json"})
    with pytest.raises(SystemExit) as exit_:
        fit(config)
    assert exit_.value.code == 2
    assert f"trainer.callbacks[0].path: cannot write the length table to {blocker}/table.json" in capsys.readouterr().err


def test_lapo_table_prints_a_summary(tmp_path, capsys):
    from lapo_lightning.cli.main import main
    from lapo_lightning.length_table import LengthEntry, LengthTable

    path = tmp_path / "t.json"
    LengthTable({"a": LengthEntry(10.0, 8.0, 12.0, 3, 5, True), "b": LengthEntry(None, None, None, 0, 5, False)},
                {"model": "m"}).save(path)
    with pytest.raises(SystemExit) as exit_:
        main(["table", str(path)])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "2 problems" in out and "1 solved" in out


def test_lapo_help_lists_every_command(capsys):
    from lapo_lightning.cli.main import COMMANDS, main

    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0 and capsys.readouterr().out == COMMANDS
    for command in ("fit", "eval", "answer", "table", "demo", "compare"):
        assert f"\n  {command} " in COMMANDS
    with pytest.raises(SystemExit) as exit_:
        main([])
    assert exit_.value.code == 2
