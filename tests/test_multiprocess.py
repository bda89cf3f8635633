"""Two processes on CPU (Lightning's own DDP strategy, gloo): the same run as one process.

Each run is a real ``python cli.py fit`` subprocess; Lightning's launcher starts the second
rank by re-running the command. Run: pytest tests/test_multiprocess.py -q (about two minutes).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from clitools import ROOT, config_in
from lapo_lightning.length_table import LengthTable
from lapo_lightning.tiny import resolve_model

pytestmark = pytest.mark.slow
TESTS = Path(__file__).resolve().parent
DDP = ("--trainer.accelerator", "cpu", "--trainer.devices", "2", "--trainer.strategy", "ddp")


def lapo_fit(config: Path, *extra: str, check: bool = True) -> subprocess.CompletedProcess:
    """``python cli.py fit --config <config> [extra...]`` in its own process group (see KillRunAt)."""
    env = {**os.environ, "PYTHONPATH": str(TESTS), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "cli.py", "fit", "--config", str(config), *extra], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600, start_new_session=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"lapo fit failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return proc


@pytest.fixture(autouse=True)
def warm_tiny_model():
    # Build the debug model before any run: two ranks must not race to build it.
    resolve_model("tiny:llama")


def with_callbacks(tmp_path: Path, *callbacks: str, sampler: str | None = None) -> Path:
    """configs/debug/stage1.yaml in tmp_path, plus extra callbacks (YAML flow mappings) and a sampler."""
    extra = "".join(f"    - {c}\n" for c in callbacks)
    replace = {"    - class_path: TrainingHealthMonitor\n": "    - class_path: TrainingHealthMonitor\n" + extra}
    if sampler:
        replace["  reference:\n"] = f"  sampler: {{class_path: {sampler}}}\n  reference:\n"
    return config_in(tmp_path, "debug/stage1.yaml", **replace)


@pytest.mark.parametrize("aggregation", ["token_mean", "constant"])
def test_two_processes_with_half_the_problems_give_the_one_process_gradient(tmp_path, aggregation):
    grads = {}
    for name, per_process, devices in (("one", "4", ()), ("two", "2", DDP)):
        out = tmp_path / f"{name}.pt"
        config = with_callbacks(tmp_path / name, f"{{class_path: ddp_plugins.GradRecorder, init_args: {{path: {out}}}}}",
                                sampler="ddp_plugins.ReplaySampler")
        lapo_fit(config, *devices, "--data.problems_per_step", per_process, "--trainer.max_steps", "1",
                 "--model.grpo.token_aggregation", aggregation, "--model.grpo.max_grad_norm", "1.0e9")  # no clipping: a scale error must show
        grads[name] = torch.load(out)
    assert grads["one"].keys() == grads["two"].keys() and grads["one"]
    assert any(g.abs().sum() > 0 for g in grads["one"].values()), "the replayed rollouts must give a gradient"
    for key, g in grads["one"].items():
        torch.testing.assert_close(grads["two"][key], g, rtol=1e-4, atol=1e-7, msg=key)


def test_two_process_stage1_killed_and_resumed_writes_the_uninterrupted_table(tmp_path):
    full_dir, part_dir = tmp_path / "full", tmp_path / "part"
    # 24 problems, 2 processes x 2 problems per step: 6 steps = every problem once.
    args = (*DDP, "--data.problems_per_step", "2")
    lapo_fit(config_in(full_dir, "debug/stage1.yaml"), *args)
    uninterrupted = LengthTable.load(full_dir / "runs/debug_stage1/length_table.json")

    killed = lapo_fit(with_callbacks(part_dir, "{class_path: ddp_plugins.KillRunAt, init_args: {step: 4}}"),
                      *args, check=False)
    assert killed.returncode == -9, killed.stderr[-2000:]
    checkpoints = part_dir / "runs/debug_stage1/checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["epoch=0-step=3.ckpt"]
    lapo_fit(config_in(part_dir, "debug/stage1.yaml"), *args, "--ckpt_path", str(checkpoints / "epoch=0-step=3.ckpt"))
    resumed = LengthTable.load(part_dir / "runs/debug_stage1/length_table.json")

    assert len(uninterrupted.entries) == 24  # every problem once, across both processes
    assert resumed.entries == uninterrupted.entries
    assert resumed.metadata["step"] == uninterrupted.metadata["step"] == 6
