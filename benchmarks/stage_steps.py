"""Time a LAPO stage-1 step and a stage-2 step through the project's own module and callbacks.

What a user's first steps on a GPU cost, measured the way ``lapo fit`` runs them: a
``GRPOModule`` in a Lightning ``Trainer`` with the stage configs' settings (LoRA r 64 on all
linear layers, G 8, KL 1e-4 against the adapter-disabled base, micro-batches of 4,
gradient checkpointing, token-mean loss):

- **stage 1**: rewards ``Accuracy`` + ``LengthBand`` (0.7, P30-P70), the plain prompt,
  ``LengthStatsCollector`` writing the length table;
- **stage 2**: rewards ``Accuracy`` + ``BudgetGaussian`` (0.8, sigma 120), the plain prompt
  with the budget sentence after ``<think>`` (placement "think"), ``BudgetTargets`` reading
  stage 1's table (a random model solves nothing, so every problem states the fallback
  budget, the cap: the sentence is in every prompt, which the table's "budget" column checks).

The model is benchmarks/workloads.py's: a random-init Qwen2 of ``--preset``'s shape whose
EOS rate makes completion lengths vary (its "varied" workload: mean ~T/4), or a folder given
with ``--model``. Per stage it prints seconds per step (median of the measured steps; stage 1
first runs ``--warmup`` steps, stage 2 runs in the same, warm, process), generation seconds
and tokens/s, generated tokens per step, the longest prompt, the budget stated, and peak
memory: GPU (``torch.cuda.max_memory_allocated``, reset before each stage) and the process's
peak RSS (never reset: it covers everything before it too), beside the start-up estimate
``lapo fit`` prints for the same settings (its worst case: every completion at the cap, so
with varied lengths the measured peak should come out below it).

    python benchmarks/stage_steps.py --device cuda --preset qwen2.5-1.5b --load-in-4bit --dtype bfloat16
    python benchmarks/stage_steps.py --preset qwen2-tiny --max-new-tokens 16 --group 4   # CPU, seconds
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

COLUMNS = ("stage", "micro", "rows/call", "s/step", "gen s/step", "gen tok/s", "tokens/step", "prompt tokens",
           "budget stated", "estimate MB", "peak GPU MB", "reserved MB", "peak RSS MB")


def stage_module(stage: int, args, model: str):
    from lapo_lightning import GenerationConfig, GRPOConfig, GRPOModule, OptimConfig
    from lapo_lightning.policy import LoraSettings, PolicyConfig
    from lapo_lightning.prompts import PlainPrompt
    from lapo_lightning.rewards import Accuracy, BudgetGaussian, LengthBand
    from lapo_lightning.verify import ContainsAnswer

    rewards = [Accuracy(), LengthBand(weight=0.7, low_pct=30, high_pct=70, decay=100) if stage == 1
               else BudgetGaussian(weight=0.8, sigma=120)]
    return GRPOModule(
        policy=PolicyConfig(model=model, dtype=args.dtype, load_in_4bit=args.load_in_4bit,
                            bnb_compute_dtype=args.dtype, lora=LoraSettings(r=args.lora_r, alpha=2 * args.lora_r),
                            gradient_checkpointing=True),
        rewards=rewards,
        grpo=GRPOConfig(group_size=args.group, kl_coef=1e-4, micro_batch_size=args.micro, token_aggregation="token_mean"),
        generation=GenerationConfig(max_new_tokens=args.max_new_tokens, temperature=1.0,
                                    max_rollouts_per_call=args.rollouts_per_call),
        optim=OptimConfig(lr=2e-5),
        prompt=PlainPrompt(placement="think"),  # stage 1 has no budgets: the stage-1 text
        verifier=ContainsAnswer(),  # a random model's text: no math-verify timeouts in the timing
    )


def run_stage(stage: int, args, model: str, tmp: Path) -> dict:
    import lightning.pytorch as pl
    import torch

    from lapo_lightning import LapoDataModule
    from lapo_lightning.callbacks import BudgetTargets, LengthStatsCollector
    from lapo_lightning.prompts import parse_budget

    module = stage_module(stage, args, model)
    timings: list[dict] = []
    sample = module.sample

    def timed_sample(*a, **k):
        start = time.perf_counter()
        rollouts = sample(*a, **k)
        sync()
        prompt = module.tokenizer.decode(rollouts.prompt_ids[0][rollouts.prompt_mask[0]])
        timings.append({"gen_s": time.perf_counter() - start, "gen_tokens": int(rollouts.lengths.sum()),
                        "prompt_tokens": int(rollouts.prompt_mask.sum(1).max()),
                        "budget": parse_budget(prompt)})
        peak = f", peak GPU {torch.cuda.max_memory_allocated() / 2**20:.0f} MB" if torch.cuda.is_available() else ""
        print(f"stage {stage}: generated {timings[-1]['gen_tokens']} tokens in {timings[-1]['gen_s']:.1f} s{peak}",
              file=sys.stderr, flush=True)  # a run cut short by its time limit still shows how far it got
        return rollouts

    module.sample = timed_sample

    class StepTimer(pl.Callback):
        def on_train_batch_start(self, *a):
            sync()
            self.start = time.perf_counter()

        def on_train_batch_end(self, *a):
            sync()
            timings[-1]["step_s"] = time.perf_counter() - self.start

    table = tmp / "length_table.json"
    stats = (LengthStatsCollector(path=str(table)) if stage == 1
             else BudgetTargets(table=str(table), path=str(tmp / "length_table_refined.json")))
    if torch.cuda.is_available():
        torch.cuda.empty_cache()  # the reserved peak counts this stage's blocks, not the model build's cache
        torch.cuda.reset_peak_memory_stats()
    trainer = pl.Trainer(accelerator="gpu" if args.device == "cuda" else "cpu", devices=1,
                         max_steps=(args.warmup if stage == 1 else 0) + args.steps, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(tmp),
                         callbacks=[stats, StepTimer()])
    import lapo_lightning.module as module_file

    original, seen = module_file.check_before_loading, {}

    def recording(module, datamodule):  # keep the start-up estimate for the table
        seen["estimate"] = original(module, datamodule)
        return seen["estimate"]

    module_file.check_before_loading = recording
    try:
        trainer.fit(module, LapoDataModule(str(tmp / "problems.jsonl"), problems_per_step=args.problems, seed=0))
    finally:
        module_file.check_before_loading = original
    warmup = args.warmup if stage == 1 else 0
    measured = timings[warmup:] or timings
    gen_s = sum(t["gen_s"] for t in measured)
    row = {
        "stage": f"stage{stage}",
        "micro": module.grpo.micro_batch_size,  # `auto` resolved at start-up
        "rows/call": module.generation.max_rollouts_per_call or args.problems * args.group,
        "s/step": statistics.median(t["step_s"] for t in measured),
        "gen s/step": gen_s / len(measured),
        "gen tok/s": sum(t["gen_tokens"] for t in measured) / max(gen_s, 1e-9),
        "tokens/step": sum(t["gen_tokens"] for t in measured) / len(measured),
        "prompt tokens": max(t["prompt_tokens"] for t in measured),
        "budget stated": measured[0]["budget"],
        "estimate MB": seen["estimate"].peak_bytes / 2**20 if seen.get("estimate") else None,
        "peak GPU MB": torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None,
        "reserved MB": torch.cuda.max_memory_reserved() / 2**20 if torch.cuda.is_available() else None,
        "peak RSS MB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    del trainer, module
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return row


def sync() -> None:
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


FORMATS = {"s/step": "{:.2f}", "gen s/step": "{:.2f}", "gen tok/s": "{:.0f}", "tokens/step": "{:.0f}",
           "estimate MB": "{:.0f}", "peak GPU MB": "{:.0f}", "reserved MB": "{:.0f}", "peak RSS MB": "{:.0f}"}


def table(rows: list[dict]) -> str:
    def cell(column: str, value) -> str:
        if value is None:
            return "none" if column == "budget stated" else "n/a"
        return FORMATS.get(column, "{}").format(value)

    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(cell(c, row[c]) for c in COLUMNS) + " |" for row in rows]
    return "\n".join(lines)


def size(text: str) -> int | str:
    return text if text == "auto" else int(text)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="qwen2.5-1.5b", help="workloads.PRESETS shape of the random Qwen2")
    parser.add_argument("--model", help="a model folder instead of building the preset")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    parser.add_argument("--load-in-4bit", action="store_true", help="NF4 base, compute in --dtype (QLoRA)")
    parser.add_argument("--problems", type=int, default=2, help="problems per step (B)")
    parser.add_argument("--group", type=int, default=8, help="completions per problem (G)")
    parser.add_argument("--max-new-tokens", type=int, default=1024)
    parser.add_argument("--micro", type=size, default=4, help="rollouts per forward/backward, or auto")
    parser.add_argument("--rollouts-per-call", type=size, help="rows per generate call, or auto (default: all)")
    parser.add_argument("--device-memory", type=float, metavar="GB",
                        help="CUDA only: cap this process at GB (1e9 bytes), as on a card that size: the allocator "
                             "refuses more, and `auto` sizes and the start-up check see the cap")
    parser.add_argument("--lora-r", type=int, default=64)
    parser.add_argument("--steps", type=int, default=1, help="measured steps per stage")
    parser.add_argument("--warmup", type=int, default=1,
                        help="stage-1 steps run before measuring (CUDA start-up); stage 2 runs warm, in the same process")
    parser.add_argument("--budget-s", type=float, help="skip stage 2 when stage 1 took longer than what is left")
    parser.add_argument("--out", help="also write the rows as JSON here")
    args = parser.parse_args(argv)
    start = time.monotonic()
    import torch

    if args.device == "cuda":
        if not torch.cuda.is_available():
            parser.error("--device cuda: no CUDA device here")
        if args.device_memory:
            total = torch.cuda.get_device_properties(0).total_memory
            if args.device_memory * 1e9 > total:
                parser.error(f"--device-memory {args.device_memory:g}: the device has {total / 1e9:.1f} GB")
            torch.cuda.set_per_process_memory_fraction(args.device_memory * 1e9 / total)
    elif args.device_memory:
        parser.error("--device-memory caps a CUDA device; on the CPU it has nothing to cap")
    rows: list[dict] = []
    failed = False
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = args.model
        if model is None:
            from workloads import build_preset_models

            model = build_preset_models(tmp / "models", args.preset, args.max_new_tokens, args.device, args.dtype,
                                        ["varied"])["varied"]
        from workloads import problems

        n = args.problems * (args.warmup + args.steps)  # each problem once: stage 1's table covers them all
        (tmp / "problems.jsonl").write_text("".join(json.dumps(r) + "\n" for r in problems(n)))
        for stage in (1, 2):
            stage_start = time.monotonic()
            try:
                rows.append(run_stage(stage, args, model, tmp))
            except torch.cuda.OutOfMemoryError as err:  # the finding itself under --device-memory: say so, stop
                print(f"stage {stage}: out of memory{f' under the {args.device_memory:g} GB cap' if args.device_memory else ''}"
                      f" (peak allocated {torch.cuda.max_memory_allocated() / 2**20:.0f} MB): {str(err).splitlines()[0]}",
                      flush=True)
                failed = True
                break
            print(f"stage {stage} done in {time.monotonic() - stage_start:.0f} s", file=sys.stderr, flush=True)
            left = None if args.budget_s is None else args.budget_s - (time.monotonic() - start)
            if stage == 1 and left is not None and left < time.monotonic() - stage_start:
                print(f"stage 2 not run: --budget-s {args.budget_s:g} would be exceeded", flush=True)
                break
    model_name = args.model or f"{args.preset} (random Qwen2)"
    print(f"stage steps: model={model_name}{' nf4 +' if args.load_in_4bit else ''} {args.dtype} on {args.device} "
          f"B={args.problems} G={args.group} T={args.max_new_tokens} micro={args.micro} LoRA r={args.lora_r} "
          f"{f'capped at {args.device_memory:g} GB ' if args.device_memory else ''}"
          f"steps={args.steps} per stage (+{args.warmup} warm-up in stage 1)")
    print(table(rows))
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=2))
    if failed:
        sys.exit(1)
    return rows


if __name__ == "__main__":
    main()
