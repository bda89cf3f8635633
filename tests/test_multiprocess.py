"""Two processes on CPU (Lightning's own DDP strategy, gloo): the same run as one process.

Each run is a real ``python cli.py fit`` subprocess; Lightning's launcher starts the second
rank by re-running the command. Run: pytest tests/test_multiprocess.py -q (about two minutes).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from clitools import ROOT, config_in
from lapo_lightning.length_table import LengthTable
from lapo_lightning.safety.run_lock import LOCK_NAME
from lapo_lightning.models.tiny import resolve_model

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


def with_plugins(tmp_path: Path, name: str, *callbacks: str, sampler: str | None = None) -> Path:
    """configs/<name> in tmp_path, plus extra callbacks (YAML flow mappings) and a sampler."""
    extra = "".join(f"    - {c}\n" for c in callbacks)
    replace = {"    - class_path: TrainingHealthMonitor\n": "    - class_path: TrainingHealthMonitor\n" + extra}
    if sampler:
        replace["  reference:\n"] = f"  sampler: {{class_path: {sampler}}}\n  reference:\n"
    return config_in(tmp_path, name, **replace)


def replay_run(folder: Path, name: str, processes: int, *extra: str, steps: int = 1) -> dict:
    """One run of configs/<name> on replayed rollouts: 4 problems per step over 1 or 2 processes.
    Returns the gradient of the first optimizer step, or {step: gradient} of the first ``steps``."""
    grad = folder / "grad.pt"
    recorder = f"{{class_path: ddp_plugins.GradRecorder, init_args: {{path: {grad}, steps: {steps}}}}}"
    config = with_plugins(folder, name, recorder, sampler="ddp_plugins.ReplaySampler")
    devices = DDP if processes == 2 else ()
    # No clipping: a gradient off by a constant factor must show.
    lapo_fit(config, *devices, "--data.problems_per_step", str(4 // processes),
             "--model.grpo.max_grad_norm", "1.0e9", *extra)
    grads = torch.load(grad)
    return grads[0] if steps == 1 else grads


def assert_same_gradient(one: dict, two: dict) -> None:
    assert one.keys() == two.keys() and one
    assert any(g.abs().sum() > 0 for g in one.values()), "the replayed rollouts must give a gradient"
    for key, g in one.items():
        torch.testing.assert_close(two[key], g, rtol=1e-4, atol=1e-7, msg=key)


@pytest.fixture(scope="module")
def replayed_stage1(tmp_path_factory) -> dict:
    """Stage 1 (token_mean) run by one process and by two: {processes: (folder, first gradient)}."""
    resolve_model("tiny:llama")
    runs = {}
    for processes in (1, 2):
        folder = tmp_path_factory.mktemp(f"stage1_x{processes}")
        runs[processes] = folder, replay_run(folder, "debug/stage1.yaml", processes)
    return runs


def test_token_mean_two_processes_with_half_the_problems_give_the_one_process_gradient(replayed_stage1):
    assert_same_gradient(replayed_stage1[1][1], replayed_stage1[2][1])


def test_constant_two_processes_with_half_the_problems_give_the_one_process_gradient(tmp_path):
    one, two = (replay_run(tmp_path / f"x{n}", "debug/stage1.yaml", n, "--trainer.max_steps", "1",
                           "--model.grpo.token_aggregation", "constant") for n in (1, 2))
    assert_same_gradient(one, two)


def test_two_processes_split_each_generation_into_the_one_process_mini_batches(tmp_path):
    """steps_per_generation 2: a generation of 8 problems (4 per process), dealt into 2
    mini-batches by problem, not by process: both optimizer steps have the one-process
    gradient (the second's importance ratio is no longer 1)."""
    one, two = (replay_run(tmp_path / f"x{n}", "debug/stage1.yaml", n, "--trainer.max_steps", "2",
                           "--model.grpo.steps_per_generation", "2", steps=2) for n in (1, 2))
    assert sorted(one) == sorted(two) == [0, 1]
    for step in (0, 1):
        assert_same_gradient(one[step], two[step])
    assert any(not torch.allclose(one[0][k], one[1][k]) for k in one[0])  # two different mini-batches


def test_two_processes_write_the_one_process_length_table(replayed_stage1):
    one, two = (LengthTable.load(replayed_stage1[n][0] / "runs/debug_stage1/length_table.json") for n in (1, 2))
    assert len(one.entries) == 24 and one.entries == two.entries  # every problem once, across processes


def test_two_process_stage2_refines_targets_from_every_process(replayed_stage1, tmp_path):
    refined = {}
    for processes in (1, 2):
        folder = tmp_path / f"x{processes}"
        shutil.copytree(replayed_stage1[1][0] / "runs/debug_stage1", folder / "runs/debug_stage1")
        replay_run(folder, "debug/stage2.yaml", processes)
        refined[processes] = LengthTable.load(folder / "runs/debug_stage2/length_table_refined.json")
    assert refined[1].entries == refined[2].entries
    assert refined[1].metadata["targets_shrunk"] + refined[1].metadata["newly_solved"] > 0, "Eq. 8 must act"
    assert refined[2].metadata["targets_shrunk"] == refined[1].metadata["targets_shrunk"]


def test_two_process_stage1_killed_and_resumed_writes_the_uninterrupted_table(tmp_path):
    full_dir, part_dir = tmp_path / "full", tmp_path / "part"
    # 24 problems, 2 processes x 2 problems per step: 6 steps = every problem once.
    args = (*DDP, "--data.problems_per_step", "2")
    lapo_fit(config_in(full_dir, "debug/stage1.yaml"), *args)
    uninterrupted = LengthTable.load(full_dir / "runs/debug_stage1/length_table.json")

    killed = lapo_fit(with_plugins(part_dir, "debug/stage1.yaml", "{class_path: ddp_plugins.KillRunAt, init_args: {step: 4}}"),
                      *args, check=False)
    assert killed.returncode == -9, killed.stderr[-2000:]
    checkpoints = part_dir / "runs/debug_stage1/checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir() if p.name != LOCK_NAME) == ["epoch=0-step=3.ckpt", "last.ckpt"]
    lapo_fit(config_in(part_dir, "debug/stage1.yaml"), *args, "--ckpt_path", str(checkpoints / "epoch=0-step=3.ckpt"))
    resumed = LengthTable.load(part_dir / "runs/debug_stage1/length_table.json")

    assert len(uninterrupted.entries) == 24  # every problem once, across both processes
    assert resumed.entries == uninterrupted.entries
    assert resumed.metadata["step"] == uninterrupted.metadata["step"] == 6
