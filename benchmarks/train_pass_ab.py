"""A/B of the training pass on one step's rollouts: micro-batch orders, timed interleaved.

The whole-step side by side (trl_compare.py) runs each system minutes apart, so on a shared
machine a change in load moves its numbers by up to 2x. This script instead samples one
step's rollouts once (workloads.py: the model and stop schedule) and then times the
training pass of ``GRPOModule.update`` (the reference pass with KL on, and the policy
forward/backward over the micro-batches) alternately with each micro-batch order, several
times, in one process: load changes hit both alike. It prints per order the median seconds,
the tokens the shared-prefix forward runs (``micro_batch_cost``, padding included), the
distinct prompts per micro-batch, and that loss and gradients agree between the orders.

    python benchmarks/train_pass_ab.py                      # realistic: cap 512, B 2, G 8, micro 8
    python benchmarks/train_pass_ab.py --workload varied --max-new-tokens 128
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def split(order, size):
    return [order[i: i + size] for i in range(0, len(order), size)]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workload", choices=("realistic", "varied", "equal"), default="realistic")
    parser.add_argument("--max-new-tokens", type=int, default=512, help="the cap (realistic: completions uniform up to it)")
    parser.add_argument("--problems", type=int, default=2)
    parser.add_argument("--group", type=int, default=8)
    parser.add_argument("--micro", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=3, help="timed passes per order (alternating)")
    parser.add_argument("--checkpointing", choices=("on", "off"), default="on")
    args = parser.parse_args(argv)

    import torch

    import workloads as bench
    from lapo_lightning import GenerationConfig, GRPOConfig, GRPOModule
    from lapo_lightning.algo import grpo_loss
    from lapo_lightning.fast_rollout import CompactDecode
    from lapo_lightning.policy import LoraSettings, PolicyConfig, load_policy
    from lapo_lightning.reference import AdapterDisabled
    from lapo_lightning.shared_prefix import (completion_token_weight, grouped_order, micro_batch_cost,
                                              plan_micro_batches)
    from lapo_lightning.types import ProblemBatch

    with tempfile.TemporaryDirectory() as tmp:
        folder = bench.build_models(Path(tmp), args.hidden, args.layers, [args.workload], args.max_new_tokens)[args.workload]
        spec = bench.workload_spec({"model": folder})
        model, tokenizer = load_policy(PolicyConfig(model=folder, lora=LoraSettings(r=8, alpha=16),
                                                    gradient_checkpointing=args.checkpointing == "on"))
    if "stop" in spec:
        bench.install_uniform_stop(model, spec["stop"])
    gen = GenerationConfig(max_new_tokens=args.max_new_tokens)
    module = GRPOModule(grpo=GRPOConfig(group_size=args.group, kl_coef=0.04, micro_batch_size=args.micro),
                        generation=gen, reference=AdapterDisabled())
    module.policy, module.tokenizer = model, tokenizer
    module.reference.setup(model)
    rows = bench.problems(args.problems, spec)
    prompts = [bench.render(r["problem"], spec) for r in rows]
    batch = ProblemBatch([r["id"] for r in rows], [r["problem"] for r in rows], [r["answer"] for r in rows])
    torch.manual_seed(0)
    rollouts = CompactDecode().sample(model, tokenizer, prompts, batch, args.group, gen)
    model.train()
    with torch.no_grad():  # a trained-looking adapter: every path carries gradient
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.01)
    lengths, prompt_lengths = rollouts.completion_mask.sum(1), rollouts.prompt_mask.sum(1)
    group, size, weight = rollouts.group_index, args.micro, completion_token_weight(model)
    advantages = torch.linspace(-1, 1, len(rollouts))
    mask = rollouts.completion_mask
    totals = dict(total_tokens=float(mask.sum()), total_sequences=float(len(rollouts)), max_tokens=gen.max_new_tokens)
    orders = {"grouped": split(grouped_order(lengths, group), size),
              "planned": plan_micro_batches(lengths, prompt_lengths, group, size, weight)}

    def train_pass(buckets) -> tuple[float, float, list]:
        module.micro_batches = lambda r: buckets  # the reference pass uses the same order
        model.zero_grad(set_to_none=True)
        start = time.perf_counter()
        ref = module.logprobs_no_grad(rollouts, reference=True)
        loss_sum = 0.0
        for idx in buckets:
            logprobs = module.completion_logprobs(rollouts, idx)
            loss = grpo_loss(logprobs, None, ref[idx], advantages[idx], mask[idx], clip_low=0.2, clip_high=0.2,
                             kl_coef=0.04, aggregation="token_mean", **totals).loss
            loss.backward()
            loss_sum += float(loss.detach())
        seconds = time.perf_counter() - start
        return seconds, loss_sum, [p.grad.clone() for p in model.parameters() if p.grad is not None]

    times = {name: [] for name in orders}
    results = {}
    for _ in range(args.repeats):
        for name, buckets in orders.items():
            seconds, loss, grads = train_pass(buckets)
            times[name].append(seconds)
            results[name] = (loss, grads)
    (loss_a, grads_a), (loss_b, grads_b) = results.values()
    agree = abs(loss_a - loss_b) <= 1e-4 * max(abs(loss_a), 1e-6) and all(
        torch.allclose(a, b, rtol=1e-3, atol=1e-6) for a, b in zip(grads_a, grads_b))
    print(f"workload={args.workload} B={args.problems} G={args.group} micro={args.micro} cap={args.max_new_tokens} "
          f"llama h{args.hidden} l{args.layers} vocab {model.config.vocab_size} checkpointing={args.checkpointing} "
          f"prompt {int(prompt_lengths.max())} tokens, completions mean {float(lengths.float().mean()):.0f} "
          f"(min {int(lengths.min())}, max {int(lengths.max())}); completion-token weight {weight:.2f}; "
          f"repeats {args.repeats}, interleaved")
    print("| order | median s | all s | tokens run (weighted) | prompts per micro-batch |")
    print("|---|---|---|---|---|")
    summary = {}
    for name, buckets in orders.items():
        order = torch.cat(buckets)
        cost = micro_batch_cost(order, lengths, prompt_lengths, group, size, weight)
        prompts_per = [int(group[idx].unique().numel()) for idx in buckets]
        summary[name] = {"median_s": statistics.median(times[name]), "all_s": times[name], "cost": cost,
                         "prompts_per_micro_batch": prompts_per}
        print(f"| {name} | {summary[name]['median_s']:.2f} | {', '.join(f'{t:.2f}' for t in times[name])} | "
              f"{cost:.0f} | {prompts_per} |")
    ratio = summary["grouped"]["median_s"] / summary["planned"]["median_s"]
    print(f"grouped / planned: {ratio:.2f}x; loss and gradients agree: {agree}")
    summary["agree"], summary["ratio"] = agree, ratio
    print("RESULT " + json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
