"""Side-by-side GRPO step cost: lapo-lightning vs TRL's GRPOTrainer vs the bare floor.

Each (system, workload) runs in its own subprocess, alternating systems within one
invocation, so peak resident memory is per system and nothing is shared or warm across
runs. Same model, prompts, G, problems per step, max new tokens, one optimizer update per
step, LoRA in both, KL on with the adapter-disabled reference in both.

Workloads (a random-init Llama, so lengths are controlled by construction):
  equal   EOS can never be sampled: every completion runs to max_new_tokens.
  varied  EOS is likely enough that lengths in a batch spread over >10x (geometric-ish).
The "floor" row is raw batched ``generate`` plus one forward/backward of the same LoRA
model over the generated batch (same micro-batches), with nothing else.

    pip install -e ".[bench]"
    python benchmarks/trl_compare.py                  # the table in docs/performance.md
    python benchmarks/trl_compare.py --scaling        # our step time as G, B, T double
    python benchmarks/trl_compare.py --smoke          # seconds; used by the test suite
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SYSTEMS = ("floor", "lapo", "trl")
EOS_WEIGHT = {"equal": -5.0, "varied": 0.5}  # EOS logit weight on a constant feature (see build_models)


# ----------------------------------------------------------------------------- models
def build_models(root: Path, hidden: int, layers: int) -> dict[str, str]:
    """One model folder per workload: the same random Llama with a set EOS behaviour
    (``lapo_lightning.tiny.set_stop_rate``: a near-constant EOS logit; pad never sampled)."""
    from lapo_lightning.tiny import save_tiny

    return {workload: str(save_tiny(root / workload, "llama", hidden, layers, eos_weight=weight))
            for workload, weight in EOS_WEIGHT.items()}


def problems(n: int) -> list[dict]:
    rows = [json.loads(line) for line in (ROOT / "data/debug_arithmetic.jsonl").read_text().splitlines()]
    return [rows[i % len(rows)] | {"id": f"{rows[i % len(rows)]['id']}-{i}"} for i in range(n)]


def render(problem: str) -> str:
    from lapo_lightning.prompts import PlainPrompt

    return PlainPrompt().render(problem)


def correct(text: str, answer: str) -> float:
    from lapo_lightning.verify import ContainsAnswer

    return float(ContainsAnswer()([text], [answer]).correct[0])


# ----------------------------------------------------------------------------- workers
def run_lapo(cfg: dict) -> dict:
    import lightning.pytorch as pl

    from lapo_lightning import (Accuracy, ContainsAnswer, GenerationConfig, GRPOConfig, GRPOModule, LapoDataModule,
                                LoraSettings, OptimConfig, PolicyConfig)

    data = Path(cfg["tmp"]) / "problems.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in problems(cfg["B"] * cfg["total_steps"])))
    module = GRPOModule(
        policy=PolicyConfig(model=cfg["model"], lora=LoraSettings(r=8, alpha=16),
                            gradient_checkpointing=cfg["checkpointing"]),
        rewards=[Accuracy()],
        grpo=GRPOConfig(group_size=cfg["G"], kl_coef=cfg["kl"], micro_batch_size=cfg["micro"]),
        generation=GenerationConfig(max_new_tokens=cfg["T"], temperature=1.0),
        optim=OptimConfig(lr=1e-5),
        verifier=ContainsAnswer(),
    )
    timings: list[dict] = []
    sample = module.sample

    def timed_sample(*args, **kwargs):
        start = time.perf_counter()
        rollouts = sample(*args, **kwargs)
        timings.append({"gen_s": time.perf_counter() - start, "gen_tokens": int(rollouts.lengths.sum()),
                        "train_tokens": int(rollouts.prompt_mask.sum() + rollouts.completion_mask.sum())})
        return rollouts

    module.sample = timed_sample

    class StepTimer(pl.Callback):
        def on_train_batch_start(self, *args):
            self.start = time.perf_counter()

        def on_train_batch_end(self, *args):
            timings[-1]["step_s"] = time.perf_counter() - self.start

    trainer = pl.Trainer(accelerator="auto", devices=1, max_steps=cfg["total_steps"], logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         callbacks=[StepTimer()])
    trainer.fit(module, LapoDataModule(str(data), problems_per_step=cfg["B"], seed=0))
    return {"steps": timings}


def run_trl(cfg: dict) -> dict:
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoTokenizer, TrainerCallback
    from trl import GRPOConfig as TRLConfig
    from trl import GRPOTrainer

    rows = problems(cfg["B"] * cfg["total_steps"])
    dataset = Dataset.from_list([{"prompt": render(r["problem"]), "answer": r["answer"]} for r in rows])

    def accuracy(completions, answer, **kwargs):
        return [correct(c, a) for c, a in zip(completions, answer)]

    n = cfg["B"] * cfg["G"]
    args = TRLConfig(
        output_dir=str(Path(cfg["tmp"]) / "trl"), per_device_train_batch_size=cfg["micro"],
        gradient_accumulation_steps=n // cfg["micro"], num_generations=cfg["G"], max_completion_length=cfg["T"],
        learning_rate=1e-5, beta=cfg["kl"], num_iterations=1, max_steps=cfg["total_steps"], temperature=1.0,
        top_p=1.0, loss_type="dapo", logging_steps=1, report_to="none", save_strategy="no", use_cpu=True,
        bf16=False, seed=0, disable_dropout=True, shuffle_dataset=False,
        gradient_checkpointing=cfg["checkpointing"],  # TRL's GRPO default is True: set it like ours
    )
    tokenizer = AutoTokenizer.from_pretrained(cfg["model"], padding_side="left")
    timings: list[dict] = []

    class StepTimer(TrainerCallback):
        def on_step_begin(self, *a, **k):
            self.start = time.perf_counter()
            timings.append({"gen_s": 0.0, "gen_tokens": 0, "train_tokens": 0})

        def on_step_end(self, *a, **k):
            timings[-1]["step_s"] = time.perf_counter() - self.start

    trainer = GRPOTrainer(model=cfg["model"], reward_funcs=accuracy, args=args, train_dataset=dataset,
                          processing_class=tokenizer, callbacks=[StepTimer()],
                          peft_config=LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", task_type="CAUSAL_LM"))
    generate = trainer.model.generate

    def timed_generate(*a, **k):
        start = time.perf_counter()
        out = generate(*a, **k)
        prompt_len = k["input_ids"].shape[1] if "input_ids" in k else a[0].shape[1]
        completion = out[:, prompt_len:]
        ends = (completion == tokenizer.eos_token_id).int()
        lengths = (1 - (ends.cumsum(1) - ends).clamp(max=1)).sum(1)  # up to and incl. the first EOS
        prompt_tokens = int(k["attention_mask"].sum())
        timings[-1]["gen_s"] += time.perf_counter() - start
        timings[-1]["gen_tokens"] += int(lengths.sum())
        timings[-1]["train_tokens"] += int(lengths.sum()) + prompt_tokens
        return out

    trainer.model.generate = timed_generate
    trainer.train()
    return {"steps": timings}


def run_floor(cfg: dict) -> dict:
    import torch

    from lapo_lightning.policy import LoraSettings, PolicyConfig, load_policy

    model, tokenizer = load_policy(PolicyConfig(model=cfg["model"], lora=LoraSettings(r=8, alpha=16),
                                                gradient_checkpointing=cfg["checkpointing"]))
    rows = problems(cfg["B"] * cfg["total_steps"])
    timings = []
    for step in range(cfg["total_steps"]):
        batch = rows[step * cfg["B"]:(step + 1) * cfg["B"]]
        enc = tokenizer([render(r["problem"]) for r in batch], return_tensors="pt", padding=True,
                        add_special_tokens=False)
        ids, mask = (enc[k].repeat_interleave(cfg["G"], 0) for k in ("input_ids", "attention_mask"))
        start = time.perf_counter()
        model.eval()
        with torch.no_grad():
            out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=cfg["T"], do_sample=True,
                                 temperature=1.0, top_p=1.0, top_k=0, pad_token_id=tokenizer.pad_token_id,
                                 eos_token_id=tokenizer.eos_token_id)
        gen_s = time.perf_counter() - start
        model.train()
        completion = out[:, ids.shape[1]:]
        ends = (completion == tokenizer.eos_token_id).int()
        completion_mask = (ends.cumsum(1) - ends) == 0
        full_mask = torch.cat([mask.bool(), completion_mask], 1)
        for i in range(0, len(out), cfg["micro"]):  # one forward/backward, same micro-batches
            logits = model(input_ids=out[i:i + cfg["micro"]], attention_mask=full_mask[i:i + cfg["micro"]].long()).logits
            logits.float().log_softmax(-1).mean().backward()
        timings.append({"gen_s": gen_s, "step_s": time.perf_counter() - start,
                        "gen_tokens": int(completion_mask.sum()), "train_tokens": int(full_mask.sum())})
    return {"steps": timings}


def worker(system: str, cfg: dict) -> None:
    import torch

    result = {"floor": run_floor, "lapo": run_lapo, "trl": run_trl}[system](cfg)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if torch.cuda.is_available():
        result["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    print("RESULT " + json.dumps(result))


# ------------------------------------------------------------------------ orchestration
def run_one(system: str, cfg: dict) -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    proc = subprocess.run([sys.executable, __file__, "--worker", system, "--cfg", json.dumps(cfg)],
                          capture_output=True, text=True, env=env, cwd=ROOT)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{system} worker failed:\n{proc.stderr[-4000:]}")
    return json.loads(lines[-1][len("RESULT "):])


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
        "peak_rss_mb": result["peak_rss_mb"],
        "peak_gpu_mb": result.get("peak_gpu_mb"),
    }


def table(rows: list[dict]) -> str:
    lines = ["| workload | system | s/step | gen s/step | gen tok/s | train tok/s | tokens/step | peak RSS MB "
             "| lapo/TRL speed |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['workload']} | {r['system']} | {r['s_per_step']:.2f} | {r['gen_s']:.2f} | "
                     f"{r['gen_tok_s']:.0f} | {r['train_tok_s']:.0f} | {r['mean_len']:.0f} | "
                     f"{r['peak_rss_mb']:.0f} | {r.get('speedup', '')} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker", choices=SYSTEMS)
    parser.add_argument("--cfg")
    parser.add_argument("--problems", type=int, default=4, help="problems per step (B)")
    parser.add_argument("--group", type=int, default=8, help="completions per problem (G)")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--micro", type=int, default=8, help="rollouts per forward/backward")
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--steps", type=int, default=4, help="measured steps (median)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--kl", type=float, default=0.04)
    parser.add_argument("--checkpointing", choices=("on", "off"), default="on",
                        help="gradient checkpointing in every system (TRL's GRPO default is on)")
    parser.add_argument("--workloads", default="equal,varied")
    parser.add_argument("--systems", default=",".join(SYSTEMS))
    parser.add_argument("--scaling", action="store_true", help="our step time as G, B and T double")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, one step: checks that nothing rotted")
    parser.add_argument("--out", help="also write the rows as JSON here")
    args = parser.parse_args()
    if args.worker:
        return worker(args.worker, json.loads(args.cfg))
    if args.smoke:
        args.problems, args.group, args.max_new_tokens, args.micro = 2, 2, 8, 2
        args.hidden, args.layers, args.steps, args.warmup = 64, 2, 1, 0
    systems = [s for s in args.systems.split(",") if s != "trl" or _has_trl()]
    with tempfile.TemporaryDirectory() as tmp:
        models = build_models(Path(tmp) / "models", args.hidden, args.layers)
        base = {"B": args.problems, "G": args.group, "T": args.max_new_tokens, "micro": args.micro, "kl": args.kl,
                "total_steps": args.steps + args.warmup, "tmp": tmp,
                "checkpointing": args.checkpointing == "on"}
        rows = []
        if args.scaling:
            variants = {"base": {}, "2x G": {"G": 2 * args.group}, "2x B": {"B": 2 * args.problems},
                        "2x T": {"T": 2 * args.max_new_tokens}}
            for name, change in variants.items():
                for workload in args.workloads.split(","):
                    cfg = base | change | {"model": models[workload]}
                    rows.append({"workload": f"{workload} {name}", "system": "lapo",
                                 **summarise(run_one("lapo", cfg), args.warmup)})
        else:
            for workload in args.workloads.split(","):
                cfg = base | {"model": models[workload]}
                by_system = {s: summarise(run_one(s, cfg), args.warmup) for s in systems}  # alternating
                for system, summary in by_system.items():
                    row = {"workload": workload, "system": system, **summary}
                    if system == "lapo" and "trl" in by_system:
                        row["speedup"] = f"{by_system['trl']['s_per_step'] / summary['s_per_step']:.2f}x"
                    rows.append(row)
    print(f"B={args.problems} G={args.group} T={args.max_new_tokens} micro={args.micro} "
          f"model=llama h{args.hidden} l{args.layers} kl={args.kl} checkpointing={args.checkpointing} "
          f"steps={args.steps} (+{args.warmup} warm-up)")
    print(table(rows))
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=2))


def _has_trl() -> bool:
    import importlib.util

    return importlib.util.find_spec("trl") is not None


if __name__ == "__main__":
    main()
