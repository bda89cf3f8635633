"""Side-by-side GRPO step cost: lapo-lightning vs TRL's GRPOTrainer vs the bare floor.

Each (system, workload) runs in its own subprocess, alternating systems within one
invocation, so peak resident memory is per system and nothing is shared or warm across
runs. Same model, prompts, G, problems per step, max new tokens, one optimizer update per
step, LoRA in both, KL on with the adapter-disabled reference in both.

Workloads (a random-init Llama, so lengths are controlled by construction):
  equal      EOS can never be sampled: every completion runs to max_new_tokens. The prompt is
             the paper's plain template through the character tokenizer (~460 tokens).
  varied     the same prompts; EOS is likely enough that lengths in a batch spread over >10x
             (geometric-ish).
  realistic  the shape of a real LAPO stage-2 run: the paper's prompt with the budget
             sentence, on real MATH-500 problems, through a real BPE tokenizer (SmolLM2's,
             so the model's vocabulary is its 49,152 rows): 165-167 tokens (the rows whose
             prompt has the median's most common length). Completion lengths are uniform on
             1..--realistic-cap (an EOS rate that rises with the position,
             :func:`install_uniform_stop`), as completions spread up to the cap in real runs.
             At the CPU size (hidden 256, 6 layers) the output head is 3.6x the decoder's
             weights (Qwen2.5-1.5B: 0.2x), so the per-completion-token work weighs more here.
The "floor" row is raw batched ``generate`` plus one forward/backward of the same LoRA
model over the generated batch (same micro-batches; logits only at completion positions),
with nothing else. "lapo_padded" is
ours with ``shared_prefix`` off (each prompt recomputed per completion): an ablation;
"lapo_grouped" is ours with each group's rows always in the same micro-batches (the
micro-batch order before ``plan_micro_batches`` could sort rows by length across groups).

On a GPU, ``--preset qwen2.5-1.5b`` swaps the tiny Llama for a random-init Qwen2 of
Qwen2.5-1.5B's shape (its vocabulary size too, with the project's character tokenizer
in its first rows) whose EOS probability per token is calibrated for each workload;
``--load-in-4bit`` loads it as QLoRA does (NF4, compute in ``--dtype``) through the
project's own ``PolicyConfig`` and, for TRL, the same ``BitsAndBytesConfig``.
benchmarks/gpu_check.sh runs that on the device machine.

    pip install -e ".[bench]"
    python benchmarks/trl_compare.py                  # the table in docs/performance.md
    python benchmarks/trl_compare.py --workloads realistic --realistic-cap 512
    python benchmarks/trl_compare.py --scaling        # our step time as G, B, T double
    python benchmarks/trl_compare.py --smoke          # seconds; used by the test suite
    python benchmarks/trl_compare.py --device cuda --preset qwen2.5-1.5b --load-in-4bit --dtype bfloat16
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the work tree's lapo_lightning, installed or not
sys.path.insert(0, str(Path(__file__).resolve().parent))
from workloads import WORKLOADS, BPE_TOKENIZER, PRESETS, build_models, build_preset_models  # noqa: E402  (the models every system runs on)
SYSTEMS = ("floor", "lapo", "lapo_padded", "lapo_grouped", "trl")  # the lapo_* rows are ablations of lapo
# ------------------------------------------------------------------------ orchestration
def run_one(system: str, cfg: dict, timeout: float | None = None) -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve().parent / "step_workers.py"), system, json.dumps(cfg)],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=timeout)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{system} worker failed:\n{proc.stderr[-4000:]}")
    return json.loads(lines[-1][len("RESULT "):])


class Budget:
    """Runs workers until ``seconds`` (None: no limit) are spent: a run is skipped when the
    longest run so far would not fit in what is left, and killed at the deadline. A failed
    worker is reported and the others still run (main exits non-zero after the table)."""

    def __init__(self, seconds: float | None):
        self.deadline = None if seconds is None else time.monotonic() + seconds
        self.longest = 0.0
        self.skipped: list[str] = []
        self.failed: list[str] = []

    def run(self, system: str, cfg: dict, label: str) -> dict | None:
        left = None if self.deadline is None else self.deadline - time.monotonic()
        if left is not None and left < max(self.longest, 1.0):
            self.skipped.append(label)
            return None
        start = time.monotonic()
        try:
            result = run_one(system, cfg, timeout=left)
        except subprocess.TimeoutExpired:
            self.skipped.append(label + " (killed at the deadline)")
            return None
        except RuntimeError as error:
            print(f"FAILED {label}: {error}", file=sys.stderr, flush=True)
            self.failed.append(label)
            return None
        self.longest = max(self.longest, time.monotonic() - start)
        print(f"done {label} in {time.monotonic() - start:.0f} s", file=sys.stderr, flush=True)
        return result


def summarise(result: dict, warmup: int) -> dict:
    steps = result["steps"][warmup:] or result["steps"]
    step_s = statistics.median(s["step_s"] for s in steps)
    gen_s = sum(s["gen_s"] for s in steps)
    train_s = sum(s["step_s"] - s["gen_s"] for s in steps)
    return {
        "s_per_step": step_s,
        "gen_tok_s": sum(s["gen_tokens"] for s in steps) / max(gen_s, 1e-9),
        "train_tok_s": sum(s["train_tokens"] for s in steps) / max(train_s, 1e-9),
        "gen_s": gen_s / len(steps),
        "mean_len": sum(s["gen_tokens"] for s in steps) / len(steps),
        # prompt tokens per completion token, the prompt counted once per rollout (as trained)
        "prompt_ratio": sum(s["train_tokens"] - s["gen_tokens"] for s in steps) / max(sum(s["gen_tokens"] for s in steps), 1),
        "peak_rss_mb": result["peak_rss_mb"],
        "peak_gpu_mb": result.get("peak_gpu_mb"),
    }


def table(rows: list[dict]) -> str:
    gpu = any(r.get("peak_gpu_mb") is not None for r in rows)  # the column only where CUDA ran
    lines = ["| workload | system | s/step | gen s/step | gen tok/s | train tok/s | tokens/step | prompt/completion "
             "| peak RSS MB " + ("| peak GPU MB " if gpu else "") + "| lapo/TRL speed |",
             "|---|---|---|---|---|---|---|---|---|" + "---|" * (1 + gpu)]
    for r in rows:
        gpu_cell = f"{r['peak_gpu_mb'] or 0:.0f} | " if gpu else ""
        lines.append(f"| {r['workload']} | {r['system']} | {r['s_per_step']:.2f} | {r['gen_s']:.2f} | "
                     f"{r['gen_tok_s']:.0f} | {r['train_tok_s']:.0f} | {r['mean_len']:.0f} | {r['prompt_ratio']:.2f} | "
                     f"{r['peak_rss_mb']:.0f} | {gpu_cell}{r.get('speedup', '')} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--problems", type=int, default=4, help="problems per step (B)")
    parser.add_argument("--group", type=int, default=8, help="completions per problem (G)")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--micro", type=int, default=8, help="rollouts per forward/backward")
    parser.add_argument("--hidden", type=int, default=256, help="tiny Llama's width (ignored with --preset)")
    parser.add_argument("--layers", type=int, default=6, help="tiny Llama's depth (ignored with --preset)")
    parser.add_argument("--preset", choices=sorted(PRESETS), help="a random-init Qwen2 of this shape instead")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                        help="unquantized weights, and the 4-bit layers' compute")
    parser.add_argument("--load-in-4bit", action="store_true", help="NF4 base (QLoRA) in every system")
    parser.add_argument("--budget-s", type=float, help="stop starting runs when this many seconds are spent")
    parser.add_argument("--steps", type=int, default=4, help="measured steps (median)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--kl", type=float, default=0.04)
    parser.add_argument("--checkpointing", choices=("on", "off"), default="on",
                        help="gradient checkpointing in every system (TRL's GRPO default is on)")
    parser.add_argument("--workloads", default="equal,varied",
                        help=f"comma-separated, of {', '.join(WORKLOADS)}")
    parser.add_argument("--realistic-cap", type=int, default=512,
                        help="the realistic workload's max new tokens (completions uniform up to it); "
                             "the paper's 4,096 on a GPU, 512 keeps a CPU run short")
    parser.add_argument("--bpe-tokenizer", default=BPE_TOKENIZER,
                        help="the realistic workload's tokenizer: a model_source name or a folder")
    parser.add_argument("--systems", default=",".join(SYSTEMS))
    parser.add_argument("--scaling", action="store_true", help="our step time as G, B and T double")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, one step: checks that nothing rotted")
    parser.add_argument("--out", help="also write the rows as JSON here")
    args = parser.parse_args()
    if args.smoke:
        args.problems, args.group, args.max_new_tokens, args.micro = 2, 2, 8, 2
        args.hidden, args.layers, args.steps, args.warmup, args.realistic_cap = 64, 2, 1, 0, 8
    workloads = args.workloads.split(",")
    if unknown := sorted(set(workloads) - set(WORKLOADS)):
        parser.error(f"--workloads: unknown {unknown}; choose from {', '.join(WORKLOADS)}")
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            parser.error("--device cuda: no CUDA device here")
    systems = [s for s in args.systems.split(",") if s != "trl" or _has_trl()]
    budget = Budget(args.budget_s)
    rows: list[dict] = []

    def save() -> None:  # after each workload too, so a run cut short still leaves its rows
        if args.out:
            Path(args.out).write_text(json.dumps(rows, indent=2))

    with tempfile.TemporaryDirectory() as tmp:
        if args.preset:
            models = build_preset_models(Path(tmp) / "models", args.preset, args.max_new_tokens, args.device,
                                         args.dtype, workloads, args.realistic_cap, args.bpe_tokenizer)
        else:
            models = build_models(Path(tmp) / "models", args.hidden, args.layers, workloads, args.realistic_cap,
                                  args.bpe_tokenizer)
        caps = {w: args.realistic_cap if w == "realistic" else args.max_new_tokens for w in workloads}
        base = {"B": args.problems, "G": args.group, "T": args.max_new_tokens, "micro": args.micro, "kl": args.kl,
                "total_steps": args.steps + args.warmup, "tmp": tmp,
                "checkpointing": args.checkpointing == "on", "device": args.device, "dtype": args.dtype,
                "load_in_4bit": args.load_in_4bit}
        if args.scaling:
            variants = {"base": {}, "2x G": {"G": 2 * args.group}, "2x B": {"B": 2 * args.problems},
                        "2x T": {"T": 2 * args.max_new_tokens}}  # realistic: the model's schedule keeps its cap
            for name, change in variants.items():
                for workload in workloads:
                    cfg = base | {"T": caps[workload]} | change | {"model": models[workload]}
                    result = budget.run("lapo", cfg, f"{workload} {name}/lapo")
                    if result is not None:
                        rows.append({"workload": f"{workload} {name}", "system": "lapo",
                                     **summarise(result, args.warmup)})
                save()
        else:
            for workload in workloads:
                cfg = base | {"model": models[workload], "T": caps[workload]}
                results = {s: budget.run(s, cfg, f"{workload}/{s}") for s in systems}  # alternating
                by_system = {s: summarise(r, args.warmup) for s, r in results.items() if r is not None}
                for system, summary in by_system.items():
                    row = {"workload": workload, "system": system, **summary}
                    if system.startswith("lapo") and "trl" in by_system:
                        row["speedup"] = f"{by_system['trl']['s_per_step'] / summary['s_per_step']:.2f}x"
                    rows.append(row)
                save()
    model = (f"{args.preset} (random Qwen2)" if args.preset else f"llama h{args.hidden} l{args.layers}")
    if args.device != "cpu" or args.load_in_4bit or args.dtype != "float32":
        model += f" {'nf4 + ' if args.load_in_4bit else ''}{args.dtype} on {args.device}"
    realistic = f" (realistic: {args.realistic_cap})" if "realistic" in workloads else ""
    print(f"B={args.problems} G={args.group} T={args.max_new_tokens}{realistic} micro={args.micro} "
          f"model={model} kl={args.kl} checkpointing={args.checkpointing} "
          f"steps={args.steps} (+{args.warmup} warm-up)")
    print(table(rows))
    if budget.skipped:
        print(f"not run, --budget-s {args.budget_s:g} spent: " + ", ".join(budget.skipped))
    save()
    if budget.failed:
        sys.exit("failed (stderr above): " + ", ".join(budget.failed))


def _has_trl() -> bool:
    import importlib.util

    return importlib.util.find_spec("trl") is not None


if __name__ == "__main__":
    main()
